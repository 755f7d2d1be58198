"""A run's ``metrics.jsonl``: windows of per-step values averaged over ranks, events, and the non-finite check.

Per-step values stay on the device until a log or checkpoint step (a ``.item()`` per step would stall the GPU);
:meth:`MetricsWriter.flush` averages each window's values over ranks and writes one line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from common.errors import NonFiniteLossError
from common.fileio import append_line, atomic_write_text
from train.models.encoder_io import plain
from train.process import distributed as D
from train.run.checkpoint import Position


def truncate_metrics(path: Path, step: int) -> None:
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


class MetricsWriter:
    """Collects each step's values, writes ``metrics.jsonl`` lines (rank 0 only) and stops on a non-finite loss."""

    def __init__(self, path: Path, device: torch.device) -> None:
        self.path = path
        self.enabled = D.is_main()
        self.world = D.world_size()
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.last_logged: dict[str, float] = {}
        self.images_total = 0
        # called with each line written (rank 0), e.g. the TensorBoard event file's scalars
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._new_window()

    def _new_window(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}  # per key: the GAN generator's loss exists only every n_critic steps
        self.steps, self.images, self.t_window = 0, 0, time.perf_counter()

    def write(self, **rec: Any) -> None:
        if self.enabled:
            line = {"time": round(time.time(), 3), **plain(rec)}
            append_line(self.path, json.dumps(line))
            for listener in self.listeners:
                listener(line)

    def record(self, values: dict[str, Tensor], images: int) -> None:
        """One step's values (detached device scalars, 'loss' among them) and the images it consumed."""
        self.nonfinite |= ~torch.isfinite(values["loss"])
        for k, v in values.items():
            self.sums[k] = self.sums[k] + v.float() if k in self.sums else v.float().clone()
            self.counts[k] = self.counts.get(k, 0) + 1
        self.steps += 1
        self.images += images
        self.images_total += images * self.world

    def check_finite(self, pos: Position, last_good: str) -> None:
        """Raise :class:`NonFiniteLossError` when any rank's loss was non-finite at any step so far."""
        if bool(D.all_reduce_sum(self.nonfinite.float().clone())):
            self.write(event="nonfinite", step=pos.step, epoch=pos.epoch)
            raise NonFiniteLossError(f"loss became non-finite by step {pos.step} (epoch {pos.epoch}); stopped. "
                                     f"Last good checkpoint: {last_good}")

    def flush(self, pos: Position, lr: float, last_good: str) -> dict[str, float]:
        """Check the losses, then write the window's averages (over steps, then ranks) as one line; the values."""
        self.check_finite(pos, last_good)
        if self.steps == 0:
            return {}
        names = sorted(self.sums)
        vec = D.all_reduce_sum(torch.stack([self.sums[n] / self.counts[n] for n in names]).float()) / self.world
        vals = dict(zip(names, vec.tolist(), strict=True))
        ips = self.images * self.world / max(time.perf_counter() - self.t_window, 1e-9)
        self.last_logged = {**vals, "images_per_s": ips}
        self.write(step=pos.step, epoch=pos.epoch, lr=lr, images_per_s=round(ips, 2),
                   **{k: round(v, 6) for k, v in vals.items()})
        self._new_window()
        return self.last_logged
