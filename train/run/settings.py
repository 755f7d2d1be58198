"""A run's settings: :class:`TrainConfig`, the defaults and legal values, how a resume's settings are resolved and
checked against the run it continues, and the run folder's checks (what ``train.run.loop`` prepares a run with).
"""

from __future__ import annotations

import contextlib
import json
import logging
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from common.errors import CheckpointError, OptionError
from common.options import SEED, opt, value_problem
from train.data.sources import Source
from train.methods import Method
from train.models.encoder_io import plain
from train.monitors.tensorboard_log import remove_event_files

log = logging.getLogger(__name__)

def setting(default: Any, help: str, *, method_default: str | None = None, show_default: bool = True,
            metavar: str | None = None, **limits: Any) -> Any:
    """A loop setting, declared once: a field of :class:`RunSettings` whose value ``None`` means "not given" (the
    resumed run's recorded value, else the default). ``default`` is the default, or ``method_default`` names the
    method's class attribute that holds it (``default_arch``...); ``help`` and ``limits`` (``min``/``max``...,
    as :func:`common.options.opt`) make its ``train`` option and the checks of the Python API."""
    declared = opt(default, help, **limits)
    return field(default=None, metadata={**declared.metadata, "default": default, "method_default": method_default,
                                         "show_default": show_default, "metavar": metavar})


@dataclass
class RunSettings:
    """The loop's settings: each field's :func:`setting` is its command-line option (flag, range, default, help),
    its check, its default and its place in the run's record (config.json, checkpoint.pt), so that a new setting is
    one line here. :func:`resolve_settings` gives every field a value: given, else recorded by the resumed run, else
    the default."""

    arch: str | None = setting(None, "encoder architecture", method_default="default_arch")
    epochs: int | None = setting(None, "", method_default="default_epochs", min=1)
    max_steps: int | None = setting(None, "stop after this many optimisation steps (overall, not per epoch)", min=1)
    batch_size: int | None = setting(None, "per-process batch size", method_default="default_batch_size", min=1)
    workers: int | None = setting(None, "data-loader worker processes per process  [default: its share of the CPUs "
                                        "it may use, split between torchrun's processes on the node, less one]",
                                  show_default=False, min=0)  # None: train.data.sources.default_workers
    seed: int | None = setting(0, "", min=SEED.bounds.min, max=SEED.bounds.max)
    ckpt_every: int | None = setting(1000, "checkpoint every N steps (and always at each epoch end); 0: epoch ends "
                                           "only", min=0)
    log_every: int | None = setting(20, "metrics.jsonl / progress-bar interval in steps", min=1)
    shuffle_buffer: int | None = setting(2000, "samples in the streaming shuffle buffer", min=0)
    amp: bool | None = setting(None, "bf16 autocast; default: on CUDA and on a CPU with native bf16 (AVX512-BF16 or "
                                     "AMX, detected at run time; 1.3-2.3x faster steps), fp32 on other CPUs, which "
                                     "emulate bf16. --no-amp trains in fp32 (bit-exact fingerprints); config.json "
                                     "records which and why", show_default=False)  # train.process.devices.default_amp
    # watching the run (train.monitors.knn, train.monitors.online_probe): they do not change it
    # {labelled_kinds}: the data kinds it takes, filled in from their registry when the command is built (train.cli)
    knn_data: str | None = setting(None, "k-NN monitor: a labelled set (a CIFAR-10/100 folder or an ImageFolder "
                                         "tree; KIND {labelled_kinds} as for `probe --data`); weighted k-NN top-1 of "
                                         "--knn-tap on it is logged in metrics.jsonl every --knn-every epochs and at "
                                         "the run's end",
                                   show_default=False, metavar="[KIND:]PATH")
    knn_every: int | None = setting(1, "epochs between k-NN evaluations", min=1)
    knn_tap: str | None = setting(None, "the encoder tap the k-NN monitor reads (map taps averaged over space)  "
                                        "[default: the encoder's last tap]", show_default=False)
    knn_k: int | None = setting(20, "neighbours that vote", min=1)
    knn_temperature: float | None = setting(0.07, "temperature of the neighbours' weights exp(similarity / T)",
                                            min=0, min_open=True)
    knn_train_size: int | None = setting(5000, "training images of --knn-data that vote (a seeded subset)", min=1)
    knn_test_size: int | None = setting(1000, "test images of --knn-data scored (a seeded subset)", min=1)
    online_probe: bool | None = setting(False, "train a linear classifier on detached features of --online-probe-tap "
                                               "from each training batch's labels (a labelled training set only); "
                                               "its top-1 goes into metrics.jsonl  [default: off]",
                                        show_default=False)
    online_probe_tap: str | None = setting(None, "the tap the online probe reads  [default: the encoder's last tap]",
                                           show_default=False)


