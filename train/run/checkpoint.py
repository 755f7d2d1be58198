"""Training checkpoints: what a run saves to continue exactly where it stopped, and how it is restored.

A checkpoint holds the method's weights, every optimiser's and scheduler's state, the method's extra state
(DeepCluster's assignments, MonoGAN's step count), every rank's random streams, the position in the run (epoch, step,
batch within the epoch) and the run's recorded settings. It is written atomically (``atomic_torch_save``): a
killed writer never leaves a half-written ``checkpoint.pt``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.errors import CheckpointError
from train.methods import Method
from train.models.encoder_io import atomic_torch_save, load_torch_file, plain
from train.process import distributed as D

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "single-image-ssl/checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class Position:
    """Where a run is: ``step`` optimisation steps done over the run, ``batch_in_epoch`` of them in ``epoch``."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """This process's random streams: the global CPU one, the augmentation generator and, on CUDA, the generator of
    the one device the process trains on (not every visible GPU's: a resume may see fewer, or other, GPUs)."""
    state = {"torch": torch.get_rng_state(), "augment": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
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


def restore_checkpoint(ckpt: dict[str, Any], path: Path, method: Method, generator: torch.Generator,
                       device: torch.device) -> Position:
    """Load ``ckpt`` (read from ``path``) into the configured ``method`` and this rank's random streams; the position
    the run continues from. A checkpoint written by another number of ranks restarts the random streams."""
    try:
        method.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit this {ckpt['method']}/{ckpt['arch']} model "
                              f"({str(e).splitlines()[0]})") from None
    for name, o in method.optimizers.items():
        o.load_state_dict(ckpt["optimizers"][name])
    for name, s in method.schedulers.items():
        s.load_state_dict(ckpt["schedulers"][name])
    try:
        method.load_extra_state(ckpt.get("extra", {}))
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    rngs = ckpt.get("rng", [])
    if len(rngs) == D.world_size():
        set_rng_state(rngs[D.rank()], generator, device)
    else:
        log.warning("checkpoint written by %d ranks, resuming on %d: RNG streams restart", len(rngs), D.world_size())
    return Position(int(ckpt["epoch"]), int(ckpt["step"]), int(ckpt["batch_in_epoch"]))


class Checkpointer:
    """Writes ``checkpoint.pt`` (rank 0; every rank contributes its random streams) and remembers the last step saved.

    ``last_good`` is the step of the last checkpoint written, -1 before the first: what a non-finite loss or an
    interrupt reports, and what a failed fresh run checks before removing its files.
    """

    def __init__(self, path: Path, method: Method, run_config: dict[str, Any], generator: torch.Generator,
                 device: torch.device, resumed_at: int | None) -> None:
        self.path, self.method, self.run_config = path, method, run_config
        self.generator, self.device = generator, device
        self.last_saved = resumed_at if resumed_at is not None else -1
        # train.monitors.online_probe.OnlineProbe, saved beside the method when the run has one
        self.online_probe: Any = None

    def save(self, pos: Position) -> None:
        rngs = D.all_gather_object(rng_state(self.generator, self.device))
        if D.is_main():
            method = self.method
            atomic_torch_save({
                "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "method": method.name, "arch": method.arch, "config": plain(self.run_config),
                "epoch": pos.epoch, "step": pos.step, "batch_in_epoch": pos.batch_in_epoch,
                "model": {k: v.detach().cpu() for k, v in method.state_dict().items()},
                "optimizers": {n: o.state_dict() for n, o in method.optimizers.items()},
                "schedulers": {n: s.state_dict() for n, s in method.schedulers.items()},
                "extra": method.extra_state(), "rng": rngs,
                **({} if self.online_probe is None else {"online_probe": self.online_probe.checkpoint_state()}),
            }, self.path)
        self.last_saved = pos.step

    def save_unless_saved(self, pos: Position) -> None:
        if self.last_saved != pos.step:
            self.save(pos)

    @property
    def last_good(self) -> str:
        """The last checkpoint written, as a reader wants it named."""
        return f"{self.path} (step {self.last_saved})" if self.last_saved >= 0 else "none written yet"
