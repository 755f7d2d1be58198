"""Probe fingerprint: fixed-seed CPU runs of `probe linear`, `probe finetune` and `probe filters`, as digests.

The probe's numbers must not move in a restructuring. This runs the probe CLI on small synthetic data it writes
itself (CIFAR-10 pickles; a 224 px ImageFolder set for the pooled, 10-crop ImageNet-style path) and on an encoder
whose BatchNorm statistics are far from identity (so that folding them into the convolutions matters), then prints
sha256 prefixes of the scores and training histories in results.json, of the fine-tuned weights and of the filter
pictures:

    python bench/probe_fingerprint.py
    python bench/probe_fingerprint.py --check bench/results/probe-fingerprint.md   # exit 1 when a digest moved

Like bench/fingerprint.py, digests are meaningful on one machine and one torch build.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fingerprint import _digest_tensors, check_against  # noqa: E402


def write_cifar10(root: Path, per_batch: int = 40, test: int = 50) -> Path:
    """cifar-10-batches-py with random images and labels, 5 x `per_batch` training and `test` test images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"class{i}" for i in range(10)]
    batches = {f"data_batch_{i}": per_batch for i in range(1, 6)} | {"test_batch": test}
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    for name, count in batches.items():
        payload = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                   "labels": rng.integers(0, 10, count).tolist()}
        (folder / name).write_bytes(pickle.dumps(payload))
    return folder


def write_image_folder(root: Path) -> Path:
    """root/{train,val}/<class>/*.png: 3 classes, 4 training and 2 test images each, 64 px."""
    rng = np.random.default_rng(1)
    for split, count in (("train", 4), ("val", 2)):
        for c in range(3):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(count):
                pixels = (rng.random((64, 64, 3)) * 128 + c * 60).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / f"c{c}" / f"{i}.png")
    return root


def encoder_with_bn_statistics(path: Path, arch: str) -> Path:
    """An encoder.pt of `arch` whose BatchNorms hold non-trivial statistics and (partly negative) scales."""
    from train.models import build_encoder
    from train.models.encoder_io import save_encoder

    torch.manual_seed(3)
    encoder = build_encoder(arch)
    generator = torch.Generator().manual_seed(0)
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 3 + 0.1)
            module.weight.data.copy_(torch.randn(n, generator=generator))
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    save_encoder(path, encoder, arch, {})
    return path


def _probe(*args: str) -> None:
    """`probe ARGS` in this process; training commands on one thread, without workers or progress bars."""
    from probe.cli import main

    quiet = ["--no-progress", "--workers", "0", "--threads", "1"] if args[0] in ("linear", "finetune") else []
    main.main([*args, *quiet], standalone_mode=False)


def _json_digest(results: Path, keys: tuple[str, ...]) -> str:
    payload = json.loads(results.read_text())
    return hashlib.sha256(json.dumps({k: payload[k] for k in keys}, sort_keys=True).encode()).hexdigest()[:16]


def probe_rows(tmp: Path) -> dict[str, str]:
    torch.set_num_threads(1)
    cifar = f"cifar10:{write_cifar10(tmp / 'cifar')}"
    folder = f"imagefolder:{write_image_folder(tmp / 'images')}"
    trained_cifar = str(encoder_with_bn_statistics(tmp / "cifar.pt", "cifar"))
    trained_small = str(encoder_with_bn_statistics(tmp / "small.pt", "alexnet-small"))
    rows = {}
    runs = {
        "linear-random-cifar": ("linear", "random:cifar", "--data", cifar, "--epochs", "1", "--batch-size", "32"),
        "linear-bn-cifar": ("linear", trained_cifar, "--data", cifar, "--epochs", "2", "--batch-size", "32",
                            "--milestones", "1", "--cifar-flip"),
        "linear-bn-imagefolder": ("linear", trained_small, "--data", folder, "--epochs", "1", "--batch-size", "4"),
        "finetune-bn-cifar": ("finetune", trained_cifar, "--data", cifar, "--epochs", "1", "--batch-size", "32"),
        "finetune-bn-imagefolder": ("finetune", trained_small, "--data", folder, "--epochs", "1", "--batch-size",
                                    "4", "--freeze", "conv1", "--keep", "conv3"),
    }
    for name, args in runs.items():
        out = tmp / name
        _probe(*args, "--out", str(out))
        keys = ("layers", "history") if args[0] == "linear" else ("scores", "history")
        rows[name] = _json_digest(out / "results.json", keys)
        if args[0] == "finetune":
            weights = torch.load(out / "encoder.pt", map_location="cpu", weights_only=True)["state_dict"]
            rows[name + "-weights"] = _digest_tensors(weights)
    # the sheet's title names the encoder (its folder for an encoder.pt, else its path): a fixed folder name keeps the
    # temporary directory's random name out of the picture
    named = tmp / "trained-cifar" / "encoder.pt"
    named.parent.mkdir()
    shutil.copyfile(trained_cifar, named)
    for arch, source in (("cifar", str(named)), ("alexnet", "random:alexnet")):
        picture = tmp / f"filters-{arch}.png"
        _probe("filters", source, "--out", str(picture))
        rows[f"filters-{arch}"] = hashlib.sha256(picture.read_bytes()).hexdigest()[:16]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", type=Path, help="a results file with 'name digest' lines to compare against")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = probe_rows(Path(tmp))
    for name, digest in rows.items():
        print(f"{name:28s} {digest}")
    return 0 if args.check is None else check_against(rows, args.check)


if __name__ == "__main__":
    sys.exit(main())
