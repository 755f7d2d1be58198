"""The training loop shared by every method, shaped as DINO's ``train_dino`` + ``train_one_epoch``.

:func:`train` reads as its steps: prepare the run (run folder, resume, settings, data, method: :func:`prepare_run`),
write its ``config.json`` and first metrics line (:func:`start_loop`), train epoch by epoch (:func:`fit`, which calls
:func:`train_one_epoch`), report. The units: :class:`train.run.checkpoint.Checkpointer` (atomic checkpoints with every
rank's random streams; exact resume of model, optimisers, schedulers, method state and position in the epoch),
:class:`train.run.metrics.MetricsWriter` (``metrics.jsonl`` windows and the non-finite check), :mod:`train.run.settings`
(what a run is configured with and how a resume is checked).

Behaviour: the device chosen automatically (CUDA when present, with bf16 autocast; channels_last on every device),
checkpoints every ``ckpt_every`` steps and at each epoch end, a progress bar with loss and images/s, data-parallel
training under torchrun, a clean stop on a non-finite loss that keeps the last good checkpoint, and on Ctrl-C or
SIGTERM a stop after the step in flight that saves one (``train.process.interrupt``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from common.errors import CheckpointError, DataError, Interrupted, ToolkitError
from common.fileio import atomic_write_text, folder_lock, remove_dead_temporaries
from train.data.sources import Batch, Source, default_workers, epoch_batches, steps_per_epoch
from train.methods import EpochContext, Method, RunContext, get_method
from train.models import build_encoder
from train.models.encoder_io import plain, save_encoder
from train.monitors.run_monitors import Monitors, knn_due, log_views, open_monitors, start_events
from train.process import distributed as D
from train.process.devices import default_amp, pick_device
from train.process.interrupt import StopSignals
from train.run.checkpoint import Checkpointer, Position, load_checkpoint, restore_checkpoint
from train.run.metrics import MetricsWriter, truncate_metrics
from train.run.settings import (
    RunSettings,
    TrainConfig,
    build_options,
    check_resume_matches,
    check_run_folder,
    check_settings,
    data_identity,
    remove_unsaved_run,
    resolve_options,
    resolve_settings,
    warn_inexact_resume,
)

log = logging.getLogger(__name__)

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


# ---- the run -------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """A prepared run: what :func:`train_one_epoch` and the clean-up read. ``resumed_from`` is the checkpoint the run
    continues (None: a fresh run)."""

    cfg: TrainConfig
    out: Path
    settings: RunSettings  # every setting resolved (given, recorded or default); workers a number
    method: Method
    source: Source
    ctx: RunContext
    generator: torch.Generator  # this rank's augmentation stream
    start: Position
    run_config: dict[str, Any]
    resumed_from: dict[str, Any] | None
    monitors: Monitors

    @property
    def device(self) -> torch.device:
        return self.ctx.device


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
    # one writer per run folder: rank 0 (the one that writes) holds OUT.lock from the folder checks to the end
    owner = folder_lock(cfg.out, "train run") if D.rank() == 0 else contextlib.nullcontext()
    try:
        with owner, backend_settings(device, cfg.deterministic):
            run = prepare_run(cfg, device, source)
            loop = start_loop(run)
            fit(loop)
            return finish(loop)
    finally:
        if started_pg:
            D.shutdown()


def read_resume(cfg: TrainConfig) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The run folder checked for what ``cfg`` asks; on ``--resume``, the checkpoint and the settings it recorded."""
    out = Path(cfg.out)
    check_run_folder(out, cfg.resume)
    if not cfg.resume:
        return None, {}
    ckpt_path = out / "checkpoint.pt"
    if D.rank() == 0:  # a writer killed mid-write (SIGKILL, power) leaves its temporary file; the rename never came
        for path in remove_dead_temporaries(out, ("checkpoint.pt", "encoder.pt", "config.json")):
            log.info("removed %s: left by a writer that was killed", path)
    ckpt = load_checkpoint(ckpt_path)
    if ckpt["method"] != cfg.method:
        raise CheckpointError(f"{ckpt_path}: checkpoint of method {ckpt['method']!r}, not {cfg.method!r}")
    return ckpt, {**ckpt.get("config", {}), "arch": ckpt["arch"]}


