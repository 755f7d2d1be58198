"""Filter pictures and the report against the paper's tables."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from probe.filters import MIN_SHEET_WIDTH, TITLE_HEIGHT, filter_grid, normalized_filters, save_filter_grid
from probe.paper import paper_parts, paper_source
from probe.report import build_report, line_styles, plot_layers
from probe.results import new_results, write_json
from train.models import build_encoder


def test_each_filter_is_scaled_by_its_own_peak():
    weight = torch.zeros(2, 3, 2, 2)
    weight[0, 0, 0, 0] = 0.5
    weight[0, 1, 1, 1] = -0.25
    weight[1, 2, 0, 1] = -4.0
    normed = normalized_filters(weight)
    assert normed[0, 0, 0, 0] == 1.0 and normed[0, 1, 1, 1] == -0.5 and normed[1, 2, 0, 1] == -1.0
    grid = filter_grid(weight, columns=2, scale=1, border=1)
    assert grid.shape == (4, 7, 3)
    assert grid[1, 1].tolist() == [255, 128, 128]  # +1 red, zero green/blue shown mid-grey
    assert grid[1, 5].tolist() == [128, 128, 0]  # filter 2: -1 in blue


def test_alexnet_conv1_grid_is_twelve_by_eight_under_a_title(tmp_path):
    out = save_filter_grid(build_encoder("alexnet"), tmp_path / "conv1.png", scale=2)
    width, height = Image.open(out).size
    assert (width, height) == (12 * 23 + 1, TITLE_HEIGHT + 8 * 23 + 1)


@pytest.mark.parametrize("arch", ["alexnet", "cifar", "alexnet-small"])
def test_the_filter_sheet_is_legible_by_default_and_titled(tmp_path, arch):
    encoder = build_encoder(arch)
    out = save_filter_grid(encoder, tmp_path / "conv1.png")
    pixels = np.asarray(Image.open(out))
    assert MIN_SHEET_WIDTH <= pixels.shape[1] < 2 * MIN_SHEET_WIDTH
    assert (pixels[:TITLE_HEIGHT] < 100).any()  # dark title text in the white band
    untitled = save_filter_grid(encoder, tmp_path / "t.png", title="x")
    assert not np.array_equal(np.asarray(Image.open(untitled))[:TITLE_HEIGHT], pixels[:TITLE_HEIGHT])


def test_paper_tables_are_kept_with_their_source():
    assert "ICLR 2020" in paper_source()["paper"]
    parts = {(p.table_id, p.dataset): p for p in paper_parts()}
    assert set(parts) >= {("table1", "cifar10"), ("table2", "imagenet"), ("table3", "cifar10"),
                          ("table3", "cifar100"), ("table4", "imagenet"), ("table5", "imagenet")}
    assert parts["table3", "cifar10"].find("random").values == (57.8, 55.5, 54.2, 47.3)
    assert parts["table2", "imagenet"].find("(p)").values[1] == 31.5
    for part in parts.values():
        assert all(len(row.values) == len(part.columns) for row in part.rows)


def _fake_linear_results(path, source, kind, top1):
    layers = {f"conv{i + 1}": {"top1": v, "top5": 90.0, "dims": 100} for i, v in enumerate(top1)}
    results = new_results("linear", {"source": source, "arch": "cifar", "config": {}},
                          {"kind": kind, "path": "/data"}, {}, "cpu", None)
    results["layers"] = layers
    write_json(path, results)
    return path


def test_report_sets_measurements_beside_the_paper(tmp_path):
    random = _fake_linear_results(tmp_path / "r.json", "random:cifar", "cifar10-jpg", [55, 52, 48, 47.3])
    mono = _fake_linear_results(tmp_path / "m.json", "runs/mono/encoder.pt", "cifar100", [40, 45, 44.5, 30])
    markdown, groups = build_report([random, mono], against=["random", "MonoGAN"], plot_name="r.png")
    assert "| difference to Random | -2.8 | -3.5 | **-6.2** | +0.0 |" in markdown
    assert "| difference to MonoGAN | +0.1 | -1.9 | +0.0 | **-8.8** |" in markdown
    assert "| difference to (b) Random feat. | -2.8 |" in markdown  # Table 1 has the random row too
    assert [(p.table_id, p.dataset) for p, _ in groups] == [("table1", "cifar10"), ("table3", "cifar10"),
                                                            ("table3", "cifar100")]
    png = plot_layers(groups, tmp_path / "r.png")
    width, height = Image.open(png).size
    assert 600 < width <= 1920 and height > 100  # a row of panels per table, at 100% on a 1080p screen
    assert np.asarray(Image.open(png)).std() > 0


def test_a_measurement_appears_only_in_the_tables_holding_its_row(tmp_path):
    scale = _fake_linear_results(tmp_path / "s.json", "runs/monogan-scale/encoder.pt", "cifar10", [62, 65, 63, 62])
    markdown, groups = build_report([scale], against=["(f) Scale"])
    assert [p.table_id for p, _ in groups] == ["table1"]  # not repeated under Table 3, which has no such row
    assert "| difference to (f) Scale | **-5.9** |" in markdown and "no paper row matches" not in markdown
    payload = json.loads(scale.read_text())
    payload["encoder"]["config"] = {"method": "simclr"}  # compared by default with a row of its method's name
    write_json(scale, payload)
    unknown, groups = build_report([scale])
    assert [p.table_id for p, _ in groups] == ["table1", "table3"]  # no row anywhere: shown, and said so, in both
    assert unknown.count("no paper row matches 'simclr'") == 2


def test_each_measurement_is_drawn_in_the_colour_of_its_paper_row(tmp_path):
    """With ten paper rows and as many runs on one panel, a run must be findable beside the row it is set against."""
    runs = {"random-a": "random", "random-b": "random", "monogan-scale": "(f) Scale", "monogan": "(j) All",
            "simclr": "none"}
    paths = [_fake_linear_results(tmp_path / f"{name}.json", f"runs/{name}/encoder.pt", "cifar10", [60, 61, 62, 63])
             for name in runs]
    _, groups = build_report(paths, against=list(runs.values()))
    part, shown = next((p, s) for p, s in groups if p.table_id == "table1")
    row_styles, styles = line_styles(part, shown)
    colour_of = {row.label: style["color"] for row, style in row_styles.items() if style["color"] != "0.55"}
    assert set(colour_of) == {"(b) Random feat.", "(f) Scale", "(j) All"}  # uncompared rows stay grey
    assert len(set(colour_of.values())) == 3
    grey = [(style["marker"], style["ls"]) for row, style in row_styles.items() if row.label not in colour_of]
    assert len(grey) == len(part.rows) - 3 and len(set(grey)) == len(grey)  # each told apart in the legend
    random_a, random_b, scale, mono, simclr = styles
    assert random_a["color"] == random_b["color"] == colour_of["(b) Random feat."]
    assert random_a["marker"] != random_b["marker"]
    assert scale["color"] == colour_of["(f) Scale"] and mono["color"] == colour_of["(j) All"]
    assert simclr["color"] not in colour_of.values()


def test_report_without_a_row_to_compare_says_so(tmp_path):
    path = _fake_linear_results(tmp_path / "x.json", "runs/x/encoder.pt", "cifar10", [60.0, 61.0, 62.0, 63.0])
    markdown, _ = build_report([path])
    assert "x.json`: not compared with a paper row" in markdown and "difference to" not in markdown
    # fine-tuned on CIFAR-10: in none of the paper's tables, so no plot is drawn and none may be linked (a stale
    # plot beside the report would otherwise show)
    tuned = new_results("finetune", {"source": "random:cifar", "arch": "cifar", "config": {}},
                        {"kind": "cifar10-jpg", "path": "/cifar"}, {}, "cpu", None)
    tuned["scores"] = {"top1": 40.0, "top5": 65.0}
    write_json(tmp_path / "ft.json", tuned)
    markdown, groups = build_report([tmp_path / "ft.json"], plot_name="report.png")
    assert not groups and "report.png" not in markdown
    # ... but its score is in the report all the same
    assert "## Results without a counterpart in the paper" in markdown
    assert "| finetune on cifar10 | top1 |" in markdown
    assert "| measured: random:cifar on cifar10-jpg | 40.0 |" in markdown
    assert json.loads(path.read_text())["task"] == "linear"


def test_against_none_keeps_a_method_away_from_its_namesake_row(tmp_path):
    """A RotNet trained on one image is not the paper's RotNet-on-CIFAR-10 row: --against none shows it alone."""
    path = _fake_linear_results(tmp_path / "rot.json", "runs/rot/encoder.pt", "cifar10", [60.5, 61.5, 58.6, 55.8])
    payload = json.loads(path.read_text())
    payload["encoder"]["config"] = {"method": "rotnet"}
    write_json(path, payload)
    assert "| difference to RotNet | -3.9 |" in build_report([path])[0]
    markdown, _ = build_report([path], against=["none"])
    assert "**measured: rot on cifar10** | **60.5**" in markdown and "difference to" not in markdown


