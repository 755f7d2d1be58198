"""A run's settings: :class:`TrainConfig`, the defaults and legal values, how a resume's settings are resolved and
checked against the run it continues, and the run folder's checks (what ``train.loop`` prepares a run with).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.errors import CheckpointError, OptionError
from pipeline.options import SEED, Bounds
from train.data import Source
from train.encoder_io import plain
from train.methods import Method

log = logging.getLogger(__name__)

DEFAULT_SEED = 0
DEFAULT_SHUFFLE_BUFFER = 2000
DEFAULT_CKPT_EVERY = 1000
DEFAULT_LOG_EVERY = 20
# The legal values of the loop's numeric settings, declared once: train.cli builds its ranges from them and
# check_settings refuses the same values from the Python API.
SETTING_BOUNDS = {
    "epochs": Bounds(min=1), "max_steps": Bounds(min=1), "batch_size": Bounds(min=1), "workers": Bounds(min=0),
    "seed": SEED.bounds, "ckpt_every": Bounds(min=0), "log_every": Bounds(min=1), "shuffle_buffer": Bounds(min=0),
    "knn_every": Bounds(min=1), "knn_k": Bounds(min=1), "knn_train_size": Bounds(min=1),
    "knn_test_size": Bounds(min=1),
}
DEFAULT_KNN_EVERY = 1
DEFAULT_KNN_K = 20
DEFAULT_KNN_TRAIN_SIZE = 5000
DEFAULT_KNN_TEST_SIZE = 1000


@dataclass
class TrainConfig:
    """A run's settings. ``None`` (and an option left out of ``options``) means: on ``resume`` the value the
    checkpointed run recorded, else the method's default, so ``--resume`` alone continues the run as it was."""

    method: str
    data: str | None
    out: str
    arch: str | None = None
    epochs: int | None = None
    max_steps: int | None = None  # None: no limit (on resume: the checkpointed run's)
    batch_size: int | None = None
    workers: int | None = None  # None: this process's share of the CPUs (train.data.default_workers)
    seed: int | None = None  # None: DEFAULT_SEED
    ckpt_every: int | None = None  # None: DEFAULT_CKPT_EVERY
    log_every: int | None = None  # None: DEFAULT_LOG_EVERY
    shuffle_buffer: int | None = None  # None: DEFAULT_SHUFFLE_BUFFER
    manifest: str | None = None  # for a webdataset URL pattern as `data`
    resume: bool = False
    device: str = "auto"
    amp: bool | None = None  # bf16 autocast; None: on CUDA and on CPUs with native bf16 (train.devices.default_amp)
    channels_last: bool = True  # NHWC: about 2x faster convolutions on the CPU (oneDNN) and tensor cores on CUDA
    deterministic: bool = False  # bit-reproducible CUDA kernels (see backend_settings); slower on a GPU
    progress: bool = True
    # watching the run (train.knn_monitor, train.online_probe, train.tensorboard_log); None: recorded, else default
    knn_data: str | None = None  # a labelled set ([KIND:]PATH); None: no k-NN monitor
    knn_every: int | None = None  # epochs between k-NN evaluations (DEFAULT_KNN_EVERY)
    knn_tap: str | None = None  # None: the encoder's last tap
    knn_k: int | None = None  # DEFAULT_KNN_K
    knn_train_size: int | None = None  # DEFAULT_KNN_TRAIN_SIZE
    knn_test_size: int | None = None  # DEFAULT_KNN_TEST_SIZE
    online_probe: bool | None = None  # None: recorded, else off
    online_probe_tap: str | None = None  # None: the encoder's last tap
    tensorboard: bool = True  # event files in OUT/tensorboard/
    options: dict[str, Any] = field(default_factory=dict)  # the method's Options overrides


def resolve_settings(cfg: TrainConfig, method_cls: type[Method], recorded: dict[str, Any]) -> dict[str, Any]:
    """The settings the run will use: those given, else those ``recorded`` by the checkpointed run, else defaults.

    ``options`` comes back as the method's override dict (known fields only: a checkpoint written before an
    option existed simply lacks it).
    """
    defaults = {"arch": method_cls.default_arch, "epochs": method_cls.default_epochs, "max_steps": None,
                "batch_size": method_cls.default_batch_size, "seed": DEFAULT_SEED,
                "shuffle_buffer": DEFAULT_SHUFFLE_BUFFER, "workers": None,
                "ckpt_every": DEFAULT_CKPT_EVERY, "log_every": DEFAULT_LOG_EVERY,
                "amp": None,  # amp None: the device's default (train.devices.default_amp); recorded as what ran
                "knn_data": None, "knn_every": DEFAULT_KNN_EVERY, "knn_tap": None, "knn_k": DEFAULT_KNN_K,
                "knn_train_size": DEFAULT_KNN_TRAIN_SIZE, "knn_test_size": DEFAULT_KNN_TEST_SIZE,
                "online_probe": False, "online_probe_tap": None}
    settings = {name: getattr(cfg, name) if getattr(cfg, name) is not None else recorded.get(name, default)
                for name, default in defaults.items()}
    known = {f.name for f in fields(method_cls.Options)}
    inherited = {k: v for k, v in recorded.get("options", {}).items() if k in known}
    settings["options"] = {**inherited, **cfg.options}
    return settings


# What a resumed run must share with the run it continues: the checkpoint's weights, optimiser state, schedules,
# RNG streams and position in the epoch only mean something with the same data, batches and hyper-parameters.
# Everything else (epochs, max_steps, workers, device, out, logging and checkpoint intervals) may change; of
# those, these change the result, so a resume that changes them says it no longer continues the run bit for bit.
MUST_MATCH_ON_RESUME = ("batch_size", "seed", "shuffle_buffer", "options", "data_identity")
CHANGE_THE_RESULT_ON_RESUME = {"workers": "the shuffle buffer is per DataLoader worker", "amp": "bf16 autocast"}


def warn_inexact_resume(recorded: dict[str, Any], settings: dict[str, Any]) -> None:
    for name, why in CHANGE_THE_RESULT_ON_RESUME.items():
        if name in recorded and recorded[name] is not None and settings[name] not in (None, recorded[name]):
            log.warning("--%s %s where the run recorded %s (%s): the resumed run will not match an "
                        "uninterrupted one", name, settings[name], recorded[name], why)


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


def check_settings(settings: dict[str, Any]) -> None:
    """The loop's own numbers against SETTING_BOUNDS (what the command line's ranges are built from)."""
    from train.models import list_encoders

    if settings["arch"] not in list_encoders():
        raise OptionError(f"Invalid value for '--arch': {settings['arch']!r} is not one of "
                          f"{', '.join(map(repr, list_encoders()))}.")
    for name, bounds in SETTING_BOUNDS.items():
        value = settings[name]
        if value is None and name in ("max_steps", "workers"):  # None: no limit; the default share of the CPUs
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(f"Invalid value for '--{name.replace('_', '-')}': {value!r} is not an integer.")
        problem = bounds.problem(value)
        if problem:
            raise OptionError(f"Invalid value for '--{name.replace('_', '-')}': {problem}")


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


def remove_event_files(out: Path) -> None:
    """The TensorBoard events of a run that saved nothing (train.tensorboard_log writes only under this folder)."""
    from train.tensorboard_log import FOLDER

    folder = out / FOLDER
    if folder.is_dir():
        for path in folder.glob("events.out.tfevents.*"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: something else was put there
            folder.rmdir()