def resolve_run_settings(cfg: TrainConfig, method_cls: type[Method], ckpt: dict[str, Any] | None,
                         recorded: dict[str, Any]) -> RunSettings:
    """The settings the run uses (given, else recorded, else defaults), checked; ``workers`` resolved to a number."""
    settings = resolve_settings(cfg, method_cls, recorded)
    check_settings(settings)
    if ckpt is not None and ckpt["arch"] != settings.arch:
        raise CheckpointError(f"{Path(cfg.out) / 'checkpoint.pt'}: checkpoint of architecture {ckpt['arch']!r}, "
                              f"not {settings.arch!r}")
    if ckpt is not None:
        warn_inexact_resume(recorded, settings)
    # workers: given, else recorded, else this process's share of the CPUs (recorded as used, in run_config)
    return replace(settings, workers=default_workers() if settings.workers is None else settings.workers)


def open_source(cfg: TrainConfig, method_cls: type[Method], settings: RunSettings) -> Source:
    """The data set ``cfg.data`` as the method's data kind, for the architecture's input size."""
    if cfg.data is None:
        raise DataError("no data set given")
    # An encoder is built to learn its input size (the labelled loader resizes to it); its draws from the global
    # generator do not matter: the method is built after a fresh seed.
    design_size = int(build_encoder(settings.arch).input_size)
    return method_cls.make_source(cfg.data, design_size, settings.shuffle_buffer, cfg.manifest)


def run_context(cfg: TrainConfig, settings: RunSettings, source: Source, device: torch.device) -> RunContext:
    world = D.world_size()
    spe = steps_per_epoch(source.num_samples, settings.batch_size, world)
    epochs, max_steps = settings.epochs, settings.max_steps
    total = epochs * spe if max_steps is None else min(epochs * spe, max_steps)
    amp, _ = amp_choice(cfg.amp, settings.amp, device)
    return RunContext(total_epochs=epochs, steps_per_epoch=spe, total_steps=total, device=device, amp=amp,
                      world_size=world)


def amp_choice(given: bool | None, settled: bool | None, device: torch.device) -> tuple[bool, str]:
    """bf16 autocast or not, and why: ``--amp``/``--no-amp`` when ``given``, else what a resumed run recorded
    (``settled``), else the device's default (:func:`train.process.devices.default_amp`)."""
    if given is not None:
        return given, "--amp" if given else "--no-amp"
    if settled is not None:
        return settled, "as the resumed run recorded"
    return default_amp(device)


def build_method(method_cls: type[Method], opts: Any, settings: RunSettings, source: Source, ctx: RunContext,
                 channels_last: bool) -> Method:
    """The method, on its device and configured for ``ctx``, with rank 0's weights on every rank."""
    torch.manual_seed(settings.seed)
    try:
        method = method_cls(opts, settings.arch, source.num_samples, source.num_classes, ctx.device)
    except ValueError as e:
        raise ToolkitError(str(e)) from None
    method.to(ctx.device)
    if channels_last:
        method.to(memory_format=torch.channels_last)
        method.channels_last = True
    method.configure(ctx)
    D.broadcast_module(method)
    method.replicate()  # DistributedDataParallel for a single-optimiser method under torchrun
    return method