def setting_fields() -> tuple:
    return fields(RunSettings)


def setting_kind(f) -> type:
    """The type of a setting's value (its annotation without ``| None``)."""
    hint = typing.get_type_hints(RunSettings)[f.name]
    return next(a for a in typing.get_args(hint) if a is not type(None))


def setting_default(f, method_cls: type[Method] | None = None) -> Any:
    """A setting's default: its own, or the method's class attribute it names."""
    attr = f.metadata["method_default"]
    return getattr(method_cls, attr) if attr and method_cls is not None else f.metadata["default"]


@dataclass(kw_only=True)
class TrainConfig(RunSettings):
    """A run: what to train on, where, and its settings (:class:`RunSettings`: ``None`` means on ``resume`` the
    value the checkpointed run recorded, else the default), so ``--resume`` alone continues the run as it was.
    The fields below are not recorded settings: they say where and how this process runs."""

    method: str
    data: str | None
    out: str
    manifest: str | None = None  # for a webdataset URL pattern as `data`
    resume: bool = False
    device: str = "auto"
    channels_last: bool = True  # NHWC: about 2x faster convolutions on the CPU (oneDNN) and tensor cores on CUDA
    deterministic: bool = False  # bit-reproducible CUDA kernels (see backend_settings); slower on a GPU
    progress: bool = True
    tensorboard: bool = True  # event files in OUT/tensorboard/
    options: dict[str, Any] = field(default_factory=dict)  # the method's Options overrides


def resolve_settings(cfg: TrainConfig, method_cls: type[Method], recorded: dict[str, Any]) -> RunSettings:
    """The settings the run will use: those given, else those ``recorded`` by the checkpointed run, else defaults."""
    values = {}
    for f in setting_fields():
        given = getattr(cfg, f.name)
        values[f.name] = given if given is not None else recorded.get(f.name, setting_default(f, method_cls))
    return RunSettings(**values)


def resolve_options(cfg: TrainConfig, method_cls: type[Method], recorded: dict[str, Any]) -> dict[str, Any]:
    """The method's option overrides: those given over those recorded (known fields only: a checkpoint written
    before an option existed simply lacks it)."""
    known = {f.name for f in fields(method_cls.Options)}
    inherited = {k: v for k, v in recorded.get("options", {}).items() if k in known}
    return {**inherited, **cfg.options}


# What a resumed run must share with the run it continues: the checkpoint's weights, optimiser state, schedules,
# RNG streams and position in the epoch only mean something with the same data, batches and hyper-parameters.
# Everything else (epochs, max_steps, workers, device, out, logging and checkpoint intervals) may change; of
# those, these change the result, so a resume that changes them says it no longer continues the run bit for bit.
MUST_MATCH_ON_RESUME = ("batch_size", "seed", "shuffle_buffer", "options", "data_identity")
CHANGE_THE_RESULT_ON_RESUME = {"workers": "the shuffle buffer is per DataLoader worker", "amp": "bf16 autocast"}


def warn_inexact_resume(recorded: dict[str, Any], settings: RunSettings) -> None:
    for name, why in CHANGE_THE_RESULT_ON_RESUME.items():
        value = getattr(settings, name)
        if name in recorded and recorded[name] is not None and value not in (None, recorded[name]):
            log.warning("--%s %s where the run recorded %s (%s): the resumed run will not match an "
                        "uninterrupted one", name, value, recorded[name], why)


