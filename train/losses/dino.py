"""DINO's loss (Caron et al., 2021, Algorithm 1): the cross-entropy between the teacher's centred, sharpened
distribution on the global views and the student's on every other view, and the centre's EMA update."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def dino_loss(student: Tensor, teacher: Tensor, center: Tensor, student_temperature: float = 0.1,
              teacher_temperature: float = 0.04) -> Tensor:
    """``student`` (V, N, K): the student head's outputs on V views (the global views first); ``teacher``
    (G, N, K): the teacher head's on the G global views; ``center`` (K,) or (1, K).

    The teacher's distribution is ``softmax((teacher - center) / teacher_temperature)`` (centred, then sharpened
    by a low temperature), without gradient; each teacher view is compared with every student view except the
    same view, ``-sum q log softmax(student / student_temperature)``, averaged over the batch and the V G - G
    pairs (DINO's code: ``DINOLoss.forward``). The temperatures are DINO's defaults (0.04 after warm-up).
    """
    if student.dim() != 3 or teacher.dim() != 3 or teacher.shape[0] > student.shape[0]:
        raise ValueError(f"dino_loss takes student (V, N, K) and teacher (G, N, K) outputs with G <= V, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    targets = F.softmax((teacher.detach() - center) / teacher_temperature, dim=-1)
    log_probs = F.log_softmax(student / student_temperature, dim=-1)
    # cross-entropy of every (teacher view g, student view v) pair: (G, V)
    pair_losses = -torch.einsum("gnk,vnk->gv", targets, log_probs) / student.shape[1]
    same_view = torch.eye(teacher.shape[0], student.shape[0], dtype=pair_losses.dtype, device=student.device)
    # the mean over the other pairs, without boolean indexing (which would wait for the device to count them)
    pairs = teacher.shape[0] * student.shape[0] - teacher.shape[0]
    return (pair_losses * (1 - same_view)).sum() / pairs


@torch.no_grad()
def update_center(center: Tensor, teacher: Tensor, momentum: float = 0.9) -> Tensor:
    """The new centre: ``momentum * center + (1 - momentum) * mean of the teacher outputs`` (over every view and
    sample; DINO's ``center_momentum`` 0.9). Under torchrun the caller averages the batch means across ranks
    first (pass ``teacher`` already gathered, or the mean as a (1, K) batch)."""
    batch_mean = teacher.reshape(-1, teacher.shape[-1]).mean(dim=0)
    return center * momentum + batch_mean.reshape(center.shape) * (1 - momentum)
