"""Figures as the paper's (issue 35): Figure 2 as one sheet of panels with each encoder's measured conv1 accuracy,
one colour per series in every panel of a plot, a legend entry for every paper row, and no machine path in titles or
results files."""

from __future__ import annotations

import json
import re

import matplotlib
import numpy as np
import pytest
from click.testing import CliRunner

from probe.cli import main
from probe.report import build_report, plot_layers
from probe.results import data_label, display_path, new_results, portable, write_json
from train.models import build_encoder
from train.models.encoder_io import save_encoder

from ..conftest import bench_script

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture
def captured(monkeypatch) -> list:
    """The matplotlib figures the code under test closes, kept open for inspection."""
    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    return figures


def _linear_results(path, encoder: dict, top1: dict[str, float], kind: str = "cifar10-jpg"):
    results = new_results("linear", encoder, {"kind": kind, "path": "../data"}, {}, "cpu", None)
    results["layers"] = {tap: {"top1": value, "top5": 90.0, "dims": 10} for tap, value in top1.items()}
    write_json(path, results)
    return path


def _encoder_file(folder, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    folder.mkdir(parents=True)
    save_encoder(folder / "encoder.pt", build_encoder("cifar"), "cifar", {"method": "rotnet"})
    return folder / "encoder.pt"


def test_figure2_sheet_has_a_panel_per_encoder_with_its_measured_accuracy(tmp_path, captured):
    from probe.encoders import open_encoder

    run = _encoder_file(tmp_path / "runs" / "rotnet")
    # where `make demo` and the reproduce targets put probe results: WORK/probes/NAME beside WORK/runs/NAME
    identity = open_encoder(str(run)).identity
    _linear_results(tmp_path / "runs" / "probes" / "rotnet" / "results.json", identity, {"conv1": 61.25})
    random = _linear_results(tmp_path / "random.json", open_encoder("random:cifar").identity, {"conv1": 55.0})
    sobel = "random:cifar:sobel=true"
    result = CliRunner().invoke(main, ["filters", str(run), "random:cifar", sobel, "--labels", "RotNet,random,Sobel",
                                       "--results", "-", "--out", str(tmp_path / "f.png")], catch_exceptions=False)
    assert result.exit_code != 0 and "--results given 1 times for 3 encoders" in result.output
    result = CliRunner().invoke(main, ["filters", str(run), "random:cifar", sobel, "--labels", "RotNet,random,Sobel",
                                       "--out", str(tmp_path / "f.png")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    figure = captured[-1]
    panels = [ax for ax in figure.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["RotNet", "random", "Sobel"]
    captions = [ax.get_xlabel() for ax in panels]
    assert captions[0].startswith("conv1 linear probe: 61.2% top-1")  # found beside the encoder
    assert "no result found" in captions[1]  # random:ARCH has no folder to look in
    assert "x-gradient (left)" in captions[2] and "y-gradient (right)" in captions[2]
    for ax in panels:  # the sheet shrinks each grid by about a third: its borders are 2 px, not 1, so none vanish
        grid = np.asarray(ax.images[0].get_array())
        assert (grid[:2] == 255).all() and (grid[:, :2] == 255).all() and not (grid[2] == 255).all()
    renderer = figure.canvas.get_renderer()  # every caption, the Sobel note included, fits under its own panel
    for ax in panels:
        assert ax.xaxis.label.get_window_extent(renderer).width <= ax.get_window_extent(renderer).width
    assert "conv1 filters" in figure._suptitle.get_text()
    # with --results, one per encoder: the random panel shows its own measured accuracy
    result = CliRunner().invoke(main, ["filters", str(run), "random:cifar", "--results", "-", "--results", str(random),
                                       "--out", str(tmp_path / "g.png")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [ax.get_xlabel().split("\n")[0] for ax in captured[-1].axes if ax.images] == [
        "conv1 linear probe: no result found", "conv1 linear probe: 55.0% top-1"]


def test_a_results_file_of_another_encoder_is_refused(tmp_path):
    run = _encoder_file(tmp_path / "a")
    other = _linear_results(tmp_path / "other.json", {"source": "b/encoder.pt", "sha256": "0" * 64, "arch": "cifar"},
                            {"conv1": 70.0})
    result = CliRunner().invoke(main, ["filters", str(run), "--results", str(other), "--out", str(tmp_path / "f.png")])
    assert result.exit_code != 0 and "not of" in result.output and "hash differs" in result.output
    assert not (tmp_path / "f.png").exists()


def _fake(tmp_path, name, source, values, method=None):
    config = {"method": method} if method else {}
    return _linear_results(tmp_path / f"{name}.json", {"source": source, "arch": "cifar", "config": config},
                           {f"conv{i + 1}": v for i, v in enumerate(values)})


def test_a_series_keeps_its_colour_in_every_panel_and_every_paper_row_has_a_legend_entry(tmp_path, captured):
    """The supervised run matches no Table 1 row but Table 3's: it must not change colour between the two."""
    paths = [_fake(tmp_path, "sup", "runs/sup/encoder.pt", [63, 71, 73, 74], "supervised"),
             _fake(tmp_path, "rand", "random:cifar", [55, 52, 50, 48]),
             _fake(tmp_path, "mono", "runs/mono/encoder.pt", [61, 61, 59, 58], "monogan")]
    _, groups = build_report(paths, against=["Fully supervised", "random", "MonoGAN"])
    plot_layers(groups, tmp_path / "r.png")
    figure = captured[-1]
    colours: dict[str, set] = {}
    for ax in figure.axes:
        for line in ax.get_lines():
            if line.get_label().startswith("measured: "):
                colours.setdefault(line.get_label(), set()).add(matplotlib.colors.to_hex(line.get_color()))
    assert len(colours) == 3 and all(len(found) == 1 for found in colours.values())
    assert len({next(iter(found)) for found in colours.values()}) == 3
    legends = [ax.get_legend() for ax in figure.axes if ax.get_legend() is not None]
    for (part, _), legend in zip(groups, legends, strict=True):
        labels = {text.get_text() for text in legend.get_texts()}
        assert {f"paper: {row.label}" for row in part.rows if any(v is not None for v in row.values)} <= labels
        assert min(text.get_fontsize() for text in legend.get_texts()) >= 10
    width, _ = figure.get_size_inches() * 100
    assert width <= 1920


def test_a_reports_plot_redrawn_from_its_markdown_shows_the_same_series(tmp_path):
    """bench/redraw_report_plot.py reads a committed report back: every part, measured row, value and compared paper
    row that `probe report` drew from the results files, and nothing else."""
    redraw = bench_script("redraw_report_plot")
    paths = [_fake(tmp_path, "sup", "runs/sup/encoder.pt", [63, 71, 73, 74], "supervised"),
             _fake(tmp_path, "rand", "random:cifar", [55, 52, 50, 48]),
             _fake(tmp_path, "mono", "runs/mono/encoder.pt", [61, 61, 59, 58], "monogan")]
    markdown, groups = build_report(paths, against=["Fully supervised", "random", "MonoGAN"])
    redrawn = redraw.measurements(redraw.parse(markdown))
    assert [part for part, _ in redrawn] == [part for part, _ in groups]
    for (part, shown), (_, again) in zip(groups, redrawn, strict=True):
        assert [m.name for m in again] == [m.name for m in shown]
        assert [m.values for m in again] == [m.values for m in shown]
        assert [part.find(m.key) for m in again] == [part.find(m.key) for m in shown]
    # a column the run did not probe is shown as "-" and left out of the row, not read as a number
    part, rows = redraw.parse(markdown.replace("| **61.0** |", "| - |", 1))[0]
    assert "conv1" not in redraw.measurements([(part, rows)])[0][1][-1].values
    redraw.plot_layers(redrawn, tmp_path / "again.png")
    assert (tmp_path / "again.png").stat().st_size > 0


def test_no_absolute_path_in_a_toy_runs_results_titles_or_report(tmp_path, monkeypatch):
    """A run named with absolute paths (as a script would) records them relative to the results' folder."""
    out = tmp_path / "probes" / "random"
    results = new_results("linear", {"source": str(tmp_path / "runs" / "x" / "encoder.pt"), "arch": "cifar",
                                     "config": {"data": str(tmp_path / "shards"), "out": str(tmp_path / "runs/x")}},
                          {"kind": "cifar10", "path": str(tmp_path / "cifar")}, {}, "cpu",
                          f"probe linear {tmp_path}/runs/x/encoder.pt --data cifar10:{tmp_path}/cifar --out {out}")
    results["layers"] = {"conv1": {"top1": 50.0, "top5": 90.0, "dims": 10}}
    write_json(out / "results.json", results)
    text = (out / "results.json").read_text()
    assert str(tmp_path) not in text and not re.search(r'"/', text)
    written = json.loads(text)
    assert written["encoder"]["source"] == "../../runs/x/encoder.pt" and written["data"]["path"] == "../../cifar"
    assert written["command"] == "probe linear ../../runs/x/encoder.pt --data cifar10:../../cifar --out ."
    assert portable("https://host/shards/x", tmp_path) == "https://host/shards/x"  # a URL is no machine path
    assert portable("SGD lr 0.01 /5 at epochs 3, 6", tmp_path) == "SGD lr 0.01 /5 at epochs 3, 6"  # nor prose
    monkeypatch.setenv("HOME", "/home-of-someone")  # a cache there, seen from a project on another top folder
    assert display_path("/home-of-someone/.cache/x", tmp_path) == "~/.cache/x"
    assert display_path(tmp_path / "a" / "b", tmp_path / "c") == "../a/b"
    assert data_label(f"cifar10-jpg:{tmp_path}/data") == "cifar10-jpg"
    assert data_label("cifar10-jpg:../shared/data/cifar10-jpg") == "cifar10-jpg:../shared/data/cifar10-jpg"
    report = CliRunner().invoke(main, ["report", str(out / "results.json"), "--out", str(tmp_path / "r" / "r.md")])
    assert report.exit_code == 0, report.output
    assert str(tmp_path) not in (tmp_path / "r" / "r.md").read_text()


def test_a_visualize_title_names_the_data_by_its_kind(tmp_path, writers, captured):
    """Figure 5's title once carried the machine's data folder."""
    root = writers.cifar10(tmp_path / "cifar")
    result = CliRunner().invoke(main, ["visualize", "random:cifar", "--out", str(tmp_path / "v.png"),
                                       "--unit", "conv1:0", "--steps", "2", "--size", "16", "--retrieve",
                                       f"cifar10:{root}", "--top", "2", "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    title = captured[-1]._suptitle.get_text()
    assert "top 2 of cifar10 (train)" in title and str(tmp_path) not in title
