"""`reproduce modern`: SimCLR, MoCo v2, BYOL and DINO on Image B against CIFAR-10, probed at every ResNet-18 tap."""

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments import paper_cifar
from experiments.commands import render_stage
from experiments.targets import modern
from pipeline.sources import default_pool
from probe.results import new_results, write_json

from ..conftest import bench_script, target_smoke

ROOT = Path(__file__).resolve().parents[2]
TAPS = ["stem", "layer1", "layer2", "layer3", "layer4"]


def stages_of(tmp_path: Path, preset: str, data: str = "cifar10:/data/cifar-10-batches-py"):
    stages, reports = modern.modern_stages(tmp_path / "reproduce-modern", modern.PRESETS[preset],
                                           default_pool()[1], data, "cpu")
    return {s.name: s for s in stages}, reports


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_quick_preset_trains_each_method_on_both_sets_with_equal_steps_and_probes_every_encoder(tmp_path):
    stages, reports = stages_of(tmp_path, "quick")
    preset = modern.PRESETS["quick"]
    methods = preset["methods"]
    assert {"simclr", "mocov2", "byol", "dino"} <= set(methods)
    trained = [f"{m}-{s}" for m in methods for s in ("imageB", "cifar10")] + ["supervised-resnet18"]
    assert [n for n in stages if n.startswith("train-")] == [f"train-{t}" for t in trained]
    assert [n for n in stages if n.startswith("probe-")] == [f"probe-{t}" for t in [*trained, "random-resnet18"]]
    for name in trained:
        command = stages[f"train-{name}"].command
        assert option(command, "--arch") == "resnet18-cifar-w16"
    # one image against the full set at equal compute: the same number of samples seen (so of steps) on each set
    for method in methods:
        image_b, cifar = stages[f"train-{method}-imageB"].command, stages[f"train-{method}-cifar10"].command
        assert image_b[2] == str(tmp_path / "reproduce-modern" / "shards" / "cifar-B-all")
        assert cifar[2] == "cifar10:/data/cifar-10-batches-py"  # `train` reads the same KIND:PATH as `probe`
        assert int(option(image_b, "--epochs")) * preset["n_patches"] == int(option(cifar, "--epochs")) * 50_000
    # the short runs keep the shape of each method's schedule: its warm-ups (SimCLR's 10 of 200 epochs, DINO's
    # teacher temperature over 30) take the same share of every run, so the same number of samples on both sets
    sizes = {"imageB": preset["n_patches"], "cifar10": 50_000}
    warmed_up = [m for m in methods if m != "mocov2"]  # MoCo v2 has no warm-up (its default is 0 epochs)
    assert "--warmup-epochs" not in stages["train-mocov2-imageB"].command
    for method, name in [(m, "--warmup-epochs") for m in warmed_up] + [("dino", "--teacher-temperature-epochs")]:
        samples = {s: float(option(stages[f"train-{method}-{s}"].command, name)) * sizes[s] for s in sizes}
        assert samples["imageB"] == pytest.approx(samples["cifar10"]) and samples["imageB"] > 0
    assert option(stages["train-simclr-cifar10"].command, "--warmup-epochs") == f"{10 * 1 / 200:g}"
    assert option(stages["probe-random-resnet18"].command, "linear") == "random:resnet18-cifar-w16"
    # a retrained Image B encoder is probed again; the render is the one `reproduce cifar10` makes
    assert stages["probe-simclr-imageB"].inputs == [Path(stages["train-simclr-imageB"].outputs[0])]
    assert stages["render-cifar-B-all"].command == render_stage(
        tmp_path / "reproduce-modern" / "shards" / "cifar-B-all", default_pool()[1],
        paper_cifar.PRESETS["quick"]["n_patches"], True, True, True).command
    assert [label for _, label in reports][-2:] == ["supervised on CIFAR-10", "random init."]
    assert len(reports) == 2 * len(methods) + 2


