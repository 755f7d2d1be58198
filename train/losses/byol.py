"""BYOL's loss (Grill et al., 2020, eq. 2): the mean squared error of L2-normalised prediction and target."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def byol_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """``||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)``, averaged over the batch; the target (the EMA network's
    projection) carries no gradient. BYOL symmetrises by adding the loss with the two views swapped (the
    method's job)."""
    p = F.normalize(prediction, dim=-1)
    z = F.normalize(target.detach(), dim=-1)
    return (2 - 2 * (p * z).sum(dim=-1)).mean()
