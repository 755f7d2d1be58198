"""`probe report`'s relative plot (the paper's Figure 6, right): accuracy divided by the supervised encoder's."""

from __future__ import annotations

import json

import pytest

from probe.report import build_report, plot_layers, relative_series, supervised_row
from probe.results import new_results, write_json


def _linear(path, source, top1, method=None):
    results = new_results("linear", {"source": source, "arch": "cifar", "config": {"method": method} if method else {}},
                          {"kind": "cifar10-jpg", "path": "/data"}, {}, "cpu", None)
    results["layers"] = {f"conv{i + 1}": {"top1": v, "top5": 90.0, "dims": 100} for i, v in enumerate(top1)}
    write_json(path, results)
    return path


def _capture(monkeypatch):
    import matplotlib.pyplot as plt

    seen = {}
    monkeypatch.setattr(plt, "close", lambda fig: seen.setdefault("fig", fig))
    return seen


def test_the_relative_values_are_the_ratios_of_the_results_drawn(tmp_path, monkeypatch):
    supervised = _linear(tmp_path / "s.json", "runs/sup/encoder.pt", [50, 60, 64, 80], method="supervised")
    mono = _linear(tmp_path / "m.json", "runs/mono/encoder.pt", [45, 48, 32, 40], method="monogan")
    _, groups = build_report([supervised, mono])
    part, shown = next((p, s) for p, s in groups if p.table_id == "table3")
    relative = relative_series(part, shown)
    measured = {m.name: points for m, points in relative.measured}
    assert measured["mono on cifar10-jpg"] == [(0, 0.9), (1, 0.8), (2, 0.5), (3, 0.5)]
    assert measured["sup on cifar10-jpg"] == [(i, 1.0) for i in range(4)]
    paper_sup = supervised_row(part)
    for row, points in relative.paper.items():
        pairs = enumerate(zip(row.values, paper_sup.values, strict=True))
        assert points == [(i, v / s) for i, (v, s) in pairs if v is not None]
    assert relative.paper[paper_sup] == [(i, 1.0) for i in range(4)]

    seen = _capture(monkeypatch)
    plot_layers(groups, tmp_path / "r.png")
    titles = [ax.get_title() for ax in seen["fig"].axes]
    assert titles.count("Table 3 (CIFAR-10, relative)") == 1 and titles.count("Table 3 (CIFAR-10)") == 1
    axis = seen["fig"].axes[titles.index("Table 3 (CIFAR-10, relative)")]
    drawn = {line.get_label(): list(line.get_ydata()) for line in axis.get_lines()}
    assert drawn["measured: mono on cifar10-jpg"] == pytest.approx([0.9, 0.8, 0.5, 0.5])
    rotnet = next(row for row in part.rows if row.label == "RotNet")
    ratios = [v / s for v, s in zip(rotnet.values, paper_sup.values, strict=True)]
    assert drawn["paper: RotNet"] == pytest.approx(ratios)


def test_no_relative_panel_without_a_supervised_result(tmp_path, monkeypatch):
    mono = _linear(tmp_path / "m.json", "runs/mono/encoder.pt", [45, 48, 32, 40], method="monogan")
    _, groups = build_report([mono])
    assert all(relative_series(p, s) is None for p, s in groups)
    seen = _capture(monkeypatch)
    plot_layers(groups, tmp_path / "r.png")
    assert not any("relative" in ax.get_title() for ax in seen["fig"].axes)
    assert json.loads(mono.read_text())["task"] == "linear"