def test_full_preset_runs_all_four_methods_at_width_64_and_leaves_workers_to_train(tmp_path):
    stages, _ = stages_of(tmp_path, "full")
    assert {f"train-{m}-{s}" for m in ("simclr", "mocov2", "byol", "dino") for s in ("imageB", "cifar10")} <= set(
        stages)
    for stage in stages.values():
        if stage.name.startswith("train-"):
            assert option(stage.command, "--arch") == "resnet18-cifar" and "--workers" not in stage.command
    assert option(stages["train-simclr-imageB"].command, "--epochs") == "200"
    assert "--warmup-epochs" not in stages["train-simclr-imageB"].command  # the methods' own schedules


def render_in_sibling(tmp_path: Path, preset: str) -> Path:
    """A finished `reproduce cifar10` render in the sibling folder: its record and its manifest."""
    sibling = tmp_path / "reproduce-cifar10"
    shards = sibling / "shards" / "cifar-B-all"
    render = render_stage(shards, default_pool()[1], modern.PRESETS[preset]["n_patches"],
                                            True, True, True)
    (sibling / "stages").mkdir(parents=True)
    (sibling / "stages" / f"{render.name}.json").write_text(json.dumps({"command": render.command}))
    shards.mkdir(parents=True)
    (shards / "manifest.json").write_text("{}")
    return shards


def test_a_complete_render_of_the_same_command_in_the_cifar10_folder_is_linked_not_made_again(tmp_path):
    sibling = render_in_sibling(tmp_path, "quick")
    stages_of(tmp_path, "full")  # another preset: another patch count, so not the same set
    own = tmp_path / "reproduce-modern" / "shards" / "cifar-B-all"
    assert not own.exists()
    stages_of(tmp_path, "quick")
    assert own.is_symlink() and own.resolve() == sibling.resolve()
    (sibling / "manifest.json").unlink()
    sibling.rmdir()
    stages_of(tmp_path, "quick")  # the sibling has gone: the dangling link is removed, the set rendered here
    assert not own.is_symlink() and not own.exists()


def fake_results(path: Path, top1: list[float]) -> None:
    payload = new_results("linear", {"source": "x"}, {"kind": "cifar10"}, {}, "cpu", None)
    payload["layers"] = {tap: {"top1": value} for tap, value in zip(TAPS, top1, strict=True)}
    write_json(path, payload)


def test_report_tables_every_row_and_compares_one_image_with_the_full_set(tmp_path):
    _, reports = stages_of(tmp_path, "quick")
    work = tmp_path / "reproduce-modern"
    for index, (path, label) in enumerate(reports):
        if label != "DINO on CIFAR-10":  # a stage not yet run: its row is left out, its differences too
            fake_results(path, [40.0 + index, 50.0, 60.0, 70.0, 80.0 + index])
    stages = [{"stage": "train-simclr-imageB", "wall_s": 60.0, "commit": "abc"}]
    report = modern.write_report(work, "modern", "quick", reports, stages, "cpu", "cifar10:/d",
                                 ["train-dino-cifar10"]).read_text()
    rows = {line.split(" | ")[0][2:]: line for line in report.splitlines() if line.startswith("| ")}
    for _, label in reports:
        assert (label in rows) == (label != "DINO on CIFAR-10")
    assert rows["SimCLR on Image B"] == "| SimCLR on Image B | 40.0 | 50.0 | 60.0 | 70.0 | 80.0 |"
    differences = [line for line in report.splitlines() if line.startswith("| SimCLR | Image B - ")]
    assert differences == ["| SimCLR | Image B - CIFAR-10 | -1.0 | +0.0 | +0.0 | +0.0 | -1.0 |",
                           f"| SimCLR | Image B - random | {-(len(reports) - 1):+.1f} | +0.0 | +0.0 | +0.0 | "
                           f"{-(len(reports) - 1):+.1f} |"]
    assert not any(line.startswith("| DINO | Image B - CIFAR-10") for line in report.splitlines())
    assert "- **incomplete**: 1 stages not yet run (train-dino-cifar10)" in report
    assert "![per-tap top-1" in report and (work / "report-modern.png").stat().st_size > 10_000
    # bench/redraw_report_plot.py reads the table back to redraw the plot: every row and value, and the preset
    rows, preset = bench_script("redraw_report_plot").tap_rows(report)
    assert preset == "quick" and list(rows) == [label for _, label in reports if label != "DINO on CIFAR-10"]
    assert rows["SimCLR on Image B"] == dict(zip(TAPS, [40.0, 50.0, 60.0, 70.0, 80.0], strict=True))


