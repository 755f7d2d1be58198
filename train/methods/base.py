"""The shared base class of the training methods (solo-learn style): networks, optimisers, one training step.

A method owns its networks (``self.encoder`` is the one exported to ``encoder.pt``), its optimisers and
schedulers (by name, so the loop can checkpoint them), and implements ``training_step`` on a device batch.
Optional hooks: ``on_epoch_start`` (DeepCluster's clustering), ``extra_state``/``load_extra_state``
(anything beyond parameters that a resume needs). Hyper-parameters live in a per-method ``Options``
dataclass whose fields become command-line options.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable
from dataclasses import Field, dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pipeline.options import Bounds
from train import distributed as D
from train.data import Batch, Source
from train.errors import OptionError
from train.models import build_encoder


def opt(default: Any, help: str, *, min: float | None = None, max: float | None = None, min_open: bool = False,
        max_open: bool = False, auto: float | None = None, choices: tuple[str, ...] | None = None,
        increasing: bool = False) -> Any:
    """A dataclass field with command-line help text and its legal values, declared once: the command line gets a
    click range or choice from them and :class:`MethodOptions` refuses the same values from the Python API.

    Numbers: ``min``/``max`` (open with ``min_open``/``max_open``) and ``auto``, a value outside the range that
    means "chosen automatically". Lists of integers: every item within ``min``/``max``, and with ``increasing``
    strictly increasing. Text: one of ``choices``.
    """
    from dataclasses import field

    bounds = Bounds(min, max, min_open, max_open, auto)
    meta = {"help": help, "bounds": bounds, "choices": tuple(choices) if choices else None,
            "increasing": increasing}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def value_problem(f: Field, kind: Any, value: Any) -> str | None:
    """Why ``value`` is not legal for the option field ``f`` of type ``kind`` (None when it is)."""
    bounds: Bounds = f.metadata.get("bounds", Bounds())
    if kind is bool:
        return None if isinstance(value, bool) else f"{value!r} is not a boolean."
    if kind is str:
        choices = f.metadata.get("choices")
        if not isinstance(value, str) or (choices and value not in choices):
            return f"{value!r} is not one of {', '.join(map(repr, choices or ()))}."
        return None
    if kind is list or typing.get_origin(kind) is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                           for v in value):
            return f"{value!r} is not a list of integers."
        for item in value:
            if not bounds.contains(item):
                where = f" (in {','.join(map(str, value))})" if len(value) > 1 else ""
                return f"{item}{where} is not in the range {bounds.describe()}."
        if f.metadata.get("increasing") and any(b <= a for a, b in zip(value, value[1:], strict=False)):
            return f"{','.join(map(str, value))} is not strictly increasing."
        return None
    numeric = (int,) if kind is int else (int, float)
    if not isinstance(value, numeric) or isinstance(value, bool):
        return f"{value!r} is not {'an integer' if kind is int else 'a number'}."
    return bounds.problem(value)


@dataclass
class MethodOptions:
    """Options every method has; subclasses add their own and override the defaults.

    Every value is checked when the dataclass is built (ranges and choices from :func:`opt`, then ``check`` for
    rules that join several options), so the Python API refuses what the command line refuses.
    """

    lr: float = opt(0.01, "base learning rate", min=0, min_open=True)
    weight_decay: float = opt(0.0, "weight decay", min=0)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            problem = value_problem(f, hints.get(f.name, str), getattr(self, f.name))
            if problem:
                raise OptionError(f"Invalid value for '{flag(f.name)}': {problem}")
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