def data_identity(source: Source) -> dict[str, Any]:
    """What the data is, not where it is: a moved set must still resume."""
    return plain(getattr(source, "identity", {"num_samples": source.num_samples}))


_UNSET = object()


def _brief(value: Any) -> str:
    text = "(not set)" if value is _UNSET else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def setting_differences(recorded: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """'name OLD -> NEW' for each key of ``recorded`` whose value differs in ``current`` (dicts compared key by
    key; keys only ``current`` has are settings the recorded run predates, and are not compared)."""
    diffs = []
    for key, old in recorded.items():
        new = current.get(key, _UNSET)
        if isinstance(old, dict) and isinstance(new, dict):
            diffs += setting_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            diffs.append(f"{prefix}{key} {_brief(old)} -> {_brief(new)}")
    return diffs


def check_resume_matches(ckpt_path: Path, recorded: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse, in one line naming every difference, a resume whose data or hyper-parameters differ."""
    if "data_identity" not in recorded:  # written before data_identity was recorded
        recorded = {**recorded, "data_identity": {k: recorded[k] for k in ("num_samples", "render_config")
                                                  if k in recorded}}
    diffs = setting_differences({k: recorded[k] for k in MUST_MATCH_ON_RESUME if k in recorded},
                                plain({k: current[k] for k in MUST_MATCH_ON_RESUME}))
    if diffs:
        raise CheckpointError(f"{ckpt_path}: the run was trained with other data or settings ({'; '.join(diffs)}); "
                              f"resume with the recorded ones or choose another --out")


def build_options(method_cls: type[Method], overrides: dict[str, Any], arch: str | None = None):
    """The method's Options with ``overrides``, every value checked (and, given ``arch``, checked against the
    architecture): an :class:`OptionError` before any work, as the command line's usage errors."""
    known = {f.name for f in fields(method_cls.Options)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise OptionError(f"{method_cls.name}: unknown option(s) {unknown}; known: {sorted(known)}")
    opts = method_cls.Options(**overrides)
    if arch is not None:
        method_cls.check_options(opts, arch)
    return opts


def check_settings(settings: RunSettings) -> None:
    """Every setting against its declaration (what the command line's ranges and choices are built from): the
    Python API is refused the values the command line refuses, with the same wording."""
    from train.models import list_encoders

    if settings.arch not in list_encoders():
        raise OptionError(f"Invalid value for '--arch': {settings.arch!r} is not one of "
                          f"{', '.join(map(repr, list_encoders()))}.")
    for f in setting_fields():
        value = getattr(settings, f.name)
        if value is None and f.metadata["default"] is None:  # unset where unset is a choice: no limit, auto...
            continue
        problem = value_problem(f, setting_kind(f), value)
        if problem:
            raise OptionError(f"Invalid value for '--{f.name.replace('_', '-')}': {problem}")


def check_run_folder(out: Path, resume: bool) -> None:
    """Refuse to start over a run that produced weights: a fresh start would replace its encoder.pt.

    A folder holding only config.json / metrics.jsonl is a run stopped before its first checkpoint: it has
    nothing to resume or lose, so a fresh start is allowed there (and starts a new metrics.jsonl).
    """
    ckpt_path = out / "checkpoint.pt"
    if resume:
        if not ckpt_path.exists():
            raise CheckpointError(f"{ckpt_path}: nothing to resume (no checkpoint in {out})")
        return
    if ckpt_path.exists():
        raise CheckpointError(f"{out} already holds a run (checkpoint.pt); pass --resume or choose another --out")
    if (out / "encoder.pt").exists():
        raise CheckpointError(f"{out} already holds a run (encoder.pt, without a checkpoint to resume from); "
                              f"choose another --out or remove it")


def remove_unsaved_run(out: Path, created: bool) -> None:
    """A fresh run that failed before its first checkpoint leaves no files describing weights that never were."""
    for name in ("config.json", "metrics.jsonl"):
        (out / name).unlink(missing_ok=True)
    remove_event_files(out)
    if created:
        with contextlib.suppress(OSError):  # not empty: something else was put there meanwhile
            out.rmdir()
