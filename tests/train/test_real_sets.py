"""`train METHOD KIND:PATH`: the self-supervised methods on real image sets (every registered data kind:
imagefolder, cifar10, cifar100, cifar10-jpg, shards), each image brought to the method's loader scale in the
workers; refusals; exact resume."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pipeline.pack import pack_set
from pipeline.sources import decode_rgb
from train.cli import main
from train.data.kinds import KINDS
from train.data.real_sets import RealImageSource, real_set_spec
from train.methods import get_method, list_methods
from train.run.loop import train

from ..conftest import python_cli, stop_when, train_config, write_cifar10, write_cifar100

SELF_SUPERVISED = [name for name in list_methods() if get_method(name).data_kind == "rendered"]
PAPER_METHODS = ["rotnet", "deepcluster", "bigan", "monogan"]
REPO = Path(__file__).resolve().parents[2]


def write_jpegs(root: Path, per_class: int = 20, seed: int = 0) -> Path:
    """ROOT/train/{a,b}/*.jpg: 2 x `per_class` small JPEGs of varying sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    for name in ("a", "b"):
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            width, height = (int(v) for v in rng.integers(36, 96, 2))
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / name / f"{i:03d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def real_sets(tmp_path_factory):
    """One small set of each kind: JPEG class folders, CIFAR-10 pickles, 32 px JPEG folders, packed shards."""
    root = tmp_path_factory.mktemp("real")
    folder = write_jpegs(root / "folder")
    cifar = write_cifar10(root / "cifar", per_batch=8, test=8)
    jpg = root / "cifar-jpg"
    for split in ("train", "test"):
        for name in ("a", "b"):
            (jpg / split / name).mkdir(parents=True)
            for i in range(12):
                Image.fromarray(np.full((32, 32, 3), 9 * i, np.uint8)).save(jpg / split / name / f"{i}.jpg")
    pack_set(folder / "train", root / "packed" / "train", shard_size=16, log=lambda m: None)
    cifar100 = write_cifar100(root / "cifar100", train=24, test=4)
    return {"imagefolder": f"imagefolder:{folder}", "cifar10": f"cifar10:{cifar}", "cifar10-jpg": f"cifar10-jpg:{jpg}",
            "shards": f"shards:{root / 'packed'}", "cifar100": f"cifar100:{cifar100}"}


def cfg(method: str, data: str, out: Path, **kw):
    return train_config(method, data, out, **{"batch_size": 8, "log_every": 1, "ckpt_every": 100,
                                              "shuffle_buffer": 16, **kw})


# every self-supervised method on a folder of JPEGs; the paper's four on every kind
RUNS = [(m, "imagefolder") for m in SELF_SUPERVISED] + [
    (m, kind) for kind in ("cifar10", "cifar10-jpg", "shards") for m in PAPER_METHODS]


@pytest.mark.parametrize(("method", "kind"), RUNS)
def test_each_method_trains_a_few_steps_on_each_kind(method, kind, real_sets, tmp_path):
    summary = train(cfg(method, real_sets[kind], tmp_path / "run", max_steps=3))
    assert summary["step"] == 3
    config = (tmp_path / "run" / "config.json").read_text()
    assert f'"kind": "{kind}"' in config and "loaded at 32 px" in config
    assert (tmp_path / "run" / "encoder.pt").is_file()


@pytest.mark.parametrize("kind", list(KINDS))  # every registered data kind (train/data/kinds/)
def test_the_loader_brings_images_to_the_scale_and_keeps_labels(kind, real_sets):
    source = RealImageSource(real_set_spec(real_sets[kind]), load_size=24, shuffle_buffer=8)
    batches = list(source.loader(0, 8, shuffle=True, seed=1, workers=1))
    assert len(batches) == source.num_samples // 8
    for batch in batches:
        assert batch.images.dtype == torch.uint8 and batch.images.shape[1:] == (3, 24, 24)
        assert batch.labels is not None and batch.labels.shape == batch.index.shape
    seen = torch.cat([b.index for b in batches])
    assert len(set(seen.tolist())) == len(seen)  # every sample once per epoch
    again = list(source.loader(0, 8, shuffle=True, seed=1, workers=1))
    pairs = zip(batches, again, strict=True)
    assert all(torch.equal(a.images, b.images) and torch.equal(a.index, b.index) for a, b in pairs)


def test_each_method_says_its_loader_scale():
    # the original loaders: RotNet and DeepCluster 256 for 224, BiGAN 128 for its 112 crops, CIFAR encoders 32
    scales = {name: get_method(name).real_input_scale(224) for name in PAPER_METHODS}
    assert scales == {"rotnet": 256, "deepcluster": 256, "bigan": 128, "monogan": 224}
    assert all(get_method(name).real_input_scale(32) == 32 for name in PAPER_METHODS)


def test_a_jpeg_is_decoded_at_reduced_size_only_when_the_target_is_at_most_half():
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 320, 3), dtype=np.uint8)).save(buffer, "JPEG")
    data = buffer.getvalue()
    assert decode_rgb(data, "x.jpg")[0].shape == (200, 320, 3)
    assert decode_rgb(data, "x.jpg", min_side=50)[0].shape == (50, 80, 3)  # 1/4 keeps the short side >= 50
    assert decode_rgb(data, "x.jpg", min_side=60)[0].shape == (100, 160, 3)  # 1/2: 1/4 would fall to 50
    assert decode_rgb(data, "x.jpg", min_side=101)[0].shape == (200, 320, 3)  # not at most half: full decode


def _cli(*args: str) -> subprocess.CompletedProcess:
    proc = python_cli("train.cli", *args, "--device", "cpu")
    output, _ = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, output, "")


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_truncated_jpeg_stops_with_one_line_naming_it(workers, tmp_path):
    root = write_jpegs(tmp_path / "set", per_class=6)
    bad = root / "train" / "b" / "003.jpg"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    out = tmp_path / "run"
    r = _cli("rotnet", f"imagefolder:{root}", "--out", str(out), "--arch", "cifar", "--batch-size", "4",
             "--max-steps", "6", "--workers", workers, "--no-progress", "--head-dim", "16")
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"Error: {bad}: corrupt or truncated image"), lines
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize(("data", "message"), [
    ("imagefolder:{tmp}/missing", "{tmp}/missing: no such folder"),
    ("imagefolder:{tmp}/empty", "{tmp}/empty: no class folders"),
    ("imagenet:{tmp}/empty", "imagenet:{tmp}/empty: unknown data set kind 'imagenet'"),
    ("cifar10:{tmp}/empty", "{tmp}/empty: not a CIFAR pickle folder"),
    ("shards:{tmp}/empty", "{tmp}/empty/train"),
])
def test_refusals_are_one_line(data, message, tmp_path):
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["rotnet", data.format(tmp=tmp_path), "--out", str(tmp_path / "run"), "--arch",
                                  "cifar", "--device", "cpu"])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and message.format(tmp=tmp_path) in lines[0], r.output
    assert not (tmp_path / "run").exists()


def test_a_rendered_set_and_urls_are_not_real_set_specs(tmp_path):
    odd = tmp_path / "set:1"
    odd.mkdir()
    assert real_set_spec(str(odd)) is None and real_set_spec("https://host/set") is None
    assert real_set_spec("pipe:cat x.tar") is None and real_set_spec("shards/mono") is None
    assert real_set_spec("imagefolder:~/data").kind == "imagefolder"


def test_probe_and_train_share_one_parser():
    import probe.datasets
    import train.data.specs

    assert probe.datasets.DataSpec is train.data.specs.DataSpec
    assert probe.datasets.open_data is train.data.specs.open_data


DC = ["--arch", "cifar", "--batch-size", "8", "--epochs", "10", "--workers", "1", "--no-progress", "--ckpt-every",
      "3", "--log-every", "1", "--k", "4", "--head-dim", "32", "--pca-dim", "8", "--seed", "5"]


def test_deepcluster_resume_on_an_image_folder_is_bit_identical(tmp_path):
    # 40 JPEGs at batch 8: 5 steps per epoch; 12 steps cross two epoch ends, so two re-clusterings after the kill
    data = f"imagefolder:{write_jpegs(tmp_path / 'set')}"
    assert _cli("deepcluster", data, "--out", str(tmp_path / "ref"), *DC, "--max-steps", "12").returncode == 0
    run = tmp_path / "killed"
    proc = python_cli("train.cli", "deepcluster", data, "--out", run, *DC, "--max-steps", "12", "--device", "cpu")
    stop_when(proc, (run / "checkpoint.pt").exists)  # SIGKILL at the first checkpoint
    proc.communicate(timeout=60)
    killed_at = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert 3 <= killed_at < 12, killed_at
    resumed = _cli("deepcluster", data, "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    a = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    b = torch.load(run / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 12
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["extra"]["labels"], b["extra"]["labels"])
