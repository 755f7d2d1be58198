"""Knowledge distillation's loss (Hinton et al., 2015), as the augmented-image-prior paper uses it (Asano & Saeed,
ICLR 2023): the student matches the teacher's outputs softened at a temperature T."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) x T^2, averaged over the batch (in float32)."""
    t = temperature
    log_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * (t * t)
