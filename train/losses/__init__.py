"""The self-supervised losses as pure functions of embeddings (solo-learn style): the methods are thin around them.

- :func:`nt_xent_loss` (SimCLR), :func:`infonce_loss` and :func:`enqueue` (MoCo v2): ``contrastive.py``;
- :func:`byol_loss` (BYOL's normalised MSE): ``byol.py``;
- :func:`dino_loss` and :func:`update_center` (DINO's centred, sharpened cross-entropy): ``dino.py``;
- :func:`distillation_loss` (KL between softened teacher and student outputs, x T^2): ``distill.py``.

Each is tested against a direct (loop) computation on a tiny batch in tests/train/test_losses.py.
"""

from train.losses.byol import byol_loss
from train.losses.contrastive import enqueue, infonce_loss, nt_xent_loss
from train.losses.dino import dino_loss, update_center
from train.losses.distill import distillation_loss

__all__ = ["byol_loss", "dino_loss", "distillation_loss", "enqueue", "infonce_loss", "nt_xent_loss", "update_center"]