def prepare_run(cfg: TrainConfig, device: torch.device, source: Source | None = None) -> Run:
    """Everything before the first step: folder and resume checks, settings, data, the method (restored on resume)."""
    method_cls = get_method(cfg.method)
    ckpt, recorded = read_resume(cfg)
    settings = resolve_run_settings(cfg, method_cls, ckpt, recorded)
    opts = build_options(method_cls, resolve_options(cfg, method_cls, recorded), settings.arch)
    seed = settings.seed
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)
    source = source if source is not None else open_source(cfg, method_cls, settings)
    identity = data_identity(source)
    if ckpt is not None:
        check_resume_matches(Path(cfg.out) / "checkpoint.pt", recorded,
                             {**asdict(settings), "options": asdict(opts), "data_identity": identity})
    ctx = run_context(cfg, settings, source, device)
    method = build_method(method_cls, opts, settings, source, ctx, cfg.channels_last)
    monitors = open_monitors(settings, method, source)  # names and data checked before any file is written
    if D.rank() > 0:
        # Dropout masks (global and CUDA generators) differ per rank, as augmentation does; the weights above were
        # built from the common seed and broadcast. Rank 0 keeps the stream a single process has.
        torch.manual_seed(rank_seed(seed, D.rank()))
    generator = torch.Generator().manual_seed(seed * 7919 + D.rank() + 1)
    start = Position()
    if ckpt is not None:
        start = restore_checkpoint(ckpt, Path(cfg.out) / "checkpoint.pt", method, generator, device)
        if monitors.probe is not None:
            monitors.probe.load_checkpoint_state(ckpt.get("online_probe"), str(Path(cfg.out) / "checkpoint.pt"))
    return Run(cfg, Path(cfg.out), settings, method, source, ctx, generator, start,
               run_config(cfg, settings, method, source, ctx, identity), ckpt, monitors)


def run_config(cfg: TrainConfig, settings: RunSettings, method: Method, source: Source, ctx: RunContext,
               identity: dict[str, Any]) -> dict[str, Any]:
    """What config.json, the checkpoint and encoder.pt record: only values this process applies (on resume, those
    checked equal the recorded ones). The device and bf16 autocast are recorded as used ("auto" and amp on a CPU run
    would say nothing true), with the step the run stops at, which --max-steps or --epochs decides."""
    return {
        **{k: v for k, v in asdict(cfg).items() if k not in ("options", "resume")},
        **asdict(settings), "world_size": ctx.world_size,
        "device": str(ctx.device), "amp": ctx.amp, "amp_reason": amp_choice(cfg.amp, settings.amp, ctx.device)[1],
        "total_steps": ctx.total_steps,
        "options": method.options_dict(), "data_description": source.description,
        "num_samples": source.num_samples, "steps_per_epoch": ctx.steps_per_epoch,
        "render_config": getattr(source, "render_config", None), "data_identity": identity,
    }


# ---- the loop ------------------------------------------------------------------------------------------------------
@dataclass
class Loop:
    """A run in progress: its position and the units that save, log and watch for a stop."""

    run: Run
    pos: Position
    checkpointer: Checkpointer
    metrics: MetricsWriter
    stop: StopSignals
    pbar: tqdm
    created_out: bool  # the run folder did not exist before this run (removed again if it saves nothing)
    t_start: float


def start_loop(run: Run) -> Loop:
    """Write config.json and the first metrics line (rank 0); the loop at the run's start position."""
    out, cfg = run.out, run.cfg
    metrics_path = out / "metrics.jsonl"
    metrics = MetricsWriter(metrics_path, run.device)
    created_out = not out.exists()
    resumed = run.resumed_from is not None
    if D.is_main():
        if resumed:
            truncate_metrics(metrics_path, run.start.step)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(plain(run.run_config), indent=2) + "\n")
        if not resumed and metrics_path.exists():
            # left by a run stopped before its first checkpoint (check_run_folder): its lines describe no weights
            log.info("%s: replacing the metrics of a run that stopped before its first checkpoint", metrics_path)
            metrics_path.unlink()
        start_events(run.monitors, out, cfg.tensorboard, run.start.step if resumed else None)
        metrics.listeners.append(run.monitors.record)
        metrics.write(event="resume" if resumed else "start", step=run.start.step, epoch=run.start.epoch,
                      method=cfg.method, arch=run.method.arch, world_size=run.ctx.world_size, device=str(run.device))
    checkpointer = Checkpointer(out / "checkpoint.pt", run.method, run.run_config, run.generator, run.device,
                                resumed_at=run.start.step if resumed else None)
    checkpointer.online_probe = run.monitors.probe
    pbar = tqdm(total=run.ctx.total_steps, initial=run.start.step, disable=not (cfg.progress and D.is_main()),
                desc=f"{cfg.method}/{run.method.arch}", unit="step", dynamic_ncols=True)
    stop = StopSignals(sync_every=run.settings.log_every)
    return Loop(run, Position(**asdict(run.start)), checkpointer, metrics, stop, pbar, created_out,
                time.perf_counter())


