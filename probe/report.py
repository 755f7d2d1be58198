"""`probe report`: measured results in the paper's table layout, beside the paper's numbers, with differences
and a per-layer plot."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from common.errors import ToolkitError
from common.fileio import atomic_write_bytes
from probe.paper import PaperPart, PaperRow, paper_parts, paper_source
from probe.protocols import FinetuneProtocol, ProbeProtocol
from probe.results import display_path, encoder_label, md_code, md_text, read_results

# the paper's data set behind each data set kind (the JPEG copy of CIFAR-10 stands in for CIFAR-10)
DATASET_OF_KIND = {"cifar10": "cifar10", "cifar10-jpg": "cifar10", "cifar100": "cifar100",
                   "imagefolder": "imagenet"}
AGREEMENT_POINTS = 5.0  # differences beyond this many points are flagged for investigation
MEASURED_MARKERS = ("o", "s", "^", "D")  # told apart when several measurements share a paper row's colour


@dataclass
class Measured:
    """One results file, as a row to set beside the paper's."""

    path: Path
    name: str
    dataset: str
    task: str
    values: dict[str, float]
    key: str | None  # what picks the paper row to compare with: a row's match key, a part of its label, or None
    departures: tuple[str, ...] = ()  # how its protocol differs from the paper's; then it is shown, never judged
    key_given: bool = False  # the row was named with --against (so a row that matches nothing is an error)
    shown_path: str = ""  # `path` as the report shows it (an absolute one relative to the report's folder)

    @property
    def where(self) -> str:
        """Its file as the report shows it."""
        return self.shown_path or str(self.path)

    @property
    def label(self) -> str:
        """Its name in tables and legends, saying when the protocol was not the paper's."""
        return f"{self.name} (protocol differs)" if self.departures else self.name


NO_PAPER_ROW = "none"  # --against none: show a result without comparing it with any paper row

# The paper's protocols as this toolkit runs them by default (section 4.1 for the linear probes; Tables 4 and 5
# freeze conv1-conv2, or nothing, after taking them from the encoder), and the settings a result is compared on.
PAPER_LINEAR = ProbeProtocol()
PAPER_FINETUNE = {"finetune": FinetuneProtocol(), "linear-after-finetune": FinetuneProtocol(freeze="none")}
SCHEDULE_SETTINGS = ("epochs", "lr", "milestones", "lr_divisor", "momentum", "weight_decay", "batch_size")


def measured_from(path: Path, against: str | None = None) -> Measured:
    results = read_results(path)
    encoder, data = results["encoder"], results["data"]
    dataset = DATASET_OF_KIND.get(data["kind"], data["kind"])
    task = results["task"]
    if task == "linear":
        values = {layer: row["top1"] for layer, row in results["layers"].items()}
        if encoder.get("config", {}).get("probe_finetune"):
            task = "linear-after-finetune"
    elif task == "classify":  # an encoder's own classifier: no paper table, a row of top-1 and top-5
        values = {k: results["scores"][k] for k in ("top1", "top5") if _is_score(results["scores"].get(k))}
    else:
        values = {"top1": results["scores"]["top1"]}
    key = None if against == NO_PAPER_ROW else against or _default_key(encoder)
    # a classify result trains nothing, so only its test subset can depart from a protocol
    departures = protocol_departures({} if task == "classify" else _mapping(results.get("protocol")), data,
                                     PAPER_LINEAR if task != "finetune" else PAPER_FINETUNE["finetune"])
    if task == "linear-after-finetune":  # the fine-tuning that made the encoder is part of Table 5's protocol
        tuned = _mapping(encoder["config"]["probe_finetune"])
        departures += [f"fine-tuning: {d}" for d in protocol_departures(
            _mapping(tuned.get("protocol")), _mapping(tuned.get("data")), PAPER_FINETUNE[task])]
    return Measured(Path(path), f"{encoder_label(str(encoder['source']))} on {data['kind']}", dataset, task, values,
                    key, tuple(departures), key_given=against is not None and against != NO_PAPER_ROW)


def protocol_departures(protocol: dict, data: dict, paper: ProbeProtocol | FinetuneProtocol) -> list[str]:
    """How a recorded protocol departs from the paper's: its schedule and optimiser settings, 1-crop testing of
    ImageNet-style data, the layers frozen and kept, and training or test sets cut down with --limit-train /
    --limit-test. Settings a results file does not record are not held against it."""
    departures = []
    names = SCHEDULE_SETTINGS + (("freeze", "keep") if isinstance(paper, FinetuneProtocol) else ())
    for name in names:
        if name in protocol and _plain(protocol[name]) != _plain(getattr(paper, name)):
            departures.append(f"{name.replace('_', ' ')} {_setting(protocol[name])} "
                              f"(paper: {_setting(getattr(paper, name))})")
    if data.get("style") != "cifar" and protocol.get("ten_crop") is False:
        departures.append("centre-crop testing (paper: 10 crops)")
    for split in ("train", "test"):
        used, size = data.get(f"{split}_used"), data.get(f"{split}_size")
        if isinstance(used, int) and isinstance(size, int) and used < size:
            departures.append(f"{used:,} of {size:,} {split} images")
    return departures