def test_finetune_and_linear_after_finetune_go_to_tables_4_and_5(tmp_path):
    tuned = new_results("finetune", {"source": "random:alexnet", "arch": "alexnet", "config": {}},
                        {"kind": "imagefolder", "path": "/imagenet"}, {}, "cpu", None)
    tuned["scores"] = {"top1": 40.0, "top5": 65.0}
    write_json(tmp_path / "ft.json", tuned)
    probed = _fake_linear_results(tmp_path / "lp.json", "ft/encoder.pt", "imagefolder", [20, 37, 44, 48, 50])
    payload = json.loads(probed.read_text())
    payload["encoder"]["config"] = {"probe_finetune": {"protocol": {"freeze": "none"}}}
    write_json(probed, payload)
    markdown, groups = build_report([tmp_path / "ft.json", probed], against=["random", "Full sup"])
    assert [p.table_id for p, _ in groups] == ["table4", "table5"]
    assert "| difference to Random | -2.6 |" in markdown
    assert "| difference to Full sup. | +0.7 | +0.7 | -0.2 | -0.3 | -0.5 |" in markdown


def test_two_channel_filters_are_shown_as_grey_tiles_side_by_side():
    weight = torch.randn(5, 2, 3, 3)  # a Sobel front end feeds conv1 two gradient channels
    grid = filter_grid(weight, columns=5, scale=1, border=1)
    assert grid.shape == (1 * 4 + 1, 5 * 7 + 1, 3)
    assert (grid[..., 0] == grid[..., 1]).all() and (grid[..., 1] == grid[..., 2]).all()
    # by default both kinds make a landscape grid: 96 colour tiles 12 across, 96 double-width Sobel tiles 8 across
    assert filter_grid(torch.randn(96, 3, 7, 7), scale=1).shape == (8 * 8 + 1, 12 * 8 + 1, 3)
    assert filter_grid(torch.randn(96, 2, 7, 7), scale=1).shape == (12 * 8 + 1, 8 * 15 + 1, 3)