def fit(loop: Loop) -> None:
    """Train until the run's last step, then check the ranks agree and save; on Ctrl-C or SIGTERM, stop after the
    step in flight and save. A fresh run that fails before its first checkpoint leaves no files behind."""
    run, pos = loop.run, loop.pos
    run.method.train()
    loop.stop.install()  # only around the loop: before it a Ctrl-C has nothing to save and ends the start-up at once
    try:
        while pos.step < run.ctx.total_steps:
            if loop.stop.requested(pos.step, run.device):
                stop_on_signal(loop)
            train_one_epoch(loop)
        flush_metrics(loop)
        if run.monitors.knn is not None and run.monitors.knn_step != pos.step:
            evaluate_knn(loop)  # the run's end, when no epoch end just measured it
        D.check_in_sync(run.method)
        loop.checkpointer.save_unless_saved(pos)
        write_encoder(loop)
    except BaseException:
        if D.is_main() and run.resumed_from is None and loop.checkpointer.last_saved < 0:
            remove_unsaved_run(run.out, loop.created_out)
        raise
    finally:
        loop.stop.restore()
        loop.pbar.close()


def train_one_epoch(loop: Loop) -> None:
    """The steps of the current epoch from the loop's position, up to the epoch's end or the run's last step."""
    run, pos, method = loop.run, loop.pos, loop.run.method
    settings, spe, total = run.settings, run.ctx.steps_per_epoch, run.ctx.total_steps
    start_epoch(loop)
    batches = epoch_batches(run.source, pos.epoch, settings.batch_size, spe, skip=pos.batch_in_epoch,
                            seed=settings.seed, workers=settings.workers, pin_memory=run.device.type == "cuda")
    for batch in batches_until_stopped(loop, batches):
        batch = batch.to(run.device)
        if pos.batch_in_epoch == 0:  # the epoch's first batch (not a resumed epoch's): pictures of its views
            log_views(run.monitors, method, batch.images, settings.seed, pos.epoch, pos.step)
        with amp_autocast(run.device.type, run.ctx.amp):
            values = method.training_step(batch, run.generator)
        if run.monitors.probe is not None:
            values = {**values, **run.monitors.probe.step(method.encoder, batch.images, batch.labels)}
        loop.metrics.record(values, method.images_per_step(batch))
        pos.step += 1
        pos.batch_in_epoch += 1
        method.on_step_end(pos.step)
        loop.pbar.update(1)
        if pos.step % settings.log_every == 0 or pos.step == total:
            flush_metrics(loop)
        if settings.ckpt_every and pos.step % settings.ckpt_every == 0 and pos.batch_in_epoch < spe:
            loop.metrics.check_finite(pos, loop.checkpointer.last_good)
            loop.checkpointer.save(pos)
        if pos.step >= total:
            break
        # mid-epoch only: at the epoch's last batch the epoch end below runs first, then fit's check
        if pos.batch_in_epoch < spe and loop.stop.requested(pos.step, run.device):
            stop_on_signal(loop)
    if pos.batch_in_epoch >= spe:  # a full epoch: advance schedules, checkpoint, export
        method.epoch_end()
        pos.epoch += 1
        pos.batch_in_epoch = 0
        flush_metrics(loop)
        if knn_due(run.monitors, pos.epoch):
            evaluate_knn(loop)  # before the checkpoint: a run killed in between redoes the line on resume
        loop.checkpointer.save(pos)
        write_encoder(loop)


