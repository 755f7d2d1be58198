"""Redraw the plot of a committed `probe report` from its Markdown, for a run whose results.json files are gone.

    python bench/redraw_report_plot.py REPORT.md PLOT.png
    e.g. bench/results/reproduce-ablation-quick.md bench/results/reproduce-ablation-quick.png

The report's measured rows ("| **measured: NAME** | **v1** | ... |") and the paper row each was compared with
("| difference to ROW | ..."), under each "## Table ...: TITLE (DATA SET)" heading, are all `probe report` plots
from; this script reads them back and hands them to the same `probe.report.plot_layers`, so the picture is what
`probe report` draws today from the same numbers. A measurement's comparison key is recovered as the one that
picks, in every table it appears in, the row the report compared it with (a row's match key, else its label).

A `reproduce modern` report (a "per tap" table, no paper rows) is redrawn by that target's own plotting function
from its top-1 table.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from probe.paper import PaperPart, paper_parts
from probe.report import Measured, plot_layers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `experiments` is not an installed package

HEADING = re.compile(r"^## (?P<title>.+) \((?P<data>[^()]+)\)$")
# bold, or plain with "(protocol differs)" when the run's protocol was not the paper's
MEASURED = re.compile(r"^\| (?:\*\*)?measured: (?P<name>.+?)(?:\*\*)? \|(?P<cells>.*)\|$")
DIFFERENCE = re.compile(r"^\| difference to (?P<row>.+?) \|")


def parse(markdown: str) -> list[tuple[PaperPart, list[tuple[str, list[float | None], str | None]]]]:
    """Per table part of the report: its measured rows as (name, values, the compared row's label or None)."""
    parts = {(p.title, p.dataset): p for p in paper_parts()}  # a table's parts share its title: one per data set
    tables: list = []
    inside = False  # under a paper table's heading (not under another heading of the page)
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading = HEADING.match(line)
            key = (heading["title"], heading["data"].lower().replace("-", "")) if heading else None  # -> cifar10
            inside = key in parts
            if inside:
                tables.append((parts[key], []))
            continue
        if not inside:
            continue
        if measured := MEASURED.match(line):
            # a column the run did not probe is "-": left out, as probe report leaves it out of the plot
            values = [None if cell.strip() == "-" else float(cell.strip().strip("*"))
                      for cell in measured["cells"].split("|")]
            tables[-1][1].append((measured["name"], values, None))
        elif (difference := DIFFERENCE.match(line)) and tables[-1][1]:
            name, values, _ = tables[-1][1][-1]
            tables[-1][1][-1] = (name, values, difference["row"])
    return [(part, rows) for part, rows in tables if rows]


def comparison_key(compared: list[tuple[PaperPart, str]]) -> str | None:
    """The key that finds, in each part, the row the report compared the measurement with."""
    rows = [(part, next(r for r in part.rows if r.label == label)) for part, label in compared]
    candidates = [key for _, row in rows for key in (*row.match, row.label)]
    for key in candidates:
        if all(part.find(key) == row for part, row in rows):
            return key
    return None


def measurements(tables: list) -> list[tuple[PaperPart, list[Measured]]]:
    """The report's groups as `plot_layers` takes them: one Measured per name, shared by every panel it is in."""
    compared: dict[str, list[tuple[PaperPart, str]]] = {}
    values: dict[str, dict[str, float]] = {}
    for part, rows in tables:
        for name, row_values, label in rows:
            values.setdefault(name, {}).update((column, value) for column, value
                                               in zip(part.columns, row_values, strict=True) if value is not None)
            if label is not None:
                compared.setdefault(name, []).append((part, label))
    shared = {name: Measured(Path(name), name, tables[0][0].dataset, "linear", values[name],
                             comparison_key(compared[name]) if name in compared else None)
              for name in values}
    return [(part, [shared[name] for name, _, _ in rows]) for part, rows in tables]


def tap_rows(markdown: str) -> tuple[dict[str, dict[str, float]], str] | None:
    """A per-tap report's rows (label -> top-1 per tap) and its preset, or None when it has no per-tap table."""
    lines = markdown.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("## ") and line.endswith(", per tap")), None)
    if start is None:
        return None
    header = next(line for line in lines[start:] if line.startswith("| encoder |"))
    taps = [cell.strip() for cell in header.strip("|").split("|")[1:]]
    rows = {}
    for line in lines[lines.index(header, start) + 2:]:
        if not line.startswith("| "):
            break
        label, *cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[label] = {tap: float(cell) for tap, cell in zip(taps, cells, strict=True) if cell not in ("", "-")}
    preset = re.search(r"^- preset: \*\*(\w+)\*\*|--preset (\w+)", markdown, re.MULTILINE)
    return rows, next((name for name in preset.groups() if name), "?") if preset else "?"


def main(report: str, out: str) -> None:
    markdown = Path(report).read_text(encoding="utf-8")
    if (per_tap := tap_rows(markdown)) is not None:
        from experiments.targets.modern import plot_rows

        rows, preset = per_tap
        print(f"wrote {plot_rows(rows, Path(out), preset)} ({len(rows)} rows)")
        return
    groups = measurements(parse(markdown))
    print(f"wrote {plot_layers(groups, Path(out))} ({sum(len(shown) for _, shown in groups)} measured rows)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python bench/redraw_report_plot.py REPORT.md PLOT.png")
    main(*sys.argv[1:])
