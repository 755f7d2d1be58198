"""Contrastive losses: SimCLR's NT-Xent and MoCo's InfoNCE against a queue of negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR's NT-Xent (Chen et al., 2020, eq. 1) over the 2N embeddings of N positive pairs ``(z1[i], z2[i])``.

    Each of the 2N embeddings is classified against the other 2N - 1 by cosine similarity / ``temperature``, its
    partner being the right answer; the loss is the mean over all 2N of them (both orders of every pair). 0.5 is
    SimCLR's temperature for CIFAR-10 (appendix B.9).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"nt_xent_loss takes two (N, D) batches of the same shape, got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    itself = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = (z @ z.t() / temperature).masked_fill(itself, float("-inf"))  # an embedding is not its own candidate
    partner = torch.cat([torch.arange(n, 2 * n, device=z.device), torch.arange(n, device=z.device)])
    return F.cross_entropy(logits, partner)


def infonce_loss(query: Tensor, key: Tensor, queue: Tensor, temperature: float = 0.2) -> Tensor:
    """MoCo's InfoNCE (He et al., 2020, eq. 1; MoCo v2's temperature 0.2, Chen et al., 2020).

    ``query`` (N, D) from the encoder, ``key`` (N, D) from the momentum encoder (its positive), ``queue`` (K, D)
    keys of earlier batches (the negatives). Queries and keys are L2-normalised here; the keys and the queue carry
    no gradient.
    """
    q = F.normalize(query, dim=1)
    k = F.normalize(key.detach(), dim=1)
    negatives = F.normalize(queue.detach(), dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    logits = torch.cat([positive, q @ negatives.t()], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


@torch.no_grad()
def enqueue(queue: Tensor, pointer: int, keys: Tensor) -> int:
    """MoCo's queue update: write ``keys`` (N, D), L2-normalised, into ``queue`` (K, D) in place from row
    ``pointer`` on (wrapping around), replacing the oldest keys; returns the next pointer.

    In place because the queue is a buffer the checkpoint saves (65,536 x 128 in MoCo v2); ``pointer`` travels
    with it.
    """
    size = queue.shape[0]
    if keys.shape[0] > size:
        raise ValueError(f"a batch of {keys.shape[0]} keys does not fit a queue of {size}")
    rows = (pointer + torch.arange(keys.shape[0])) % size
    queue[rows.to(queue.device, non_blocking=True)] = F.normalize(keys, dim=1).to(queue.dtype)
    return int((pointer + keys.shape[0]) % size)
