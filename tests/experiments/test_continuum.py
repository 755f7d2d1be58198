"""`reproduce continuum` (issue 33): the smoke preset end to end on a toy layout of the shared data, the seeded
pick of the N = 10 sets, the report built from results.json files alone, and its refusals."""

import copy
import io
import json
import re
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from experiments import cli
from experiments.registry import targets
from experiments.targets import continuum
from pipeline.sources import default_pool, discover_sources, select_sources

from ..conftest import StagedRun, write_cifar10

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "reproduce.py"
SMOKE = pytest.mark.xdist_group("reproduce-continuum-smoke")


def write_shared_layout(root: Path, photos: int = 12) -> Path:
    """ROOT laid out as ../shared/data: paper-images/{animals.png,ameyoko.jpg,sf.png} (scikit-image's photos) and
    imagenet-sample-1000.tar holding `photos` small JPEGs (crops of one photo); returns Image B's path."""
    pool = {p.name: p for p in default_pool()}
    paper = root / "paper-images"
    paper.mkdir(parents=True)
    for name, source in (("animals.png", "coffee.png"), ("ameyoko.jpg", "rocket.jpg"), ("sf.png", "astronaut.png")):
        (paper / name).write_bytes(pool[source].read_bytes())
    pixels = np.asarray(Image.open(pool["chelsea.png"]).convert("RGB"))
    with tarfile.open(root / continuum.SAMPLE_TAR, "w") as tar:
        for i in range(photos):
            crop = Image.fromarray(pixels[i * 10:i * 10 + 96, i * 15:i * 15 + 128])
            encoded = io.BytesIO()
            crop.save(encoded, "JPEG")
            member = tarfile.TarInfo(f"imagenet-sample-1000/n{i:08d}_photo.JPEG")
            member.size = len(encoded.getvalue())
            tar.addfile(member, io.BytesIO(encoded.getvalue()))
    return paper / "animals.png"


@pytest.fixture(scope="session")
def continuum_smoke(tmp_path_factory) -> SimpleNamespace:
    """The smoke preset on the toy layout and a toy CIFAR-10, on the CPU, in two phases (renders, the rest)."""
    root = tmp_path_factory.mktemp("continuum-smoke")
    src, data, work = write_shared_layout(root / "shared"), write_cifar10(root, per_batch=40, test=60), root / "work"
    cmd = [sys.executable, str(SCRIPT), "continuum", "--preset", "smoke", "--work", str(work), "--src", str(src),
           "--data", f"cifar10:{data}", "--device", "cpu"]
    phases = [("renders", "render-*"), ("trainings", "render-*,train-*"), ("all", None)]
    return SimpleNamespace(work=work, src=src, cmd=cmd, run=StagedRun(cmd, phases))


@SMOKE
def test_the_seeded_pick_is_the_same_on_every_run_and_differs_between_seeds(continuum_smoke):
    continuum_smoke.run.upto("renders")
    shards = continuum_smoke.work / "shards"
    picked = {seed: continuum.picked_sources(shards / f"cifar-deka-seed{seed}") for seed in (0, 1)}
    assert len(picked[0]) == len(picked[1]) == 10 and picked[0] != picked[1]
    sample = next((continuum_smoke.work / "sources").glob("imagenet-sample-*/imagenet-sample-1000"))
    for seed in (0, 1):  # render's own pick, made again here, picks the same files
        again = select_sources(discover_sources([sample]), 10, seed, min_side=8)
        assert [Path(s.path).name for s in again] == [p.name for p in picked[seed]]
    assert len(continuum.picked_sources(continuum_smoke.work / "shards" / "cifar-kilo")) == 12  # all of the toy sample
    # the sets have the same number of patches, whatever N
    counts = {json.loads((m / "manifest.json").read_text())["config"]["n_patches"]
              for m in (continuum_smoke.work / "shards").iterdir()}
    assert counts == {continuum.PRESETS["smoke"]["n_patches"]}


