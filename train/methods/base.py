"""The shared base class of the training methods (solo-learn style): networks, optimisers, one training step.

A method is one file: a :class:`Method` subclass that declares everything the rest of the project reads as class
attributes (name, ``Options``, ``summary``, ``examples``, ``data_kind``, default architecture / epochs / batch size,
``small_options``, ``schedule_unit``, ``gradient_sync``), owns its networks (``self.encoder`` is the one exported to
``encoder.pt``), its optimisers and schedulers (by name, so the loop can checkpoint them), and implements
``configure(ctx)`` and ``training_step`` on a device batch. Run facts (total steps and epochs, device, precision,
world size) reach it only through the :class:`RunContext` given to ``configure``. Optional hooks: ``on_epoch_start``
(DeepCluster's clustering), ``on_step_end`` (per-iteration schedules, EMA targets), ``extra_state`` /
``load_extra_state`` (anything beyond parameters and schedules that a resume needs), ``example_views`` (its augmented
views, pictured in TensorBoard). docs/architecture.md, "Method
base", describes the contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from common.errors import DataError, OptionError
from common.options import check_fields, opt
from train.data.kinds import real_set_listing
from train.data.real_sets import RealImageSource, real_set_spec
from train.data.sources import Batch, LabelledSource, ShardSource, Source
from train.data.specs import labelled_set_spec
from train.models import build_encoder
from train.process import distributed as D

# What a method trains on (its ``data_kind``): the help text of the command's DATA argument for each; {real_kinds}
# is the registered data kinds' prefixes (train.data.kinds.real_set_listing), filled when the command is built.
DATA_KINDS = {
    "rendered": "DATA is a rendered set: a folder with manifest.json and tar shards, an http(s) URL of it or of its "
                "manifest, or a webdataset URL pattern with --manifest. Or a real image set, KIND:PATH as for "
                "`probe --data` ({real_kinds}), whose train split is read (labels ignored).",
    "labelled": "DATA is a labelled set: a CIFAR-10/100 folder (cifar-10-batches-py) or an ImageFolder tree, or "
                "KIND:PATH as for `probe --data` ({real_kinds}), whose train split is read with its labels.",
}


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


@dataclass(frozen=True)
class RunContext:
    """The facts of the run a method is configured for (``Method.configure``); nothing else is set from outside."""

    total_epochs: int  # the run's --epochs (the schedules' length), also when --max-steps stops it earlier
    steps_per_epoch: int  # optimisation steps per epoch, per process
    total_steps: int  # the step the run stops at (--max-steps or --epochs, whichever comes first)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: bool = False  # bf16 autocast around each training step
    world_size: int = 1

    @classmethod
    def for_epochs(cls, epochs: int, steps_per_epoch: int = 1, device: torch.device | str = "cpu") -> RunContext:
        """A single-process fp32 run of ``epochs`` full epochs (tests, benches, notebooks)."""
        return cls(epochs, steps_per_epoch, epochs * steps_per_epoch, torch.device(device))


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
    """A training method. Subclasses declare the class attributes below and implement ``configure`` and
    ``training_step``; the registry (``@register_method``) makes them a ``train`` subcommand."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    summary: ClassVar[str] = ""  # one paragraph: the first of `train NAME --help`; up to a colon, the list entry
    examples: ClassVar[tuple[str, ...]] = ()  # command lines shown by `train NAME --help`
    data_kind: ClassVar[str] = "rendered"  # a key of DATA_KINDS: what DATA names (make_source opens it)
    default_arch: ClassVar[str] = "alexnet"
    default_epochs: ClassVar[int] = 100
    default_batch_size: ClassVar[int] = 256
    # Options for a seconds-long smoke run (arch cifar, batch 16) that still runs every code path of the method:
    # the tests (parametrised over the registry) and bench/fingerprint.py use them.
    small_options: ClassVar[dict[str, Any]] = {}
    # When the schedulers advance: after every epoch ("epoch") or after every optimisation step ("step")
    schedule_unit: ClassVar[Literal["epoch", "step"]] = "epoch"
    # How gradients are averaged over torchrun's processes. "ddp": the method is wrapped in DistributedDataParallel
    # (its all-reduce overlaps the backward pass), for a method with one optimiser stepped once per step, no double
    # backward, and every trainable parameter used by ``forward``, which its training step calls through
    # ``self.replicated``. "allreduce": gradients averaged explicitly in ``optimizer_step`` (several optimisers per
    # step, the WGAN-GP penalty's double backward).
    gradient_sync: ClassVar[Literal["ddp", "allreduce"]] = "allreduce"
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
        # the DistributedDataParallel wrapper (gradient_sync "ddp" under torchrun); set with object.__setattr__
        # so that it is not a submodule: it holds this module
        object.__setattr__(self, "_ddp", None)

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def make_source(cls, data: str, input_size: int, shuffle_buffer: int, manifest: str | None = None) -> Source:
        """Open ``data`` as this method's ``data_kind`` for an encoder of ``input_size`` px."""
        if cls.data_kind == "labelled":
            # the loader's square: 256 for 224 px networks (random resized crops take 224 of it), else the input size
            load_size = input_size if input_size <= 64 else round(input_size * 256 / 224)
            spec = labelled_set_spec(data)
            return LabelledSource(data, load_size) if spec is None else spec.data_kind.labelled_source(spec, load_size)
        spec = real_set_spec(data)
        if spec is not None:
            if manifest is not None:
                raise DataError(f"{data}: --manifest goes with a rendered set's URL pattern, not a KIND:PATH set")
            return RealImageSource(spec, cls.real_input_scale(input_size), shuffle_buffer=shuffle_buffer)
        return ShardSource(data, shuffle_buffer=shuffle_buffer, manifest=manifest)

    @classmethod
    def real_input_scale(cls, input_size: int) -> int:
        """The square side (px) that the loader workers bring a real set's images to (shorter side resized, centre
        square kept) for an encoder of ``input_size`` px; the method's device augmentation takes it from there.

        By default the ImageNet convention (resize to 256, crop 224: ``input_size * 256 / 224``) for networks
        above 64 px, and the encoder's own size for the CIFAR-scale ones (32 px). A method whose original loader
        used another scale overrides this and says so, with the reference, in its docstring."""
        return input_size if input_size <= 64 else round(input_size * 256 / 224)

    @classmethod
    def data_help(cls) -> str:
        return DATA_KINDS[cls.data_kind].format(real_kinds=real_set_listing())

    @classmethod
    def check_options(cls, opts: MethodOptions, arch: str) -> None:
        """Rules between the options and the architecture, checked before any work; raise :class:`OptionError`."""

    def encoder_arch_kwargs(self) -> dict[str, Any]:
        return dict(self.encoder_kwargs)

    def configure(self, ctx: RunContext) -> None:
        """Create optimisers and schedulers for the run ``ctx`` describes; called by the loop once the method is on
        its device (and before a checkpoint's state is loaded into them)."""
        raise NotImplementedError

    @property
    def input_size(self) -> int:
        return int(self.encoder.input_size)

    def replicate(self) -> None:
        """Under torchrun, wrap a ``gradient_sync = "ddp"`` method in DistributedDataParallel; called by the loop
        once the method is configured and every rank holds rank 0's weights. Buffers are not broadcast (BatchNorm
        statistics stay per rank, as with the explicit all-reduce). A method that re-initialises parameters in
        place (DeepCluster's top layer) keeps the same parameter objects, so DDP's buckets stay valid."""
        if self.gradient_sync != "ddp" or not D.is_dist():
            return
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device] if self.device.type == "cuda" else None
        object.__setattr__(self, "_ddp", DistributedDataParallel(self, device_ids=ids, broadcast_buffers=False))

    def replicated(self, *args: Any) -> Any:
        """``self(*args)`` through DistributedDataParallel when the method is replicated: the forward whose
        backward averages the gradients over ranks."""
        return self(*args) if self._ddp is None else self._ddp(*args)

    # ---- training -----------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        """One step on a device batch; returns detached scalar tensors, 'loss' among them."""
        raise NotImplementedError

    def example_views(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        """The method's augmented views of a uint8 batch ``images``, each a float (B, C, H, W) batch in the input
        range (-1, 1), drawn from ``generator`` (the loop passes one of its own: the training stream is not touched).
        TensorBoard shows them at each epoch's start; the default shows none."""
        return []

    def images_per_step(self, batch: Batch) -> int:
        """Rendered patches consumed per step (for images/s)."""
        return len(batch)

    def on_epoch_start(self, ctx: EpochContext) -> dict[str, float]:
        """Called before each epoch's steps (also on resume mid-epoch); may return metrics to log."""
        return {}

    def on_step_end(self, step: int) -> None:
        """Called after optimisation step ``step`` (1-based, counted over the run) and before any checkpoint of it:
        advances the schedules of a method whose ``schedule_unit`` is "step". A method with other per-iteration
        work (an EMA target, a momentum ramp) overrides this and calls it; state it keeps beyond the schedules goes
        in ``extra_state`` so that a resume restores it exactly."""
        if self.schedule_unit == "step":
            for s in self.schedulers.values():
                s.step()

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # ---- helpers ------------------------------------------------------------------------------------------
    def prepare(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def optimizer_step(self, name: str, loss: Tensor, params: Iterable[nn.Parameter] | None = None) -> None:
        """zero_grad, backward, average gradients over ranks, step: the one place gradients are applied.

        A replicated method's backward averaged them already (DDP's hooks); otherwise they are all-reduced here."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self._ddp is None:
            plist = [p for g in opt.param_groups for p in g["params"]] if params is None else list(params)
            D.allreduce_grads(plist)
        opt.step()
        # Under autocast the bf16 copies of weights are cached until the autocast region ends; the loop keeps one
        # region per training step, so a second player (MonoGAN's generator, BiGAN's E/G) would otherwise run on
        # the copies made before this update. Clearing keeps the cache within a player's forwards, where it saves
        # recasting weights used several times (the critic on real, fake and interpolated images).
        torch.clear_autocast_cache()

    def epoch_end(self) -> None:
        """Called after each full epoch: advances the schedules of a method whose ``schedule_unit`` is "epoch"."""
        if self.schedule_unit == "epoch":
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
