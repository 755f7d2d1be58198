"""`reproduce distill`: a teacher trained with labels, students distilled from five sources for the same steps and
one trained with labels, all scored by `probe classify` (experiments/targets/distill.py). No number is asserted."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from common.errors import ToolkitError
from experiments import cli
from experiments.registry import targets
from experiments.stage import run_stage
from experiments.targets import distill
from pipeline.sources import default_pool
from probe.results import new_results, write_json

from ..conftest import target_smoke, write_cifar100, write_image_tree, write_tarball

ROOT = Path(__file__).resolve().parents[2]
CIFAR10 = "cifar10:/data/cifar-10-batches-py"
STUDENTS = [f"distill-{s}" for s in distill.SOURCES] + ["labels"]
SMOKE_STUDENTS = [f"distill-{s}" for s in distill.preset_sources(distill.PRESETS["smoke"])] + ["labels"]


def stages_of(tmp_path: Path, preset: str, data: str = CIFAR10):
    stages, reports = distill.distill_stages(tmp_path / "work", distill.PRESETS[preset], default_pool()[1], data,
                                             "cpu")
    return {s.name: s for s in stages}, reports


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_quick_preset_distils_every_source_for_the_same_steps_from_one_teacher_and_classifies_every_run(tmp_path):
    stages, reports = stages_of(tmp_path, "quick")
    work = tmp_path / "work"
    teacher = work / "runs" / "teacher-cifar10" / "encoder.pt"
    students = [f"{s}-cifar10" for s in STUDENTS]
    assert [n for n in stages if n.startswith("train-")] == ["train-teacher-cifar10"] + [f"train-{s}" for s in students]
    steps = {option(stages[f"train-{s}"].command, "--max-steps") for s in students}
    archs = {option(stages[f"train-{s}"].command, "--arch") for s in ["teacher-cifar10", *students]}
    assert steps == {"1560"} and archs == {"resnet18-cifar-w16"}  # equal steps, one architecture
    for source in distill.SOURCES:
        command = stages[f"train-distill-{source}-cifar10"].command
        assert command[1] == "distill" and option(command, "--teacher") == str(teacher)
        assert teacher in stages[f"train-distill-{source}-cifar10"].inputs  # a retrained teacher: distilled again
    # (d) reads the real set as `train` does; the others their rendered sets; (f) and the teacher the labels
    assert stages["train-distill-train-set-cifar10"].command[2] == CIFAR10
    assert stages["train-distill-imageB-cifar10"].command[2] == str(work / "shards" / "distill-imageB")
    assert stages["train-labels-cifar10"].command[1] == "supervised"
    # Image A, 10 of the shared ImageNet photos (the archive unpacked by a stage), and the generated noise
    assert option(stages["render-distill-imageA"].command, "--src").endswith("paper-images/ameyoko.jpg")
    photos = stages["render-distill-photos10"].command
    assert option(photos, "--n-src") == "10"
    assert option(photos, "--src") == str(work / "sources" / "imagenet-sample-1000")
    assert stages["unpack-imagenet-sample-1000"].outputs == [work / "sources" / "imagenet-sample-1000"]
    assert option(stages["render-distill-noise"].command, "--src") == str(work / "sources" / "uniform-noise.png")
    assert {option(stages[f"render-distill-{s}"].command, "--n-patches") for s in ("imageB", "imageA", "noise",
                                                                                   "photos10")} == {"50000"}
    classified = [n for n in stages if n.startswith("classify-")]
    assert classified == ["classify-teacher-cifar10"] + [f"classify-{s}" for s in students]
    assert not any(n.startswith("probe-") for n in stages)  # no linear probes on the CPU
    assert [label for _, label in reports] == [distill.TEACHER_ROW, *distill.SOURCES.values(), distill.LABELS_ROW]


def test_full_preset_probes_every_student_linearly_and_leaves_workers_to_train(tmp_path):
    stages, reports = stages_of(tmp_path, "full")
    assert [n for n in stages if n.startswith("probe-")] == [f"probe-{s}-cifar10" for s in STUDENTS]
    assert all("--workers" not in s.command for s in stages.values() if s.name.startswith("train-"))
    assert len(reports) == 7 + 6


def test_every_preset_passes_the_options_check_on_either_data_set(tmp_path):
    cifar100 = write_cifar100(tmp_path)
    target = targets()["distill"]
    for preset in distill.PRESETS:
        for data in (CIFAR10, f"cifar100:{cifar100}"):
            stages, _ = cli.load(target, preset, tmp_path / preset, default_pool()[1], data, "cpu")
            assert stages


def test_cifar100_runs_carry_the_set_name_and_a_missing_pickle_folder_is_refused(tmp_path):
    data = f"cifar100:{write_cifar100(tmp_path)}"
    stages, reports = stages_of(tmp_path, "quick", data)
    assert "train-teacher-cifar100" in stages and "classify-distill-imageB-cifar100" in stages
    assert option(stages["classify-labels-cifar100"].command, "--data") == data
    assert stages["train-distill-train-set-cifar100"].command[2] == data
    assert "render-distill-imageB" in stages  # the renders are shared with a CIFAR-10 run in the same --work
    with pytest.raises(ToolkitError):
        stages_of(tmp_path, "quick", f"cifar100:{tmp_path / 'absent'}")
    with pytest.raises(ToolkitError, match="cifar100:PATH"):
        stages_of(tmp_path, "quick", "cifar100:")


def test_the_archive_stage_unpacks_the_photos_into_the_folder_render_reads(tmp_path):
    tree = write_image_tree(tmp_path / "tree" / "photos", {"a": 2, "b": 1}, size=40)
    archive = write_tarball(tmp_path / "photos.tar", tree, "photos")
    preset = {**distill.PRESETS["smoke"], "photos": str(archive), "sources": tuple(distill.SOURCES)}
    stages, shards = distill.source_stages(tmp_path / "work", preset, default_pool()[1])
    unpack = stages[0]
    assert unpack.name == "unpack-photos"
    run_stage(unpack, tmp_path / "work" / "stages", None)
    assert sorted(p.name for p in (tmp_path / "work" / "sources" / "photos").rglob("*.png")) == [
        "0000.png", "0000.png", "0001.png"]
    assert shards["photos10"] == tmp_path / "work" / "shards" / "distill-photos10"


def fake_classify(path: Path, top1: float) -> None:
    payload = new_results("classify", {"source": "x"}, {"kind": "cifar10"}, {}, "cpu", None)
    payload["scores"] = {"top1": top1, "top5": min(100.0, top1 + 20)}
    write_json(path, payload)


def fake_linear(path: Path, top1: list[float]) -> None:
    payload = new_results("linear", {"source": "x"}, {"kind": "cifar10"}, {}, "cpu", None)
    payload["layers"] = {tap: {"top1": v} for tap, v in zip(["stem", "layer4"], top1, strict=True)}
    write_json(path, payload)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_report_is_built_from_results_files_alone_with_shares_of_the_teacher(tmp_path, dataset):
    data = CIFAR10 if dataset == "cifar10" else f"cifar100:{write_cifar100(tmp_path)}"
    _, reports = stages_of(tmp_path, "full", data)
    values = {distill.TEACHER_ROW: 80.0, distill.SOURCES["imageB"]: 60.0, distill.SOURCES["noise"]: 50.0,
              distill.SOURCES["train-set"]: 78.0, distill.LABELS_ROW: 70.0}
    for path, label in reports:
        if "classify" in path.parts and label in values:  # (b) and (c) not run yet: left out
            fake_classify(path, values[label])
        elif label == distill.SOURCES["imageB"]:
            fake_linear(path, [40.0, 55.5])
    work = tmp_path / "work"
    report = distill.write_report(work, "distill", "full", reports, [], "cpu", data,
                                  ["train-distill-imageA-" + dataset]).read_text()
    stem = "report-distill" if dataset == "cifar10" else "report-distill-cifar100"
    assert (work / f"{stem}.md").exists() and (work / f"{stem}.png").stat().st_size > 10_000
    top1_table = report.split("## Top-1")[1].split("## ")[0]
    rows = {line.split(" | ")[0][2:]: line for line in top1_table.splitlines() if line.startswith("| (") or
            line.startswith("| teacher")}
    paper = {"cifar10": "94", "cifar100": "74"}[dataset]
    assert rows[distill.SOURCES["imageB"]] == f"| (a) Image B's patches | 60.0 | 80.0 | 75% | {paper} (one image) |"
    assert rows[distill.TEACHER_ROW] == "| teacher, with labels | 80.0 | 100.0 | - | - |"
    assert rows[distill.LABELS_ROW].endswith("| 70.0 | 90.0 | 88% | - |")
    assert distill.SOURCES["imageA"] not in top1_table
    assert "arXiv 2112.00725" in report and "another scale" in report
    assert "- share of the teacher: 75.0% (target at least 80%: short by 5.0 points)" in report
    assert "- above the uniform-noise student: +10.0 points (target at least +20: short by 10.0)" in report
    assert "| (a) Image B's patches | 40.0 | 55.5 |" in report  # the linear probe, per tap
    assert "- **incomplete**: 1 stages not yet run" in report


# The smoke preset runs once, in phases that are each a test on one worker (xdist_group): sources and teacher, the
# students, then classification and the report; then a second run that skips every stage.
SMOKE = pytest.mark.xdist_group("reproduce-distill-smoke")


@pytest.fixture(scope="session")
def distill_smoke(tmp_path_factory) -> SimpleNamespace:
    """`reproduce.py distill --preset smoke` on an embedded photo as Image B and a toy CIFAR-10, on the CPU."""
    return target_smoke(tmp_path_factory, "distill", [
        ("teacher", "source-*,render-*,train-teacher-*"), ("students", "source-*,render-*,train-*"), ("all", None)])


@SMOKE
def test_smoke_preset_renders_every_source_and_trains_the_teacher(distill_smoke):
    first = distill_smoke.run.upto("teacher")
    assert "4 selected stages done" in first.stdout  # noise, the smoke preset's two renders, the teacher
    for source in ("imageB", "noise"):
        manifest = json.loads((distill_smoke.work / "shards" / f"distill-{source}" / "manifest.json").read_text())
        assert manifest, source


@SMOKE
def test_smoke_preset_distils_every_student_from_the_teacher(distill_smoke):
    distill_smoke.run.upto("students")
    for student in SMOKE_STUDENTS:
        config = json.loads((distill_smoke.work / "runs" / f"{student}-cifar10" / "config.json").read_text())
        assert config["arch"] == "resnet18-cifar-w16", student


@SMOKE
def test_smoke_preset_classifies_every_run_and_reports(distill_smoke):
    distill_smoke.run.upto("all")
    work = distill_smoke.work
    for run in ["teacher", *SMOKE_STUDENTS]:
        results = json.loads((work / "classify" / f"{run}-cifar10" / "results.json").read_text())
        assert results["task"] == "classify" and "top1" in results["scores"]
    report = (work / "report-distill.md").read_text()
    smoke_rows = distill.preset_sources(distill.PRESETS["smoke"]).values()
    for label in [distill.TEACHER_ROW, *smoke_rows, distill.LABELS_ROW]:
        assert f"| {label} | " in report
    assert (work / "report-distill.png").stat().st_size > 10_000


@SMOKE
def test_smoke_preset_run_again_skips_every_stage(distill_smoke):
    distill_smoke.run.upto("all")
    again = subprocess.run(distill_smoke.cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("skipped") == 1 + 2 + 5 + 5  # noise, renders, trainings, classifications


def test_smoke_preset_on_cifar100_toy_pickles_trains_distils_and_classifies(tmp_path):
    """The same target on CIFAR-100 (toy pickles): the teacher, the student distilled through CIFAR-100's own
    training images (read by `train distill` as a real set) and its classification."""
    data = write_cifar100(tmp_path, train=40, test=20)
    work = tmp_path / "work"
    run = subprocess.run([sys.executable, str(ROOT / "experiments" / "reproduce.py"), "distill", "--preset", "smoke",
                          "--work", str(work), "--src", str(default_pool()[1]), "--data", f"cifar100:{data}",
                          "--device", "cpu", "--stages",
                          "train-teacher-*,train-distill-train-set-*,classify-distill-train-set-*"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((work / "classify" / "distill-train-set-cifar100" / "results.json").read_text())
    assert results["encoder"]["num_classes"] == 100 and results["data"]["kind"] == "cifar100"
