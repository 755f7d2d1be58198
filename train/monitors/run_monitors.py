"""What watches a run without changing it: the k-NN monitor (``--knn-data``), the online linear probe
(``--online-probe``) and the TensorBoard event file (on unless ``--no-tensorboard``), as the loop holds them.

Everything here is checked when the run is prepared, before any file is written: a tap the encoder lacks, monitor
data without labels, an online probe on a training set without labels. None of them draws from the run's random
streams or leaves the encoder in another mode, so a run trains to the same weights with or without them and
resumes exactly (tests/train/test_monitoring.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from common.errors import DataError, OptionError
from train.data.sources import Source
from train.methods import Method
from train.monitors.knn import KnnMonitor, open_knn_monitor
from train.monitors.online_probe import OnlineProbe
from train.monitors.tensorboard_log import EventLog, remove_event_files, view_generator
from train.process import distributed as D

if TYPE_CHECKING:
    from train.run.settings import RunSettings


@dataclass
class Monitors:
    knn: KnnMonitor | None = None  # rank 0 only
    knn_every: int = 1
    knn_step: int = -1  # the step last measured
    probe: OnlineProbe | None = None  # every rank (its gradients are averaged)
    events: EventLog | None = None  # rank 0, once the run folder exists (start_events)

    def record(self, rec: dict[str, Any]) -> None:
        """A metrics.jsonl line, also as TensorBoard scalars (MetricsWriter's listener)."""
        if self.events is not None:
            self.events.record(rec)


def check_tap(method: Method, tap: str | None, option: str) -> str:
    """``tap`` (default: the encoder's last) checked against the method's encoder, as a usage error."""
    taps = tuple(method.encoder.taps)
    if tap is None:
        return taps[-1]
    if tap not in taps:
        raise OptionError(f"Invalid value for '{option}': {method.arch} has no tap {tap!r}; its taps are "
                          f"{', '.join(taps)}.")
    return tap


def open_monitors(settings: RunSettings, method: Method, source: Source) -> Monitors:
    """The k-NN monitor (its data loaded, on rank 0) and the online probe the settings ask for, every name and
    the data checked first."""
    monitors = Monitors(knn_every=settings.knn_every)
    if settings.online_probe:
        tap = check_tap(method, settings.online_probe_tap, "--online-probe-tap")
        if not source.num_classes:
            raise DataError(f"{source.description}: --online-probe needs a training set with labels (a CIFAR "
                               f"folder or an ImageFolder tree); this one has none")
        monitors.probe = OnlineProbe(method.encoder, tap, int(source.num_classes), method.device)
    if settings.knn_data is not None:
        tap = check_tap(method, settings.knn_tap, "--knn-tap")
        if D.is_main():
            monitors.knn = open_knn_monitor(settings.knn_data, int(method.encoder.input_size), tap,
                                            settings.knn_k, settings.knn_train_size, settings.knn_test_size,
                                            settings.seed, settings.knn_temperature)
    return monitors


def start_events(monitors: Monitors, out: Path, enabled: bool, resumed_at: int | None) -> None:
    """The run's event file (rank 0): a fresh run replaces the events of a run that saved nothing there."""
    if not (enabled and D.is_main()):
        return
    if resumed_at is None:
        remove_event_files(out)
    monitors.events = EventLog(out, resumed_at=resumed_at)


def log_views(monitors: Monitors, method: Method, images: Tensor, seed: int, epoch: int, step: int) -> None:
    """Pictures of the method's augmented views of ``images`` (an epoch's first batch) at ``step``."""
    if monitors.events is None or not monitors.events.enabled:
        return
    with torch.no_grad():
        views = method.example_views(images, view_generator(seed, epoch))
    monitors.events.views(step, views)


def knn_due(monitors: Monitors, epoch: int) -> bool:
    return monitors.knn is not None and epoch % monitors.knn_every == 0
