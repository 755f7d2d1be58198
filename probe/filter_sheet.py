"""`probe filters A.pt B.pt ...`: several encoders' first-layer filters on one sheet, each panel captioned with the
encoder's measured first-tap linear-probe accuracy (the paper's Figure 2).

An accuracy is only ever read from a `probe linear` results.json that belongs to the encoder drawn: the file's
recorded encoder hash must be the encoder's (for random:ARCH, its spec and seed), so a results file of another
run can never caption a panel.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch

from common.errors import DataError, ToolkitError
from probe.encoders import Encoder
from probe.filters import default_scale, filter_grid, filter_notes, first_layer_weight
from probe.report import PAPER_LINEAR, protocol_departures
from probe.results import read_results
from probe.sheets import Panel, save_sheet

PANEL_INCHES = 4.2  # a 96-filter grid per panel, three panels to a row: 1,260 px wide at 100 dpi
MAX_COLUMNS = 3  # the paper's Figure 2 is two rows of three
NO_RESULT = "-"  # --results value for an encoder drawn without an accuracy
NOTE_CHARACTERS = 44  # a reading note's line under a panel: at 10 pt, within the panel's width


@dataclass(frozen=True)
class ProbeAccuracy:
    """One encoder's measured linear-probe top-1 at one tap, and where it was read."""

    tap: str
    top1: float
    data_kind: str
    results: Path
    departures: tuple[str, ...] = ()  # how its protocol differs from the paper's (then said on the panel)

    @property
    def caption(self) -> str:
        differs = ", protocol differs" if self.departures else ""  # as `probe report` says it
        return f"{self.tap} linear probe: {self.top1:.1f}% top-1\n({self.data_kind}{differs})"


def belongs_to(results: dict, encoder: Encoder) -> bool:
    """Whether a results file measured `encoder`: the same encoder.pt bytes, or the same random:ARCH and seed."""
    recorded = results["encoder"]
    if "sha256" in encoder.identity:
        return recorded.get("sha256") == encoder.identity["sha256"]
    return (recorded.get("source") == encoder.source
            and recorded.get("random_init_seed") == encoder.identity.get("random_init_seed"))


def accuracy_from(path: Path, encoder: Encoder, tap: str) -> ProbeAccuracy:
    """`encoder`'s top-1 at `tap` from the linear-probe results file `path`; a ToolkitError when the file is not
    linear-probe results, measured another encoder, or did not probe `tap`."""
    results = read_results(path)  # a DataError names an unreadable or malformed file
    if results["task"] != "linear":
        raise ToolkitError(f"{path}: {results['task']} results, not a linear probe's")
    if not belongs_to(results, encoder):
        raise ToolkitError(f"{path}: probe results of {results['encoder'].get('source')!r}, not of "
                           f"{encoder.source!r} (the encoder's hash differs)")
    if tap not in results["layers"]:
        raise ToolkitError(f"{path}: no {tap} probe (probed: {', '.join(results['layers'])})")
    protocol = results.get("protocol") if isinstance(results.get("protocol"), dict) else {}
    departures = protocol_departures(protocol, results["data"], PAPER_LINEAR)
    return ProbeAccuracy(tap, float(results["layers"][tap]["top1"]), str(results["data"]["kind"]), Path(path),
                         tuple(departures))


def candidate_results(source: str) -> list[Path]:
    """Where the toolkit's layouts put an encoder's probe results: in its run folder (RUN/results.json,
    RUN/*/results.json: `probe linear RUN/encoder.pt --out RUN/probe`), and in a `probes` folder beside the run
    folder or one above it (`make demo`'s SEED/run + SEED/probes/NAME, the reproduce targets' WORK/runs/NAME +
    WORK/probes/NAME)."""
    if ":" in source and not Path(source).exists():  # random:ARCH has no folder
        return []
    run = Path(source).parent
    patterns = [(run, "results.json"), (run, "*/results.json"), (run.parent, "probes/*/results.json"),
                (run.parent.parent, "probes/*/results.json")]
    return sorted({p for folder, pattern in patterns for p in folder.glob(pattern)})


def find_accuracy(encoder: Encoder, tap: str) -> ProbeAccuracy | None:
    """The encoder's measured accuracy at `tap` from the results found beside it (:func:`candidate_results`), or
    None. Several matches: the paper's protocol before a shortened one, then the most training images, then the
    newest."""
    found = []
    for path in candidate_results(encoder.source):
        try:
            found.append((accuracy_from(path, encoder, tap), read_results(path)))
        except (DataError, ToolkitError):  # another run's results, a finetune's, or no such tap: not this one's
            continue
    if not found:
        return None

    def preference(item: tuple[ProbeAccuracy, dict]) -> tuple:
        accuracy, results = item
        used = results["data"].get("train_used")
        return (not accuracy.departures, used if isinstance(used, int) else 0, str(results.get("created", "")))

    return max(found, key=preference)[0]


def accuracies(encoders: list[Encoder], results_files: list[str]) -> list[ProbeAccuracy | None]:
    """Each encoder's first-tap accuracy: from `results_files` (one per encoder, in order; NO_RESULT for none)
    when given, else from the results found beside it."""
    if results_files and len(results_files) != len(encoders):
        raise ToolkitError(f"--results given {len(results_files)} times for {len(encoders)} encoders (give it once "
                           f"per encoder, in their order, '{NO_RESULT}' for an encoder without one; or leave it out "
                           "to use the results found beside each encoder)")
    if not results_files:
        return [find_accuracy(encoder, encoder.taps[0]) for encoder in encoders]
    return [None if path == NO_RESULT else accuracy_from(Path(path), encoder, encoder.taps[0])
            for encoder, path in zip(encoders, results_files, strict=True)]


def panel_labels(encoders: list[Encoder], labels: list[str] | None, default: list[str]) -> list[str]:
    """The panels' names: `labels` (one per encoder) when given, else `default`."""
    if labels is None:
        return default
    if len(labels) != len(encoders):
        raise ToolkitError(f"--labels names {len(labels)} panels for {len(encoders)} encoders")
    return labels


def filter_panel(encoder: Encoder, label: str, accuracy: ProbeAccuracy | None, columns: int | None,
                 scale: int | None) -> Panel:
    """One encoder's grid, named `label`, its accuracy (or that none was found) and any reading note under it."""
    weight = first_layer_weight(encoder.module)
    scale = scale or default_scale(weight, columns)
    with torch.no_grad():  # the sheet shrinks a grid to about 400 px: 1 px borders would vanish in places
        grid = filter_grid(weight, columns, scale, border=max(1, scale // 3))
    tap = encoder.taps[0]
    measured = accuracy.caption if accuracy else f"{tap} linear probe: no result found"
    notes = [textwrap.fill(note, NOTE_CHARACTERS) for note in filter_notes(weight)]
    return Panel(label, grid, "\n".join([measured, *notes]))


def save_filter_sheet(panels: list[Panel], out: Path, tap: str) -> Path:
    """The panels in rows of at most MAX_COLUMNS under one title saying how the filters are drawn."""
    columns = 2 if len(panels) == 4 else min(len(panels), MAX_COLUMNS)  # four as a square, not three and one
    rows = [panels[i:i + columns] for i in range(0, len(panels), columns)]
    title = (f"{tap} filters, each scaled into (-1, 1) by its largest weight (zero: mid-grey)\n"
             f"under each, the encoder's measured {tap} linear-probe top-1")  # two lines: fits a 2-panel sheet
    return save_sheet(rows, out, title, panel_inches=PANEL_INCHES)