@SMOKE
def test_the_second_seed_trains_with_it_on_its_own_set(continuum_smoke):
    continuum_smoke.run.upto("trainings")
    runs = continuum_smoke.work / "runs"
    seeds = {name: json.loads((runs / name / "config.json").read_text())["seed"]
             for name in ("rotnet", "rotnet-deka-seed0", "rotnet-deka-seed1")}
    assert seeds == {"rotnet": 0, "rotnet-deka-seed0": 0, "rotnet-deka-seed1": 1}
    data = json.loads((runs / "rotnet-deka-seed1" / "config.json").read_text())["data"]
    assert Path(data).name == "cifar-deka-seed1"


@SMOKE
def test_smoke_preset_end_to_end_shares_cifar10s_stages_and_writes_the_report(continuum_smoke):
    out, work = continuum_smoke.run.upto("all").stdout, continuum_smoke.work
    records = {p.stem for p in (work / "stages").glob("*.json")}
    # the same names as `reproduce cifar10` for the same work
    assert {"render-cifar-B-all", "train-rotnet", "probe-rotnet", "train-rotnet-cifar10", "probe-random"} <= records
    assert {"train-rotnet-deka-seed1", "probe-rotnet-kilo"} <= records
    seed1 = json.loads((work / "stages" / "train-rotnet-deka-seed1.json").read_text())["command"]
    assert seed1[seed1.index("--seed") + 1] == "1"
    report = (work / "report-continuum.md").read_text()
    assert "report: " in out and (work / "report-continuum.png").exists()
    assert "| N = 10 (deka, seed 1) |" in report and "| N = 12 (kilo: the whole sample) |" in report
    assert "| N = 200 (all of CIFAR-10) |" in report  # the toy set's size, as results.json records it
    for seed in (0, 1):
        assert (work / f"report-continuum-deka-seed{seed}.png").exists()
    assert "--skip-bad" in report and "ImageNet numbers" in report


def fake_results(path: Path, top1: list[float], config: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "format": "single-image-ssl/probe-results", "version": 1, "task": "linear",
        "encoder": {"source": str(path.parent / "encoder.pt"), "config": config or {}},
        "data": {"kind": "cifar10"}, "layers": {f"conv{i + 1}": {"top1": v} for i, v in enumerate(top1)}}))
    return path


def test_the_report_and_plot_are_built_from_results_json_files_alone(tmp_path):
    """Fake results for the quick preset's rows (no stage run, no set rendered): the tables, the plot and both
    answers, with the seed spread beside them."""
    preset = continuum.PRESETS["quick"]
    reports = continuum.continuum_reports(tmp_path, preset, "cifar10:/nowhere")
    values = {"B": [60.0, 61, 58, 50], "B-seed1": [61.0, 60, 57, 52], "deka-seed0": [60.0, 62, 61, 54],
              "deka-seed1": [59.0, 62, 60, 55], "kilo": [61.0, 63, 63, 57], "full": [61.5, 64, 65, 60]}
    n = {"B": 1, "B-seed1": 1, "deka-seed0": 10, "deka-seed1": 10, "kilo": 1000}
    for path, label in reports:
        group, _, key = label.partition("/")
        if group == "ref":
            fake_results(path, {"random": [55.0, 52, 50, 47], "supervised": [63.0, 71, 73, 74]}[key])
        else:  # DeepCluster 5 points under RotNet everywhere
            shift = 0 if group == "rotnet" else -5
            config = {"num_samples": 50_000} if key == "full" else {"data_identity": {"sources": ["sha"] * n[key]}}
            fake_results(path, [v + shift for v in values[key]], config)
    out = continuum.write_report(tmp_path, "continuum", "quick", reports, [], "cpu", "cifar10:/nowhere")
    report = out.read_text()
    assert (tmp_path / "report-continuum.png").stat().st_size > 10_000
    assert "### RotNet" in report and "### DeepCluster" in report
    assert "| N = 1 (Image B, seed 1) | 61.0 | 60.0 | 57.0 | 52.0 |" in report
    assert "| N = 50,000 (all of CIFAR-10) | 61.5 | 64.0 | 65.0 | 60.0 |" in report
    assert "| *random (ReLU)* | 55.0 | 52.0 | 50.0 | 47.0 |" in report
    assert "| *supervised (CIFAR-10 labels)* | 63.0 | 71.0 | 73.0 | 74.0 |" in report
    # question 1: conv1 mean of Image B's seeds 60.5 against 61.5; question 2: gaps 9.0, 5.5, 3.0 at conv4
    assert ("RotNet: **yes**: N = 1 60.5 (seeds 60.0 / 61.0, spread 1.0) against N = full 61.5, difference -1.0"
            in report)
    assert ("RotNet: **yes**: full minus N at conv4 is N = 1: +9.0 (seed spread 2.0), N = 10: +5.5 (seed spread "
            "1.0), N = 1,000: +3.0") in report
    assert "ImageNet numbers" in report and "| ImageNet: (m) RotNet deka | 19.6 | 30.7 | 32.6 | 28.9 |" in report
    assert "not rendered yet" in report and "--skip-bad" in report
    # a row not yet probed: the question says so rather than answering
    for path, label in reports:
        if label == "deepcluster/kilo":
            path.unlink()
    report = continuum.write_report(tmp_path, "continuum", "quick", reports, [], "cpu", "cifar10:/x").read_text()
    assert "DeepCluster: not measured yet" in report


