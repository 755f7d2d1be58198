"""TensorBoard event files of a run, in ``OUT/tensorboard/``: every scalar of ``metrics.jsonl`` and pictures of the
method's augmented views, so that ``tensorboard --logdir runs`` shows every run.

Events are written synchronously, one whole record per append (:func:`common.fileio.append_bytes`), rather than by
``torch.utils.tensorboard.SummaryWriter``: its writer thread reports a failed write (a full disk) as a traceback on
stderr and only on a later call. Here a failed write is one warning line naming the file, after which the run goes
on without TensorBoard: pictures are not worth a run. The summaries themselves are built by torch's summary
functions and framed by tensorboard's own record writer.

A resumed run starts a new event file whose first event is a ``SessionLog.START`` at the step after the checkpoint's
(what ``SummaryWriter(purge_step=...)`` writes): TensorBoard then drops the events of earlier files from that step on,
which the interrupted run logged after its checkpoint and the resumed run logs again.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from common.fileio import append_bytes

log = logging.getLogger(__name__)

FOLDER = "tensorboard"
IMAGES_PER_VIEW = 16
# metrics.jsonl lines that are not measurements (their numbers restate a position or a configuration)
NOT_SCALARS = frozenset({"start", "resume", "end", "interrupted", "nonfinite"})
NOT_A_SCALAR_KEY = frozenset({"step", "epoch", "time", "event", "knn_k"})
_file_numbers = itertools.count()  # two runs in one process within a second still get two files


class EventLog:
    """One event file of a run, written by rank 0; every method a no-op once disabled (or a write failed)."""

    def __init__(self, run_folder: Path, resumed_at: int | None = None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.folder = run_folder / FOLDER
        self.path = self.folder / (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                                   f"{os.getpid()}.{next(_file_numbers):04d}")
        if not enabled:
            return
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._give_up(e)
            return
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if resumed_at is not None:  # the resumed run logs the steps after its checkpoint's again
            self._write(Event(wall_time=time.time(), step=resumed_at + 1,
                              session_log=SessionLog(status=SessionLog.START)))

    def _give_up(self, error: OSError) -> None:
        self.enabled = False
        log.warning("%s: %s; TensorBoard events off for the rest of the run", self.path,
                    error.strerror or error)

    def _write(self, event: Any) -> None:
        from tensorboard.summary.writer.record_writer import RecordWriter

        if not self.enabled:
            return
        record = io.BytesIO()
        RecordWriter(record).write(event.SerializeToString())
        try:
            append_bytes(self.path, record.getvalue())
        except OSError as e:
            self._give_up(e)

    def _summary(self, step: int, summary: Any) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self._write(Event(wall_time=time.time(), step=step, summary=summary))

    def record(self, rec: dict[str, Any]) -> None:
        """A ``metrics.jsonl`` line as scalars at its step: a training window's values under ``train/``, an event's
        (``knn``, ``epoch_start``) under its name; strings and the lines that only mark a position are skipped."""
        if not self.enabled or rec.get("event") in NOT_SCALARS or "step" not in rec:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        group = rec.get("event", "train")
        values = [Summary.Value(tag=f"{group}/{key}", simple_value=float(value)) for key, value in rec.items()
                  if key not in NOT_A_SCALAR_KEY and isinstance(value, (int, float)) and not isinstance(value, bool)]
        if values:
            self._summary(int(rec["step"]), Summary(value=values))

    def views(self, step: int, views: list[Tensor]) -> None:
        """One picture per view (``views/0``, ``views/1``, ...): a grid of its first 16 images, which are in the
        methods' input range (-1, 1)."""
        if not self.enabled or not views:
            return
        from torch.utils.tensorboard.summary import image
        from torchvision.utils import make_grid

        for i, batch in enumerate(views):
            pictures = batch[:IMAGES_PER_VIEW].detach().float().cpu().add(1).div(2).clamp(0, 1)
            if pictures.shape[1] == 1:  # a grey view (a Sobel front end's input is still RGB; future methods)
                pictures = pictures.expand(-1, 3, -1, -1)
            grid = make_grid(pictures, nrow=8, padding=2, pad_value=1.0)
            self._summary(step, image(f"views/{i}", grid, dataformats="CHW"))


def view_generator(seed: int, epoch: int) -> torch.Generator:
    """The pictures' own random stream, from (seed, epoch): drawing from the run's augmentation generator would
    change the training, and a resumed run would draw other pictures."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + 424_242) % 2**63)


def remove_event_files(out: Path) -> None:
    """Delete the TensorBoard events of a run that saved nothing (this module writes only under ``OUT/FOLDER``)."""
    folder = out / FOLDER
    if folder.is_dir():
        for path in folder.glob("events.out.tfevents.*"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: something else was put there
            folder.rmdir()
