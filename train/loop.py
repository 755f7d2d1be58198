"""The training loop shared by every method (DINO / MoCo-style: one readable function, ``train``).

Device chosen automatically (CUDA when present, with bf16 autocast; channels_last on every device), checkpoints written
atomically every ``ckpt_every`` steps and at each epoch end, exact resume (model, optimisers, schedulers,
RNG, method state such as DeepCluster's assignments, position in the epoch), ``metrics.jsonl``, a progress
bar with loss and images/s, data-parallel training under torchrun, a clean stop on a non-finite loss that keeps
the last good checkpoint, and on Ctrl-C or SIGTERM a stop after the step in flight that saves one (``train.interrupt``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from pipeline.fileio import append_line, atomic_write_text
from pipeline.options import SEED, Bounds
from train import distributed as D
from train.data import Batch, LabelledSource, ShardSource, Source, default_workers, epoch_batches, steps_per_epoch
from train.encoder_io import atomic_torch_save, load_torch_file, plain, save_encoder
from train.errors import CheckpointError, DataError, NonFiniteLossError, OptionError, TrainError
from train.interrupt import StopSignals, TrainInterrupted
from train.methods import EpochContext, Method, get_method

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "single-image-ssl/checkpoint"
CHECKPOINT_VERSION = 1


DEFAULT_SEED = 0
DEFAULT_SHUFFLE_BUFFER = 2000
DEFAULT_CKPT_EVERY = 1000
DEFAULT_LOG_EVERY = 20
# The legal values of the loop's numeric settings, declared once: train.cli builds its ranges from them and
# check_settings refuses the same values from the Python API.
SETTING_BOUNDS = {
    "epochs": Bounds(min=1), "max_steps": Bounds(min=1), "batch_size": Bounds(min=1), "workers": Bounds(min=0),
    "seed": SEED.bounds, "ckpt_every": Bounds(min=0), "log_every": Bounds(min=1), "shuffle_buffer": Bounds(min=0),
}


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
    amp: bool | None = None  # bf16 autocast; None: on CUDA only (an opt-in on the CPU, where not every CPU has bf16)
    channels_last: bool = True  # NHWC: about 2x faster convolutions on the CPU (oneDNN) and tensor cores on CUDA
    deterministic: bool = False  # bit-reproducible CUDA kernels (see backend_settings); slower on a GPU
    progress: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # the method's Options overrides


# What --device accepts; anything else would reach torch.device and end in a traceback.
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICE_HELP = "auto | cpu | cuda | cuda:N"


def pick_device(name: str = "auto") -> torch.device:
    """CUDA (this process's local rank under torchrun) when present, else CPU.

    Under torchrun each process trains on the GPU of its LOCAL_RANK: an explicit ``cuda:N`` naming another one
    would put several ranks on one GPU, where NCCL refuses to start, so it is refused here in one line.
    """
    if not DEVICE_NAME.fullmatch(name):
        raise TrainError(f"--device {name!r}: not a device this trainer runs on ({DEVICE_HELP})")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"--device {name} asked for, but no CUDA device is visible")
        _, local_rank, world = D.env_world()
        if world > 1 and dev.index is not None and dev.index != local_rank:
            raise TrainError(f"--device {name} under torchrun: each process trains on the GPU of its LOCAL_RANK "
                             f"(cuda:{local_rank} for this one); pass --device cuda (or auto)")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        if dev.index >= torch.cuda.device_count():
            raise TrainError(f"--device {dev}: only {torch.cuda.device_count()} CUDA device(s) visible")
        torch.cuda.set_device(dev)
    return dev


# cuBLAS's fixed-size workspace, which deterministic CUDA matrix products need; read when cuBLAS starts.
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def backend_settings(device: torch.device, deterministic: bool = False) -> Iterator[None]:
    """The kernels a run trains with, restored on exit (tests, benchmarks and notebooks call ``train`` in one process).

    On CUDA by default: cuDNN autotuning and TF32 products, fast but not bit-reproducible (the algorithm chosen may
    change from run to run, and atomic-add kernels sum in any order). ``deterministic``: deterministic algorithms
    (an operation without one warns, naming itself), no autotuning, no TF32. On the CPU nothing changes by default.
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, matmul.allow_tf32,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
            torch.use_deterministic_algorithms(True, warn_only=True)
            cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, matmul.allow_tf32 = False, True, False, False
        elif device.type == "cuda":
            cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = True, True, True
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, matmul.allow_tf32 = saved[:4]
        torch.use_deterministic_algorithms(saved[4], warn_only=saved[5])


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s global generators (dropout) once the model is built: ``seed`` on rank 0."""
    return seed if rank == 0 else (seed * 1_000_003 + rank * 7_919 + 1) % 2**63


def amp_autocast(device_type: str, enabled: bool) -> contextlib.AbstractContextManager:
    """The loop's mixed precision: one bf16 autocast region per training step (a no-op when ``enabled`` is False).

    Its cache of bf16 weight copies lives until the region ends; ``Method.optimizer_step`` clears it after each
    update, so a method stepping several optimisers in one step never runs a forward on pre-update weights.
    """
    return torch.autocast(device_type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def resolve_settings(cfg: TrainConfig, method_cls: type[Method], recorded: dict[str, Any]) -> dict[str, Any]:
    """The settings the run will use: those given, else those ``recorded`` by the checkpointed run, else defaults.

    ``options`` comes back as the method's override dict (known fields only: a checkpoint written before an
    option existed simply lacks it).
    """
    defaults = {"arch": method_cls.default_arch, "epochs": method_cls.default_epochs, "max_steps": None,
                "batch_size": method_cls.default_batch_size, "seed": DEFAULT_SEED,
                "shuffle_buffer": DEFAULT_SHUFFLE_BUFFER, "workers": None,
                "ckpt_every": DEFAULT_CKPT_EVERY, "log_every": DEFAULT_LOG_EVERY,
                "amp": None}  # amp None: bf16 autocast on CUDA only; recorded as the precision that ran
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


def _data_identity(source: Source) -> dict[str, Any]:
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


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """This process's random streams: the global CPU one, the augmentation generator and, on CUDA, the generator of
    the one device the process trains on (not every visible GPU's: a resume may see fewer, or other, GPUs)."""
    state = {"torch": torch.get_rng_state(), "augment": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["augment"])
    cuda_state = state.get("cuda")
    if device.type != "cuda" or cuda_state is None:
        return  # a CPU run, or a checkpoint written on the CPU: the CUDA generator keeps its seed
    if isinstance(cuda_state, (list, tuple)):  # written before: every visible GPU's, the run's at its device index
        if device.index is None or device.index >= len(cuda_state):
            log.warning("checkpoint holds no CUDA random state for %s: its stream restarts", device)
            return
        cuda_state = cuda_state[device.index]
    torch.cuda.set_rng_state(cuda_state, device)


def load_checkpoint(path: Path) -> dict[str, Any]:
    ckpt = load_torch_file(path, "checkpoint", CheckpointError)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a training checkpoint of this project")
    return ckpt


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines a killed run wrote after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by the kill
        if rec.get("step", 0) <= step:
            keep.append(line)
    atomic_write_text(path, "".join(x + "\n" for x in keep))


class _Metrics:
    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def write(self, **rec: Any) -> None:
        if not self.enabled:
            return
        rec = {"time": round(time.time(), 3), **plain(rec)}
        append_line(self.path, json.dumps(rec))


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


def _remove_unsaved_run(out: Path, created: bool) -> None:
    """A fresh run that failed before its first checkpoint leaves no files describing weights that never were."""
    for name in ("config.json", "metrics.jsonl"):
        (out / name).unlink(missing_ok=True)
    if created:
        with contextlib.suppress(OSError):  # not empty: something else was put there meanwhile
            out.rmdir()


def make_source(cfg: TrainConfig, method_cls: type[Method], input_size: int,
                shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER) -> Source:
    if cfg.data is None:
        raise DataError("no data set given")
    if method_cls.needs_labels:
        from train.methods.supervised import Supervised
        return LabelledSource(cfg.data, Supervised.load_size(input_size))
    return ShardSource(cfg.data, shuffle_buffer=shuffle_buffer, manifest=cfg.manifest)


def train(cfg: TrainConfig, source: Source | None = None) -> dict[str, Any]:
    """Train ``cfg.method`` and write ``checkpoint.pt``, ``encoder.pt``, ``metrics.jsonl`` under ``cfg.out``.

    ``source`` overrides the data set named by ``cfg.data`` (tests, benchmarks). Returns a summary dict.
    """
    if cfg.deterministic:  # before anything can start cuBLAS
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    device = pick_device(cfg.device)
    started_pg = False
    if D.env_world()[2] > 1 and not D.is_dist():
        D.init(device)
        started_pg = True
    try:
        with backend_settings(device, cfg.deterministic):
            return _train(cfg, device, source)
    finally:
        if started_pg:
            D.shutdown()


def _train(cfg: TrainConfig, device: torch.device, source: Source | None) -> dict[str, Any]:
    method_cls = get_method(cfg.method)
    main = D.is_main()
    world = D.world_size()
    cuda = device.type == "cuda"

    out = Path(cfg.out)
    ckpt_path, enc_path, metrics_path = out / "checkpoint.pt", out / "encoder.pt", out / "metrics.jsonl"
    check_run_folder(out, cfg.resume)
    ckpt = load_checkpoint(ckpt_path) if cfg.resume else None
    if ckpt is not None and ckpt["method"] != cfg.method:
        raise CheckpointError(f"{ckpt_path}: checkpoint of method {ckpt['method']!r}, not {cfg.method!r}")
    recorded = {**ckpt.get("config", {}), "arch": ckpt["arch"]} if ckpt is not None else {}
    settings = resolve_settings(cfg, method_cls, recorded)
    check_settings(settings)
    arch, epochs, batch_size = settings["arch"], settings["epochs"], settings["batch_size"]
    seed, max_steps = settings["seed"], settings["max_steps"]
    # workers: given, else recorded, else this process's share of the CPUs (recorded as used, in run_config)
    workers = default_workers() if settings["workers"] is None else settings["workers"]
    ckpt_every, log_every = settings["ckpt_every"], settings["log_every"]
    if ckpt is not None and ckpt["arch"] != arch:
        raise CheckpointError(f"{ckpt_path}: checkpoint of architecture {ckpt['arch']!r}, not {arch!r}")
    if ckpt is not None:
        warn_inexact_resume(recorded, settings)
    opts = build_options(method_cls, settings["options"], arch)

    torch.manual_seed(seed)
    if cuda:
        torch.cuda.manual_seed_all(seed)
    # Built before the data so the input size is known (the supervised loader resizes to it).
    probe_model = None
    if source is None:
        from train.models import build_encoder
        probe_model = build_encoder(arch)
        source = make_source(cfg, method_cls, int(probe_model.input_size), settings["shuffle_buffer"])
        del probe_model
    data_identity = _data_identity(source)
    if ckpt is not None:
        check_resume_matches(ckpt_path, recorded, {**settings, "options": asdict(opts),
                                                   "data_identity": data_identity})
    torch.manual_seed(seed)
    try:
        method = method_cls(opts, arch, source.num_samples, source.num_classes, device)
    except ValueError as e:
        raise TrainError(str(e)) from None
    method.total_epochs = epochs
    method.to(device)
    if cfg.channels_last:
        method.to(memory_format=torch.channels_last)
        method.channels_last = True
    method.configure()
    D.broadcast_module(method)
    if D.rank() > 0:
        # Dropout masks (global and CUDA generators) differ per rank, as augmentation does; the weights above were
        # built from the common seed and broadcast. Rank 0 keeps the stream a single process has.
        torch.manual_seed(rank_seed(seed, D.rank()))
    gen = torch.Generator().manual_seed(seed * 7919 + D.rank() + 1)

    epoch, step, batch_in_epoch = 0, 0, 0
    if ckpt is not None:
        try:
            method.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise CheckpointError(f"{ckpt_path}: weights do not fit this {cfg.method}/{arch} model "
                                  f"({str(e).splitlines()[0]})") from None
        for name, o in method.optimizers.items():
            o.load_state_dict(ckpt["optimizers"][name])
        for name, s in method.schedulers.items():
            s.load_state_dict(ckpt["schedulers"][name])
        try:
            method.load_extra_state(ckpt.get("extra", {}))
        except ValueError as e:
            raise CheckpointError(f"{ckpt_path}: {e}") from None
        epoch, step, batch_in_epoch = int(ckpt["epoch"]), int(ckpt["step"]), int(ckpt["batch_in_epoch"])
        rngs = ckpt.get("rng", [])
        if len(rngs) == world:
            _set_rng_state(rngs[D.rank()], gen, device)
        else:
            log.warning("checkpoint written by %d ranks, resuming on %d: RNG streams restart",
                        len(rngs), world)
        if main:
            _truncate_metrics(metrics_path, step)

    spe = steps_per_epoch(source.num_samples, batch_size, world)
    total = epochs * spe if max_steps is None else min(epochs * spe, max_steps)
    use_amp = cuda if settings["amp"] is None else settings["amp"]
    # Only values this process applies: on resume, those checked above equal the recorded ones. The device and
    # bf16 autocast are recorded as used ("auto" and amp on a CPU run would say nothing true), with the step the
    # run stops at, which --max-steps or --epochs decides, whichever comes first.
    run_config = {
        **{k: v for k, v in asdict(cfg).items() if k not in ("options", "resume")},
        **{k: v for k, v in settings.items() if k != "options"}, "world_size": world,
        "device": str(device), "amp": use_amp, "workers": workers, "total_steps": total,
        "options": method.options_dict(), "data_description": source.description,
        "num_samples": source.num_samples, "steps_per_epoch": spe,
        "render_config": getattr(source, "render_config", None), "data_identity": data_identity,
    }
    metrics = _Metrics(metrics_path, main)
    created_out = not out.exists()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(plain(run_config), indent=2) + "\n")
        if ckpt is None and metrics_path.exists():
            # left by a run stopped before its first checkpoint (check_run_folder): its lines describe no weights
            log.info("%s: replacing the metrics of a run that stopped before its first checkpoint", metrics_path)
            metrics_path.unlink()
        metrics.write(event="start" if ckpt is None else "resume", step=step, epoch=epoch,
                      method=cfg.method, arch=arch, world_size=world, device=str(device))

    def autocast():
        return amp_autocast(device.type, use_amp)

    last_saved = step if ckpt is not None else -1
    last_good = last_saved

    def save_checkpoint() -> None:
        nonlocal last_saved, last_good
        rngs = D.all_gather_object(_rng_state(gen, device))
        if main:
            atomic_torch_save({
                "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "method": cfg.method, "arch": arch,
                "config": plain(run_config), "epoch": epoch, "step": step, "batch_in_epoch": batch_in_epoch,
                "model": {k: v.detach().cpu() for k, v in method.state_dict().items()},
                "optimizers": {n: o.state_dict() for n, o in method.optimizers.items()},
                "schedulers": {n: s.state_dict() for n, s in method.schedulers.items()},
                "extra": method.extra_state(), "rng": rngs,
            }, ckpt_path)
        last_saved = last_good = step

    def write_encoder() -> None:
        if main:
            save_encoder(enc_path, method.encoder, arch, {**run_config, "step": step, "epoch": epoch})

    # Per-step values stay on the device until a log/checkpoint step: a .item() per step would stall the GPU.
    bad = torch.zeros((), dtype=torch.bool, device=device)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}  # per key: the GAN generator's loss exists only every n_critic steps
    n_window, images_window, t_window = 0, 0, time.perf_counter()
    t_start, images_total = time.perf_counter(), 0
    last_logged: dict[str, float] = {}

    def check_finite() -> None:
        if bool(D.all_reduce_sum(bad.float().clone())):
            metrics.write(event="nonfinite", step=step, epoch=epoch)
            where = f"{ckpt_path} (step {last_good})" if last_good >= 0 else "none written yet"
            raise NonFiniteLossError(f"loss became non-finite by step {step} (epoch {epoch}); stopped. "
                                     f"Last good checkpoint: {where}")

    def flush_metrics(pbar: tqdm) -> None:
        nonlocal sums, counts, n_window, images_window, t_window, last_logged
        check_finite()
        if n_window == 0:
            return
        names = sorted(sums)
        vec = D.all_reduce_sum(torch.stack([sums[n] / counts[n] for n in names]).float()) / world
        vals = dict(zip(names, vec.tolist(), strict=True))
        dt = max(time.perf_counter() - t_window, 1e-9)
        ips = images_window * world / dt
        lr = next(iter(method.optimizers.values())).param_groups[0]["lr"]
        last_logged = {**vals, "images_per_s": ips}
        metrics.write(step=step, epoch=epoch, lr=lr, images_per_s=round(ips, 2),
                      **{k: round(v, 6) for k, v in vals.items()})
        pbar.set_postfix(loss=f"{vals.get('loss', float('nan')):.4f}", img_s=f"{ips:,.0f}", refresh=False)
        sums, counts, n_window, images_window, t_window = {}, {}, 0, 0, time.perf_counter()

    def stop_on_signal() -> None:
        if step == 0:
            raise TrainInterrupted(f"{out}: interrupted before the first step; nothing to save")
        flush_metrics(pbar)  # raises instead of saving when the loss went non-finite
        if last_saved != step:
            save_checkpoint()
        metrics.write(event="interrupted", step=step, epoch=epoch)
        raise TrainInterrupted(f"{ckpt_path}: interrupted at step {step} of {total}, saved; --resume continues")

    def batches_until_stopped(batches: Iterable[Batch]) -> Iterator[Batch]:
        it = iter(batches)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except Exception:
                # a scheduler's SIGTERM also ends the loader's workers, which the next fetch reports; the model is
                # between steps here, so the stop can still save (one process only: ranks would disagree on the step)
                if not stop.signalled or D.is_dist():
                    raise
                stop_on_signal()
            yield batch

    pbar = tqdm(total=total, initial=step, disable=not (cfg.progress and main), desc=f"{cfg.method}/{arch}",
                unit="step", dynamic_ncols=True)
    method.train()
    # only around the loop: before it a Ctrl-C has nothing to save and ends the start-up at once
    stop = StopSignals(sync_every=log_every)
    stop.install()
    try:
        while step < total:
            if stop.requested(step, device):
                stop_on_signal()
            ctx = EpochContext(source=source, epoch=epoch, batch_size=batch_size, seed=seed,
                               workers=workers, pin_memory=cuda, autocast=autocast, progress=cfg.progress)
            try:
                stats = method.on_epoch_start(ctx)
            except ValueError as e:
                raise TrainError(str(e)) from None
            except Exception:
                if not stop.signalled or D.is_dist():
                    raise
                stop_on_signal()  # as in batches_until_stopped; the epoch's start follows a checkpoint
            if stats:
                metrics.write(event="epoch_start", step=step, epoch=epoch, **stats)
            batches = epoch_batches(source, epoch, batch_size, spe, skip=batch_in_epoch, seed=seed,
                                    workers=workers, pin_memory=cuda)
            for batch in batches_until_stopped(batches):
                batch = batch.to(device)
                with autocast():
                    out_step = method.training_step(batch, gen)
                loss = out_step["loss"]
                bad |= ~torch.isfinite(loss)
                for k, v in out_step.items():
                    sums[k] = sums[k] + v.float() if k in sums else v.float().clone()
                    counts[k] = counts.get(k, 0) + 1
                n_window += 1
                n_img = method.images_per_step(batch)
                images_window += n_img
                images_total += n_img * world
                step += 1
                batch_in_epoch += 1
                pbar.update(1)
                if step % log_every == 0 or step == total:
                    flush_metrics(pbar)
                if ckpt_every and step % ckpt_every == 0 and batch_in_epoch < spe:
                    check_finite()
                    save_checkpoint()
                if step >= total:
                    break
                # mid-epoch only: at the epoch's last batch the epoch end below runs first, then the check above
                if batch_in_epoch < spe and stop.requested(step, device):
                    stop_on_signal()
            if batch_in_epoch >= spe:  # a full epoch: advance schedules, checkpoint, export
                method.epoch_end()
                epoch += 1
                batch_in_epoch = 0
                flush_metrics(pbar)
                save_checkpoint()
                write_encoder()
        flush_metrics(pbar)
        D.check_in_sync(method)
        if last_saved != step:
            save_checkpoint()
        write_encoder()
    except BaseException:
        if main and ckpt is None and last_saved < 0:
            _remove_unsaved_run(out, created_out)
        raise
    finally:
        stop.restore()
        pbar.close()
    elapsed = time.perf_counter() - t_start
    summary = {"step": step, "epoch": epoch, "out": str(out), "seconds": elapsed,
               "images_per_s": images_total / max(elapsed, 1e-9), **last_logged}
    metrics.write(event="end", **summary)
    D.barrier()
    return summary