def test_a_preset_typo_is_refused_by_the_preset_check_before_any_stage(tmp_path, monkeypatch):
    src = write_shared_layout(tmp_path / "shared")
    target = targets()["continuum"]
    typo = copy.deepcopy(target.presets["quick"])
    typo["train"]["deepcluster-real"] = ["--max-step", "6240"]
    monkeypatch.setitem(target.presets, "quick", typo)
    work = tmp_path / "work"
    with pytest.raises(SystemExit) as refused:
        cli.main(["continuum", "--preset", "quick", "--work", str(work), "--src", str(src),
                  "--data", "cifar10:/data/cifar-10-batches-py", "--device", "cpu"])
    assert str(refused.value) == ("reproduce continuum: preset 'quick', stage train-deepcluster-cifar10: "
                                  "`train deepcluster` has no option --max-step")
    assert not (work / "stages").exists()


def test_a_missing_shared_file_is_one_line_naming_what_to_pass(tmp_path):
    src = write_shared_layout(tmp_path / "shared")
    (tmp_path / "shared" / continuum.SAMPLE_TAR).unlink()
    with pytest.raises(SystemExit) as refused:
        cli.main(["continuum", "--work", str(tmp_path / "work"), "--src", str(src), "--data", "cifar10:/d"])
    message = str(refused.value)
    assert "\n" not in message and re.match(r"^reproduce continuum: .*imagenet-sample-1000\.tar not found; pass "
                                            r"--src DIR/paper-images/animals\.png", message)


def test_the_quick_preset_keeps_cifar10s_commands_for_the_shared_stages(tmp_path):
    src = write_shared_layout(tmp_path / "shared")
    data = "cifar10:/data/cifar-10-batches-py"
    ours, _ = cli.load(targets()["continuum"], "quick", tmp_path / "w", src, data, "cpu")
    theirs, _ = cli.load(targets()["cifar10"], "quick", tmp_path / "w", src, data, "cpu")
    ours, theirs = {s.name: s.command for s in ours}, {s.name: s.command for s in theirs}
    shared = set(ours) & set(theirs)
    assert {"render-cifar-B-all", "train-rotnet", "probe-deepcluster", "train-rotnet-cifar10",
            "train-supervised", "probe-random"} <= shared
    assert all(ours[name] == theirs[name] for name in shared)
    renders = {name: cmd for name, cmd in ours.items() if name.startswith("render-cifar-deka")}
    assert [cmd[cmd.index("--seed") + 1] for cmd in renders.values()] == ["0", "1"]


def test_a_sample_with_fewer_images_than_n_gets_renders_one_line_refusal(tmp_path, monkeypatch, capfd):
    src = write_shared_layout(tmp_path / "shared", photos=9)
    monkeypatch.setitem(targets()["continuum"].presets, "smoke", {**continuum.PRESETS["smoke"], "workers": 0})
    with pytest.raises(SystemExit, match=r"^\[render-cifar-deka-seed0\] failed"):
        cli.main(["continuum", "--preset", "smoke", "--work", str(tmp_path / "work"), "--src", str(src),
                  "--data", "cifar10:/d", "--device", "cpu", "--stages", "render-cifar-deka-seed0"])
    assert "--n-src 10 asks for more images than the given sources hold (9)" in capfd.readouterr().err
