"""The shared base class of the training methods (solo-learn style): networks, optimisers, one training step.

A method owns its networks (``self.encoder`` is the one exported to ``encoder.pt``), its optimisers and
schedulers (by name, so the loop can checkpoint them), and implements ``training_step`` on a device batch.
Optional hooks: ``on_epoch_start`` (DeepCluster's clustering), ``extra_state``/``load_extra_state``
(anything beyond parameters that a resume needs). Hyper-parameters live in a per-method ``Options``
dataclass whose fields become command-line options.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pipeline.errors import OptionError
from pipeline.options import check_fields, opt
from train import distributed as D
from train.data import Batch, Source
from train.models import build_encoder


@dataclass
class MethodOptions:
    """Options every method has; subclasses add their own and override the defaults.

    Every value is checked when the dataclass is built (ranges and choices from :func:`opt`, then ``check`` for
    rules that join several options), so the Python API refuses what the command line refuses.
    """

    lr: float = opt(0.01, "base learning rate", min=0, min_open=True)
    weight_decay: float = opt(0.0, "weight decay", min=0)

    def __post_init__(self) -> None:
        check_fields(self)
        self.check()

    def check(self) -> None:
        """Rules that join several options or that a range cannot say; raise :class:`OptionError`."""


def check_gan_size(size: int) -> None:
    """0 (automatic) or a power of two >= 8: the generators double 4 x 4 up to it."""
    if size and size & (size - 1):
        raise OptionError(f"Invalid value for '--gan-size': {size} is not 0 (automatic) or a power of two >= 8.")


@dataclass
class EpochContext:
    """What ``on_epoch_start`` may use: the data source and how the loop reads it."""

    source: Source
    epoch: int
    batch_size: int
    seed: int
    workers: int
    pin_memory: bool
    autocast: Callable[[], Any]
    progress: bool = False


class Method(nn.Module):
    name: ClassVar[str] = ""
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    default_arch: ClassVar[str] = "alexnet"
    default_epochs: ClassVar[int] = 100
    default_batch_size: ClassVar[int] = 256
    needs_labels: ClassVar[bool] = False  # True: trains on a labelled set, not on shards
    encoder_kwargs: ClassVar[dict[str, Any]] = {}  # e.g. leaky ReLU for GAN encoders

    def __init__(self, opts: MethodOptions, arch: str, num_samples: int, num_classes: int | None = None,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.opts = opts
        self.arch = arch
        self.num_samples = num_samples
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.encoder = build_encoder(arch, **self.encoder_arch_kwargs())
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.channels_last = False

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def check_options(cls, opts: MethodOptions, arch: str) -> None:
        """Rules between the options and the architecture, checked before any work; raise :class:`OptionError`."""

    def encoder_arch_kwargs(self) -> dict[str, Any]:
        return dict(self.encoder_kwargs)

    def configure(self) -> None:
        """Create optimisers and schedulers; called by the loop once the method is on its device."""
        raise NotImplementedError

    @property
    def input_size(self) -> int:
        return int(self.encoder.input_size)

    # ---- training -----------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        """One step on a device batch; returns detached scalar tensors, 'loss' among them."""
        raise NotImplementedError

    def images_per_step(self, batch: Batch) -> int:
        """Rendered patches consumed per step (for images/s)."""
        return len(batch)

    def on_epoch_start(self, ctx: EpochContext) -> dict[str, float]:
        """Called before each epoch's steps (also on resume mid-epoch); may return metrics to log."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # ---- helpers ------------------------------------------------------------------------------------------
    def prepare(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def optimizer_step(self, name: str, loss: Tensor, params: Iterable[nn.Parameter] | None = None) -> None:
        """zero_grad, backward, average gradients over ranks, step: the one place gradients are applied."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        plist = [p for g in opt.param_groups for p in g["params"]] if params is None else list(params)
        D.allreduce_grads(plist)
        opt.step()
        # Under autocast the bf16 copies of weights are cached until the autocast region ends; the loop keeps one
        # region per training step, so a second player (MonoGAN's generator, BiGAN's E/G) would otherwise run on
        # the copies made before this update. Clearing keeps the cache within a player's forwards, where it saves
        # recasting weights used several times (the critic on real, fake and interpolated images).
        torch.clear_autocast_cache()

    def epoch_end(self) -> None:
        """Advance the per-epoch learning-rate schedules."""
        for s in self.schedulers.values():
            s.step()

    def options_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self.opts, f.name) for f in fields(self.opts)}


def sgd(params, o: MethodOptions, momentum: float = 0.9, nesterov: bool = False) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=o.lr, momentum=momentum, weight_decay=o.weight_decay, nesterov=nesterov)


def constant_schedule(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)


def step_schedule(opt: torch.optim.Optimizer, milestones: list[int], gamma: float,
                  ) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=gamma)


def linear_decay_schedule(opt: torch.optim.Optimizer, constant_epochs: int, decay_epochs: int,
                          ) -> torch.optim.lr_scheduler.LRScheduler:
    """Constant for ``constant_epochs``, then linearly to 0 over ``decay_epochs`` (BiGAN's schedule)."""

    def f(epoch: int) -> float:
        if epoch < constant_epochs or decay_epochs <= 0:
            return 1.0
        return max(0.0, 1.0 - (epoch - constant_epochs) / decay_epochs)

    return torch.optim.lr_scheduler.LambdaLR(opt, f)