def test_the_tap_plot_draws_every_curve_and_its_ratio_to_the_reference(tmp_path, monkeypatch):
    from probe import report

    drawn = []
    import matplotlib.axes

    original = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda ax, *a, **k: drawn.append((ax.get_ylabel(), k["label"], list(a[1]))) or
                        original(ax, *a, **k))
    curves = [report.TapCurve("sup", {"a": 50.0, "b": 80.0}, "sup"),
              report.TapCurve("one image", {"a": 50.0, "b": 40.0}, "m"),
              report.TapCurve("full set", {"a": 25.0}, "m", variant=1)]
    out = report.plot_tap_curves(curves, ["a", "b"], tmp_path / "taps.png", reference="sup")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the y label is set after the lines are drawn: the first panel's lines carry no label yet
    assert [d[1:] for d in drawn] == [("sup", [50.0, 80.0]), ("one image", [50.0, 40.0]), ("full set", [25.0]),
                                      ("sup", [1.0, 1.0]), ("one image", [1.0, 0.5]), ("full set", [0.5])]


# The smoke preset runs once, in phases that are each a test on one worker (xdist_group): the trainings, the probes
# and the report, then a second run that skips every stage.
SMOKE = pytest.mark.xdist_group("reproduce-modern-smoke")


@pytest.fixture(scope="session")
def modern_smoke(tmp_path_factory) -> SimpleNamespace:
    """`reproduce.py modern --preset smoke` on Image B and a toy CIFAR-10, on the CPU, in phases."""
    return target_smoke(tmp_path_factory, "modern", [
        ("some trainings", "render-*,train-simclr*,train-mocov2*"), ("trainings", "render-*,train-*"),
        ("some probes", "render-*,train-*,probe-simclr*,probe-mocov2*,probe-byol*"), ("all", None)])


@SMOKE
def test_smoke_preset_trains_every_method_on_both_sets(modern_smoke):
    first = modern_smoke.run.upto("some trainings")
    assert "5 selected stages done" in first.stdout  # the render, SimCLR and MoCo v2 on each set
    modern_smoke.run.upto("trainings")
    methods = modern.PRESETS["smoke"]["methods"]
    for name in [f"{m}-{s}" for m in methods for s in ("imageB", "cifar10")] + ["supervised-resnet18"]:
        config = json.loads((modern_smoke.work / "runs" / name / "config.json").read_text())
        assert config["arch"] == "resnet18-cifar-w16", name


@SMOKE
def test_smoke_preset_probes_stage_by_stage(modern_smoke):
    modern_smoke.run.upto("some probes")
    assert len(list((modern_smoke.work / "probes").iterdir())) == 6
    assert not (modern_smoke.work / "report-modern.md").exists()


@SMOKE
def test_smoke_preset_probes_every_tap_of_every_encoder(modern_smoke):
    modern_smoke.run.upto("all")
    work = modern_smoke.work
    report = (work / "report-modern.md").read_text()
    labels = [modern.row_label(m, s) for m in modern.PRESETS["smoke"]["methods"] for s in ("imageB", "cifar10")]
    for label in [*labels, "supervised on CIFAR-10", "random init."]:
        row = next(line for line in report.splitlines() if line.startswith(f"| {label} | "))
        assert len(row.split(" | ")) == 1 + len(TAPS)  # a number per tap
    assert (work / "report-modern.png").stat().st_size > 10_000
    for name in ("simclr-imageB", "dino-cifar10", "supervised-resnet18", "random-resnet18"):
        results = json.loads((work / "probes" / name / "results.json").read_text())
        assert list(results["layers"]) == TAPS


@SMOKE
def test_smoke_preset_run_again_skips_every_stage(modern_smoke):
    modern_smoke.run.upto("all")
    again = subprocess.run(modern_smoke.cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    count = 1 + 2 * (2 * len(modern.PRESETS["smoke"]["methods"]) + 1) + 1  # render, trainings+probes, random
    assert again.stdout.count("skipped") == count