def _is_score(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _setting(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default_key(encoder: dict) -> str | None:
    method = encoder.get("config", {}).get("method")
    if method:  # a trained encoder's method, or a parameter-free one's architecture (random:scattering)
        return str(method).lower()
    return "random" if str(encoder.get("source", "")).startswith("random:") else None


def parts_for(measured: Measured, parts: list[PaperPart]) -> list[PaperPart]:
    return [p for p in parts if p.dataset == measured.dataset and p.task == measured.task]


def tables_showing(measured: Measured, parts: list[PaperPart]) -> list[PaperPart]:
    """The paper table parts a measurement appears in: those with its row when any has it (an ablation row is
    not repeated under Table 3), else every part of its dataset and task (each saying that no row matches)."""
    candidates = parts_for(measured, parts)
    with_row = [p for p in candidates if measured.key and p.find(measured.key) is not None]
    return with_row or candidates


def build_report(paths: list[Path], against: list[str] | None = None, plot_name: str | None = None,
                 base: Path | None = None) -> tuple[str, list[tuple[PaperPart, list[Measured]]]]:
    """The Markdown report and, per paper table part, the measurements shown in it. `base`: the report's folder,
    which absolute RESULTS paths are shown relative to (default: the current folder)."""
    against = list(against or [])
    if len(against) not in (0, 1, len(paths)):
        raise ToolkitError(f"--against given {len(against)} times for {len(paths)} results files "
                           "(give it once for all, or once per file)")
    keys = against * len(paths) if len(against) == 1 else against or [None] * len(paths)
    measured = [measured_from(p, k) for p, k in zip(paths, keys, strict=True)]
    for m in measured:
        m.shown_path = display_path(m.path, base or Path.cwd())
    parts = paper_parts()
    for m in measured:
        _check_against(m, parts)
    showing = [(m, tables_showing(m, parts)) for m in measured]
    groups = []
    for part in parts:
        shown = [m for m, tables in showing if part in tables]
        if shown:
            groups.append((part, shown))
    unmatched = [m for m in measured if not parts_for(m, parts)]

    source = paper_source()
    lines = ["# Measured results against the paper", "",
             f"Paper: {source['paper']} ({source['url']}); "
             f"numbers transcribed from {source['transcribed_from']}.",
             "Values are top-1 accuracy (%). Differences are measured minus paper, in points; "
             f"**bold** differences exceed {AGREEMENT_POINTS:g} points. A result measured with another protocol "
             "than the paper's (fewer epochs, another schedule, a subset of the images...) is marked "
             "\"protocol differs\", with how, and its differences are shown but never judged or bold.", ""]
    for part, shown in groups:
        lines += _part_markdown(part, shown)
    if unmatched:
        lines += _unmatched_markdown(unmatched)
    if plot_name and groups:  # the plot is drawn only when some result matched a paper table
        lines += [f"![per-layer top-1, measured against the paper]({plot_name})", ""]
    return "\n".join(lines), groups


def _check_against(m: Measured, parts: list[PaperPart]) -> None:
    """A row named with --against must exist where the result would be compared: refused, listing the rows."""
    if not m.key_given:
        return
    candidates = parts_for(m, parts)
    if not candidates:
        raise ToolkitError(f"--against {m.key!r}: no paper table holds {m.task} results on {m.dataset} "
                           f"({m.path}); use --against {NO_PAPER_ROW}")
    if not any(p.find(m.key) for p in candidates):
        rows = list(dict.fromkeys(r.label for p in candidates for r in p.rows))
        raise ToolkitError(f"--against {m.key!r}: no paper row matches it for {m.path} ({m.task} on {m.dataset}); "
                           f"rows: {'; '.join(rows)} (or {NO_PAPER_ROW})")


def _unmatched_markdown(unmatched: list[Measured]) -> list[str]:
    """Results no paper table holds (fine-tuning on CIFAR, a packed set), with their scores all the same."""
    lines = ["## Results without a counterpart in the paper", "",
             "The paper has no table for these tasks and data sets; they are shown uncompared.", ""]
    for m in unmatched:
        columns = list(m.values)
        lines += [f"| {m.task} on {m.dataset} | " + " | ".join(columns) + " |",
                  "| --- |" + " ---: |" * len(columns),
                  f"| measured: {md_text(m.label)} | " + " | ".join(_cell(m.values[c]) for c in columns) + " |", ""]
        if m.departures:
            lines += [f"- {md_code(m.where)}: protocol differs from the paper's: {'; '.join(m.departures)}.", ""]
    return lines


def _part_markdown(part: PaperPart, shown: list[Measured]) -> list[str]:
    header = "| | " + " | ".join(part.columns) + " |"
    lines = [f"## {part.title} ({_dataset_name(part.dataset)})", "", part.caption, "", header,
             "| --- |" + " ---: |" * len(part.columns)]
    for row in part.rows:
        lines.append(f"| {row.label} | " + " | ".join(_cell(v) for v in row.values) + " |")
    notes = []
    for m in shown:
        values = [m.values.get(c) for c in part.columns]
        if m.departures:  # not the paper's measurement: plain, labelled, its differences never judged
            lines.append(f"| measured: {md_text(m.label)} | " + " | ".join(_cell(v) for v in values) + " |")
            notes.append(f"{md_code(m.where)}: protocol differs from the paper's: {'; '.join(m.departures)}.")
        else:
            lines.append(f"| **measured: {md_text(m.name)}** | " + " | ".join(f"**{_cell(v)}**" for v in values) + " |")
        row = part.find(m.key) if m.key else None
        if row is None:
            notes.append(f"{md_code(m.where)}: not compared with a paper row" if m.key is None else
                         f"{md_code(m.where)}: no paper row matches {md_text(repr(m.key))} (use --against LABEL)")
            continue
        diffs = _differences(values, row)
        judged = not m.departures
        what = f"difference to {row.label}" + ("" if judged else " (protocol differs: not comparable)")
        lines.append(f"| {what} | " + " | ".join(_diff_cell(d, judged) for d in diffs) + " |")
        worst = max((abs(d) for d in diffs if d is not None), default=None)
        if worst is not None and judged:
            verdict = "within" if worst <= AGREEMENT_POINTS else "beyond"
            notes.append(f"{md_code(m.where)} against \"{row.label}\": largest difference {worst:.1f} points "
                         f"({verdict} {AGREEMENT_POINTS:g}).")
    return lines + [""] + [f"- {n}" for n in notes] + [""]


def _differences(values: list[float | None], row: PaperRow) -> list[float | None]:
    return [None if v is None or p is None else v - p for v, p in zip(values, row.values, strict=True)]


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _diff_cell(value: float | None, judged: bool = True) -> str:
    if value is None:
        return "-"
    text = f"{value:+.1f}"
    return f"**{text}**" if judged and abs(value) > AGREEMENT_POINTS else text


def _dataset_name(dataset: str) -> str:
    return {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}.get(dataset, dataset)


# uncompared paper rows: thin grey lines, each row told apart in the legend by its marker and line style
REFERENCE_MARKERS = ("v", "^", "<", ">", "s", "D", "*", "P", "X", "d", "+", "x")
REFERENCE_LINES = ("-", "-.", ":")
LEGEND_FONT = 10  # pt: at the plots' 100 dpi, 14 px text, readable at 100% on a 1080p screen
PLOT_DPI = 100
LEGEND_INCHES = 5.0  # the legend column beside a row of panels: a 70-character label at LEGEND_FONT


def series_colours(measured: list[Measured]) -> dict[int, tuple[tuple[float, ...], str]]:
    """Each measurement's colour and marker for every panel of a plot, keyed by id(): the measurements compared
    with the same paper row (the same --against key) share a colour and differ by marker, so a pair reads as one
    colour; a measurement compared with no row has a colour of its own. Fixed once for the whole plot, so a series
    never changes colour from one panel to the next."""
    palette = [c for name in ("tab10", "Dark2", "Set1") for c in _palette(name)]
    keys: dict[str, tuple[float, ...]] = {}
    drawn: Counter = Counter()
    styles = {}
    for m in measured:
        if id(m) in styles:
            continue
        group = m.key.lower() if m.key else f"#{id(m)}"
        colour = keys.setdefault(group, palette[len(keys) % len(palette)])
        styles[id(m)] = (colour, MEASURED_MARKERS[drawn[group] % len(MEASURED_MARKERS)])
        drawn[group] += 1
    return styles


def line_styles(part: PaperPart, shown: list[Measured],
                colours: dict[int, tuple[tuple[float, ...], str]] | None = None) -> tuple[dict[PaperRow, dict],
                                                                                           list[dict]]:
    """Matplotlib styles for one panel: every paper row, and each measurement in its colour from `colours` (the
    plot's :func:`series_colours`; by default this panel's own). A row compared with a measurement is dashed in that
    measurement's colour; the others are thin grey lines with a marker and line style of their own, so each has a
    legend entry that tells it apart."""
    colours = colours or series_colours(shown)
    row_styles: dict[PaperRow, dict] = {}
    for m in shown:
        row = part.find(m.key) if m.key else None
        if row is not None and row not in row_styles:
            row_styles[row] = dict(lw=1.6, ls="--", marker="o", ms=4, color=colours[id(m)][0])
    for index, row in enumerate(part.rows):
        if row not in row_styles:
            row_styles[row] = dict(lw=0.9, color="0.55", marker=REFERENCE_MARKERS[index % len(REFERENCE_MARKERS)],
                                   ms=5, ls=REFERENCE_LINES[index // len(REFERENCE_MARKERS) % len(REFERENCE_LINES)])
    measured_styles = [dict(lw=2.2, color=colours[id(m)][0], marker=colours[id(m)][1], ms=6) for m in shown]
    return row_styles, measured_styles


def _draw_panel(ax, part: PaperPart, shown: list[Measured], paper_lines: dict[PaperRow, list[tuple[int, float]]],
                measured_lines: list[list[tuple[int, float]]], row_styles: dict[PaperRow, dict],
                measured_styles: list[dict], ylabel: str, title_note: str) -> None:
    for row in part.rows:
        points = paper_lines.get(row)
        if not points:
            continue
        ax.plot(*zip(*points, strict=True), label=f"paper: {row.label}", **row_styles[row])
    for m, points, style in zip(shown, measured_lines, measured_styles, strict=True):
        if not points:
            continue
        if m.departures:  # dotted: not the paper's protocol, so not a like-for-like line
            style = {**style, "ls": ":"}
        ax.plot(*zip(*points, strict=True), label=f"measured: {m.label}", **style)
    ax.set_xticks(list(range(len(part.columns))), part.columns)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{part.title.split(':')[0]} ({_dataset_name(part.dataset)}{title_note})", fontsize=11)
    ax.grid(alpha=0.3)


def _legend_beside(panel, legend_ax) -> None:
    """`panel`'s legend in `legend_ax`, an axis of its own to the right of the row, one entry per line: with a
    dozen lines, any place inside a panel covers data, and one column beside a row keeps the figure under 1,920 px
    wide."""
    legend_ax.axis("off")
    handles, labels = panel.get_legend_handles_labels()
    legend_ax.legend(handles, labels, fontsize=LEGEND_FONT, loc="center left", frameon=False)


def _palette(name: str) -> list[tuple[float, ...]]:
    from matplotlib import colormaps

    return list(colormaps[name].colors)


SUPERVISED = "supervised"  # the match key of the paper's fully supervised rows


def supervised_row(part: PaperPart) -> PaperRow | None:
    """The paper's fully supervised row of a table part, if it has one."""
    return next((row for row in part.rows if SUPERVISED in row.match), None)


def supervised_measurement(part: PaperPart, shown: list[Measured]) -> Measured | None:
    """The measured supervised result among `shown` (one table part: the same data set and task), if any: the
    first compared with the part's supervised row (a `train supervised` encoder, or --against 'Full sup')."""
    reference = supervised_row(part)
    return next((m for m in shown if reference is not None and m.key and part.find(m.key) == reference), None)


@dataclass
class RelativeSeries:
    """Figure 6 (right): each line's accuracy divided by the supervised encoder's, per column index."""

    paper: dict[PaperRow, list[tuple[int, float]]]  # the paper's rows over the paper's supervised row
    measured: list[tuple[Measured, list[tuple[int, float]]]]  # each measurement over the measured supervised one


def relative_series(part: PaperPart, shown: list[Measured]) -> RelativeSeries | None:
    """Ratios to the supervised encoder on the same data, when a supervised result is among `shown`; else None."""
    reference = supervised_measurement(part, shown)
    if reference is None:
        return None
    paper_reference = supervised_row(part)
    paper = {}
    for row in part.rows:
        points = [(i, v / s) for i, (v, s) in enumerate(zip(row.values, paper_reference.values, strict=True))
                  if v is not None and s]
        if points:
            paper[row] = points
    measured = []
    for m in shown:
        points = [(i, m.values[c] / reference.values[c]) for i, c in enumerate(part.columns)
                  if c in m.values and reference.values.get(c)]
        measured.append((m, points))
    return RelativeSeries(paper, measured)


def plot_layers(groups: list[tuple[PaperPart, list[Measured]]], out: Path) -> Path:
    """A row of panels per paper table part: the paper's rows as thin lines (a compared one dashed in the colour of
    the measurement set against it), ours bold, each series one colour in every panel. Beside a part with a measured
    supervised result, the same lines relative to the supervised encoder's accuracy (the paper's Figure 6, right).
    Each row's legend is to its right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(part, shown, relative_series(part, shown)) for part, shown in groups]
    columns = 2 if any(relative is not None for _, _, relative in panels) else 1
    fig, axes = plt.subplots(max(len(panels), 1), columns + 1, figsize=(5.2 * columns + LEGEND_INCHES,
                                                                          4.6 * max(len(panels), 1)),
                             squeeze=False, width_ratios=[5.2] * columns + [LEGEND_INCHES])
    colours = series_colours([m for _, shown in groups for m in shown])
    for row_axes, (part, shown, relative) in zip(axes, panels, strict=False):
        row_styles, measured_styles = line_styles(part, shown, colours)
        paper_lines = {row: [(i, v) for i, v in enumerate(row.values) if v is not None] for row in part.rows}
        measured_lines = [[(i, m.values[c]) for i, c in enumerate(part.columns) if c in m.values] for m in shown]
        _draw_panel(row_axes[0], part, shown, paper_lines, measured_lines, row_styles, measured_styles,
                    "top-1 accuracy (%)", "")
        if relative is not None:
            _draw_panel(row_axes[1], part, shown, relative.paper, [points for _, points in relative.measured],
                        row_styles, measured_styles, "top-1 relative to supervised", ", relative")
            _legend_beside(row_axes[0], row_axes[2])
        else:  # the legend moves up beside the one panel, leaving the last column empty
            row_axes[-1].axis("off")
            _legend_beside(row_axes[0], row_axes[1])
    return _save_png(fig, out)


def _save_png(fig, out: Path) -> Path:
    """Write a finished figure to `out` atomically (a reader never sees half a PNG) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    encoded = io.BytesIO()
    fig.savefig(encoded, format="png", dpi=PLOT_DPI, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(out, encoded.getvalue())
    return out


@dataclass
class TapCurve:
    """One encoder's probe accuracies per tap, for :func:`plot_tap_curves` (any encoder's taps, not only the
    paper's conv1..conv5)."""

    label: str
    values: dict[str, float]  # tap -> top-1 (%); taps it lacks are left out of its line
    group: str  # curves of one group share a colour (one method trained on several sets)
    variant: int = 0  # and differ by line style: 0 solid, 1 dashed, 2 dotted, 3 dash-dot
    color: str | None = None  # a fixed colour (baselines: black, grey) instead of the group's from the palette


LINE_STYLES = ("-", "--", ":", "-.")


def plot_tap_curves(curves: list[TapCurve], taps: list[str], out: Path, reference: str | None = None,
                    title: str = "") -> Path:
    """Every curve's top-1 per tap, and beside it (when the curve labelled `reference` is among them, normally the
    supervised encoder) each divided by the reference's top-1 at the same tap: the paper's Figure 6 for any taps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next((c for c in curves if c.label == reference), None)
    count = 2 if base else 1
    fig, axes = plt.subplots(1, count + 1, figsize=(5.2 * count + LEGEND_INCHES, 5.0), squeeze=False,
                             width_ratios=[5.2] * count + [LEGEND_INCHES])
    palette = _palette("tab10")
    groups = dict.fromkeys(c.group for c in curves if c.color is None)
    colours = {group: palette[i % len(palette)] for i, group in enumerate(groups)}
    panels = [(axes[0][0], "top-1 accuracy (%)", lambda curve, tap: curve.values[tap])]
    if base:
        panels.append((axes[0][1], f"top-1 relative to {base.label}",
                       lambda curve, tap: curve.values[tap] / base.values[tap]))
    for ax, ylabel, value in panels:
        for curve in curves:
            shown = [tap for tap in taps if tap in curve.values and (ax is axes[0][0] or base.values.get(tap))]
            points = [(taps.index(tap), value(curve, tap)) for tap in shown]
            if points:
                ax.plot(*zip(*points, strict=True), label=curve.label, color=curve.color or colours[curve.group],
                        marker="o", ms=4, lw=2, ls=LINE_STYLES[curve.variant % len(LINE_STYLES)])
        ax.set_xticks(list(range(len(taps))), taps)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    _legend_beside(axes[0][0], axes[0][-1])  # the panels draw the same curves in the same colours: one legend
    if title:
        fig.suptitle(title, fontsize=12)
    return _save_png(fig, out)
