"""A clean stop on Ctrl-C (SIGINT) or a scheduler's SIGTERM: finish the step in flight, save a checkpoint, exit.

Without this an interrupt lands mid-step and everything since the last periodic checkpoint is lost (up to
``--ckpt-every`` steps, or the whole run before its first checkpoint); `experiments/reproduce.py --time-limit` and
batch schedulers interrupt runs as a matter of course. A second signal aborts at once, as Ctrl-C usually does.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

import torch

from train.process import distributed as D

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Between ``install`` and ``restore``, the first SIGINT/SIGTERM only records a request; ``requested`` tells the
    loop when to act.

    Under torchrun every rank must stop at the same step (the next collective would hang otherwise), so with
    more than one rank the request is agreed by an all-reduce, and only at steps that are multiples of
    ``sync_every`` (the loop's logging steps, which synchronise anyway). Outside the main thread signal handlers
    cannot be installed, and ``install`` does nothing.
    """

    def __init__(self, sync_every: int = 1) -> None:
        self.sync_every = max(1, sync_every)
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # asked twice: stop waiting for the step to end
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s: stopping after the current step and saving a checkpoint (send it again to abort)",
                    signal.Signals(signum).name)

    @property
    def signalled(self) -> bool:
        """Whether this process has received a stop signal (``requested`` says whether to act on it now)."""
        return self.signum is not None

    def requested(self, step: int, device: torch.device) -> bool:
        """Whether to stop now, at ``step``; ``device`` is where the rank's collectives run (CUDA for NCCL)."""
        if not D.is_dist():
            return self.signum is not None
        if step % self.sync_every:
            return False
        flag = torch.tensor(float(self.signum is not None), device=device)
        return bool(D.all_reduce_sum(flag) > 0)


def quiet_worker_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a worker outlives the Ctrl-C that the main process turns into a clean stop
    (Ctrl-C signals the whole process group), and ends quietly (status 0) on SIGTERM, which is how the loader and
    multiprocessing end workers that are still running, and what a scheduler sends to every process of a job.
    A worker killed by a signal would make torch raise in the main process at any point, mid-step included; one
    that exits is reported when the next batch is fetched, at a step boundary, where the main process can save."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_quietly)


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    os._exit(0)