def evaluate_knn(loop: Loop) -> None:
    """The k-NN monitor's record at the loop's position (rank 0, which holds the monitor)."""
    monitors, pos = loop.run.monitors, loop.pos
    started = time.perf_counter()
    result = monitors.knn.evaluate(loop.run.method.encoder)
    monitors.knn_step = pos.step
    loop.metrics.write(event="knn", step=pos.step, epoch=pos.epoch, **result,
                       seconds=round(time.perf_counter() - started, 3))


def start_epoch(loop: Loop) -> None:
    """The method's ``on_epoch_start`` (DeepCluster's clustering pass), its metrics logged."""
    run, pos = loop.run, loop.pos
    settings = run.settings
    ctx = EpochContext(source=run.source, epoch=pos.epoch, batch_size=settings.batch_size, seed=settings.seed,
                       workers=settings.workers, pin_memory=run.device.type == "cuda",
                       autocast=lambda: amp_autocast(run.device.type, run.ctx.amp), progress=run.cfg.progress)
    try:
        stats = run.method.on_epoch_start(ctx)
    except ValueError as e:
        raise ToolkitError(str(e)) from None
    except Exception:
        if not loop.stop.signalled or D.is_dist():
            raise
        stop_on_signal(loop)  # as in batches_until_stopped; the epoch's start follows a checkpoint
    if stats:
        loop.metrics.write(event="epoch_start", step=pos.step, epoch=pos.epoch, **stats)


def batches_until_stopped(loop: Loop, batches: Iterable[Batch]) -> Iterator[Batch]:
    """``batches``, stopping with a saved checkpoint when a stop signal also ended the loader's workers."""
    it = iter(batches)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except Exception:
            # a scheduler's SIGTERM also ends the loader's workers, which the next fetch reports; the model is
            # between steps here, so the stop can still save (one process only: ranks would disagree on the step)
            if not loop.stop.signalled or D.is_dist():
                raise
            stop_on_signal(loop)
        yield batch


def flush_metrics(loop: Loop) -> None:
    lr = next(iter(loop.run.method.optimizers.values())).param_groups[0]["lr"]
    vals = loop.metrics.flush(loop.pos, lr, loop.checkpointer.last_good)
    if vals:
        loop.pbar.set_postfix(loss=f"{vals.get('loss', float('nan')):.4f}", img_s=f"{vals['images_per_s']:,.0f}",
                              refresh=False)


def stop_on_signal(loop: Loop) -> None:
    """Save after the step in flight and raise :class:`Interrupted` (exit status 130 at the command line)."""
    pos, out = loop.pos, loop.run.out
    if pos.step == 0:
        raise Interrupted(f"{out}: interrupted before the first step; nothing to save")
    flush_metrics(loop)  # raises instead of saving when the loss went non-finite
    loop.checkpointer.save_unless_saved(pos)
    loop.metrics.write(event="interrupted", step=pos.step, epoch=pos.epoch)
    raise Interrupted(f"{loop.checkpointer.path}: interrupted at step {pos.step} of {loop.run.ctx.total_steps}, "
                      f"saved; --resume continues")


def write_encoder(loop: Loop) -> None:
    if D.is_main():
        run, pos = loop.run, loop.pos
        save_encoder(run.out / "encoder.pt", run.method.encoder, run.method.arch,
                     {**run.run_config, "step": pos.step, "epoch": pos.epoch})


def finish(loop: Loop) -> dict[str, Any]:
    """The run's summary, also written as metrics.jsonl's last line."""
    pos, metrics = loop.pos, loop.metrics
    elapsed = time.perf_counter() - loop.t_start
    summary = {"step": pos.step, "epoch": pos.epoch, "out": str(loop.run.out), "seconds": elapsed,
               "images_per_s": metrics.images_total / max(elapsed, 1e-9), **metrics.last_logged}
    metrics.write(event="end", **summary)
    D.barrier()
    return summary