def _cut_down(path, epochs=1, train_used=500):
    payload = json.loads(path.read_text())
    payload["protocol"] = {"epochs": epochs, "lr": 0.01, "milestones": [5, 15, 25], "lr_divisor": 5.0,
                           "momentum": 0.9, "weight_decay": 1e-5, "batch_size": 192, "ten_crop": False}
    payload["data"] |= {"style": "cifar", "train_size": 50000, "test_size": 10000, "train_used": train_used,
                        "test_used": 10000}
    write_json(path, payload)
    return path


def test_a_result_with_another_protocol_is_labelled_and_never_judged(tmp_path, monkeypatch):
    """A 1-epoch, 500-image probe is no measurement of the paper's protocol: said in every table and in the plot,
    its differences shown plain, with no verdict."""
    quick = _cut_down(_fake_linear_results(tmp_path / "q.json", "random:cifar", "cifar10", [30, 10, 10, 5]))
    full = _cut_down(_fake_linear_results(tmp_path / "f.json", "runs/f/encoder.pt", "cifar10", [55, 52, 48, 47]),
                     epochs=36, train_used=50000)
    markdown, groups = build_report([quick, full], against=["random", "random"], plot_name="r.png")
    assert [p.table_id for p, _ in groups] == ["table1", "table3"]
    for table in markdown.split("\n## ")[1:]:  # in every table
        assert "| measured: random:cifar on cifar10 (protocol differs) | 30.0 | 10.0 | 10.0 | 5.0 |" in table
        assert "(protocol differs: not comparable) | -27.8 | -45.5 | -44.2 | -42.3 |" in table
        assert "q.json`: protocol differs from the paper's: epochs 1 (paper: 36); 500 of 50,000 train images." in table
        assert "**measured: f on cifar10** | **55.0**" in table  # the paper's protocol: judged as before
        assert "-45.5" in table and "**-45.5**" not in table
    assert "q.json` against" not in markdown and "f.json` against" in markdown  # a verdict for f only
    seen = {}
    import matplotlib.pyplot as plt
    monkeypatch.setattr(plt, "close", lambda fig: seen.setdefault("fig", fig))
    plot_layers(groups, tmp_path / "r.png")
    panels = [ax for ax in seen["fig"].axes if ax.get_title()]
    legends = [ax.get_legend() for ax in seen["fig"].axes if ax.get_legend() is not None]
    assert len(panels) == len(legends) == 2  # a legend beside each table's panel
    for ax, legend in zip(panels, legends, strict=True):
        labels = [t.get_text() for t in legend.get_texts()]
        assert "measured: random:cifar on cifar10 (protocol differs)" in labels and "measured: f on cifar10" in labels
        part = next(p for p, _ in groups if p.title.split(":")[0] == ax.get_title().split(" (")[0])
        drawn = {f"paper: {row.label}" for row in part.rows if any(v is not None for v in row.values)}
        assert drawn <= set(labels)  # every paper line, the grey ones too


def test_finetune_departures_include_the_layers_frozen(tmp_path):
    tuned = new_results("finetune", {"source": "random:alexnet", "arch": "alexnet", "config": {}},
                        {"kind": "imagefolder", "path": "/imagenet", "style": "imagenet"},
                        {"epochs": 90, "freeze": "none", "keep": "conv2", "ten_crop": True}, "cpu", None)
    tuned["scores"] = {"top1": 40.0, "top5": 65.0}
    write_json(tmp_path / "ft.json", tuned)
    markdown, _ = build_report([tmp_path / "ft.json"], against=["random"])
    assert "protocol differs from the paper's: freeze none (paper: conv2)." in markdown


def test_an_encoder_without_first_layer_filters_is_refused_before_anything_is_written(tmp_path):
    from common.errors import EncoderError

    encoder = build_encoder("cifar")
    encoder.first_layer_weight = lambda: None  # as a learning-free encoder (scattering) answers
    with pytest.raises(EncoderError, match="^architecture 'cifar' has no learnt first-layer filters to draw$"):
        save_filter_grid(encoder, tmp_path / "sub" / "conv1.png")
    assert not (tmp_path / "sub").exists()
