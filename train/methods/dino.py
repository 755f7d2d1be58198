"""DINO (Caron et al., ICCV 2021, "Emerging properties in self-supervised vision transformers"): a student matches
the centred, sharpened output distribution of an EMA teacher across multi-crop views; no negatives, no predictor.

Defaults, the paper's (section 3 and appendix; main_dino.py): AdamW, learning rate 0.0005 x batch / 256 after a
10-epoch linear warm-up, then a cosine to 1e-6, per iteration; weight decay from 0.04 to 0.4 by a cosine (biases
and norm parameters without decay); student temperature 0.1, teacher temperature warmed up linearly from 0.04 to
0.07 over 30 epochs (here per iteration); teacher EMA momentum 0.996 -> 1 by a cosine; centre momentum 0.9; the
head's last layer weight-normalised and frozen during the first epoch; multi-crop with 2 global crops and
``--local-crops`` local ones (6 here; the paper's best use 8 or 10) at 3/7 of the global size, as 96/224
(:func:`train.augment.multiview.dino_views`; rounded to the ViT's patch size; blur only from 64 px unless ``--blur
on``).
For CIFAR-sized sets the head's output is reduced from 65,536 to 4,096 dimensions (``--out-dim``, solo-learn's
CIFAR value), with DINO's 2,048 hidden units and 256-wide bottleneck.

On a ViT the head sits on the final class token; on a convolutional encoder on its globally average-pooled
output. Smaller local crops reach a ViT through interpolated position embeddings (train/models/vit.py).

Not reproduced: DINO's gradient clipping (3.0 per tensor; the loop's one optimiser step has no clipping hook) and
its freezing of the last layer by dropping the gradient (here its learning rate is 0 during the first epoch, so
AdamW's moments still see those gradients).

The student's forward takes every crop (the global ones as one batch, the local ones as another, as DINO's
MultiCropWrapper) in one call: one forward per step for DistributedDataParallel. The teacher (a frozen copy of
the encoder and head, updated after each optimiser step) sees the global crops only; the centre is a buffer of
the method, its update averaged over processes, so the checkpoint holds it with the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from common.options import opt
from train.augment.multiview import ViewSpec, dino_views
from train.data.sources import Batch
from train.losses import dino_loss, update_center
from train.methods import register_method
from train.methods.multiview_base import MultiViewMethod, MultiViewOptions, ema_update, frozen_copy
from train.methods.schedules import cosine_schedule, ema_momentum, teacher_temperature
from train.models.heads import DINOHead
from train.process import distributed as D

GLOBAL_CROPS = 2


@dataclass
class DINOOptions(MultiViewOptions):
    lr: float = opt(0.0005, "AdamW learning rate for a batch of 256 (scaled by batch x processes / 256)", min=0,
                    min_open=True)
    min_lr: float = opt(1e-6, "learning rate at the end of the cosine", min=0)
    weight_decay: float = opt(0.04, "weight decay at the start (a cosine to --weight-decay-end)", min=0)
    weight_decay_end: float = opt(0.4, "weight decay at the end of the run", min=0)
    warmup_epochs: float = opt(10.0, "epochs of linear learning-rate warm-up from 0", min=0)
    student_temperature: float = opt(0.1, "student softmax temperature", min=0, min_open=True)
    teacher_temperature: float = opt(0.04, "teacher softmax temperature at the start", min=0, min_open=True)
    teacher_temperature_end: float = opt(0.07, "teacher temperature after the warm-up", min=0, min_open=True)
    teacher_temperature_epochs: float = opt(30.0, "epochs of the teacher temperature's linear warm-up", min=0)
    teacher_momentum: float = opt(0.996, "teacher EMA momentum at the start (a cosine to 1)", min=0, max=1)
    center_momentum: float = opt(0.9, "momentum of the centre's moving average", min=0, max=1)
    out_dim: int = opt(4096, "dimensions of the head's output (the paper's 65,536 is for ImageNet)", min=1)
    head_hidden: int = opt(2048, "hidden units of the head's MLP", min=1)
    bottleneck: int = opt(256, "width of the head's bottleneck before the weight-normalised last layer", min=1)
    freeze_last_layer_epochs: float = opt(1.0, "epochs during which the last layer is not updated", min=0)
    local_crops: int = opt(6, "local crops per image (besides the 2 global ones)", min=0)
    local_size: int = opt(0, "side of the local crops in px (0: 3/7 of the input size, a multiple of the ViT's "
                             "patch)", min=8, auto=0)
    blur: str = opt("auto", "Gaussian blur (p = 1.0 / 0.1 / 0.5 on global 1, global 2 and the local crops; auto: "
                            "only for inputs of 64 px or more)", choices=("auto", "on", "off"))


@register_method
class DINO(MultiViewMethod):
    name = "dino"
    Options = DINOOptions
    summary = ("DINO (Caron et al., 2021): self-distillation of an EMA teacher's centred, sharpened outputs across "
               "2 global and N local crops; the paper's AdamW and schedules, a 4,096-wide head for CIFAR-sized sets.")
    examples = ("train dino shards/mono-b --out runs/dino-mono-b",
                "train dino shards/mono-b --out runs/dino-vit --arch vit-tiny --batch-size 64 --local-crops 8")
    small_options = {"out_dim": 32, "head_hidden": 32, "bottleneck": 16, "local_crops": 2, "warmup_epochs": 0.05,
                     "freeze_last_layer_epochs": 0.05, "teacher_temperature_epochs": 0.5}

    def __init__(self, opts: DINOOptions, arch: str, num_samples: int, num_classes=None, device="cpu"):
        super().__init__(opts, arch, num_samples, num_classes, device)
        self.head = DINOHead(self.feature_dim, opts.out_dim, opts.head_hidden, opts.bottleneck)
        self.teacher_encoder = frozen_copy(self.encoder)
        self.teacher_head = frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(1, opts.out_dim))
        patch = int(getattr(self.encoder, "patch_size", 1))
        self.local_size = opts.local_size or max(8, patch, round(self.input_size * 96 / 224 / patch) * patch)

    def make_optimizer(self) -> torch.optim.Optimizer:
        # DINO's utils.get_params_groups: no weight decay on biases and norm parameters; the last layer apart so
        # that it can be frozen at the start
        decay, no_decay, last = [], [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith("head.last_layer."):
                last.append(p)
            elif p.ndim <= 1 or name.endswith(".bias"):
                no_decay.append(p)
            else:
                decay.append(p)
        frozen = self.epochs_to_steps(self.opts.freeze_last_layer_epochs)
        return torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "decay": False},
                                  {"params": last, "frozen_until": frozen}],
                                 lr=self.opts.lr, weight_decay=self.opts.weight_decay)

    def weight_decay_now(self) -> float:
        o: DINOOptions = self.opts
        return cosine_schedule(self.steps_done, self.schedule_steps, o.weight_decay, final=o.weight_decay_end)

    def teacher_temperature_now(self) -> float:
        o: DINOOptions = self.opts
        return teacher_temperature(self.steps_done, self.epochs_to_steps(o.teacher_temperature_epochs),
                                   o.teacher_temperature, o.teacher_temperature_end)

    def view_specs(self) -> list[ViewSpec]:
        o: DINOOptions = self.opts
        return dino_views(self.input_size, o.local_crops, self.local_size,
                          blur=None if o.blur == "auto" else o.blur == "on")

    def forward(self, global_crops: Tensor, local_crops: Tensor | None = None) -> Tensor:
        out = self.head(self.features(global_crops))
        if local_crops is not None:
            out = torch.cat([out, self.head(self.features(local_crops))])
        return out

    @torch.no_grad()
    def teacher(self, global_crops: Tensor) -> Tensor:
        return self.teacher_head(self.features(global_crops, self.teacher_encoder))

    def training_step(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        o: DINOOptions = self.opts
        self.apply_schedules(len(batch))
        crops = self.views(batch.images, generator)
        n = len(batch)
        global_crops = torch.cat(crops[:GLOBAL_CROPS])
        local_crops = torch.cat(crops[GLOBAL_CROPS:]) if len(crops) > GLOBAL_CROPS else None
        student = self.replicated(global_crops, local_crops).float().reshape(len(crops), n, -1)
        teacher = self.teacher(global_crops).float().reshape(GLOBAL_CROPS, n, -1)
        temperature = self.teacher_temperature_now()
        loss = dino_loss(student, teacher, self.center, o.student_temperature, temperature)
        self.optimizer_step("main", loss)
        momentum = ema_momentum(self.steps_done, self.schedule_steps, o.teacher_momentum)
        ema_update(self.teacher_encoder, self.encoder, momentum)
        ema_update(self.teacher_head, self.head, momentum)
        batch_mean = D.all_reduce_sum(teacher.reshape(-1, teacher.shape[-1]).mean(dim=0, keepdim=True))
        self.center.copy_(update_center(self.center, batch_mean / self.world_size, o.center_momentum))
        return {"loss": loss.detach(), "teacher_temperature": torch.tensor(temperature, device=loss.device)}
