"""The paper's own numbers (Tables 1-5), kept as data in `paper_results.json` with their source."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class PaperRow:
    label: str
    values: tuple[float | None, ...]
    match: tuple[str, ...] = ()


@dataclass(frozen=True)
class PaperPart:
    """One block of a table: the rows measured on one data set, one value per column."""

    table_id: str
    title: str
    caption: str
    task: str  # "linear", "finetune" or "linear-after-finetune"
    dataset: str  # "cifar10", "cifar100" or "imagenet"
    columns: tuple[str, ...]
    rows: tuple[PaperRow, ...]

    def find(self, text: str) -> PaperRow | None:
        """The row matching `text`: a row's match key exactly, else a case-insensitive part of its label."""
        text = text.lower()
        for row in self.rows:
            if text in row.match:
                return row
        hits = [row for row in self.rows if text in row.label.lower()]
        return hits[0] if len(hits) == 1 else None


@cache
def paper_tables() -> dict[str, Any]:
    """The raw `paper_results.json` (source and tables)."""
    return json.loads(resources.files("probe").joinpath("paper_results.json").read_text(encoding="utf-8"))


def paper_parts() -> list[PaperPart]:
    parts = []
    for table_id, table in paper_tables()["tables"].items():
        for part in table["parts"]:
            rows = tuple(PaperRow(r["label"], tuple(r["values"]), tuple(r.get("match", ())))
                         for r in part["rows"])
            parts.append(PaperPart(table_id, table["title"], table["caption"], table.get("task", "linear"),
                                   part["dataset"], tuple(part["columns"]), rows))
    return parts


def paper_source() -> dict[str, str]:
    return paper_tables()["source"]
