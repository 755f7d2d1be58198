"""Behaviour fingerprint: a pinned render and a fixed-seed 20-step CPU run of every method, as sha256 digests.

A restructuring or a GPU-only fix must leave the CPU fp32 results (``--no-amp``) untouched. Run this before and
after a change on the same machine and compare the lines (``bench/results/fingerprint.md`` records the reference):

    python bench/fingerprint.py            # prints one 'name digest' line per item
    python bench/fingerprint.py --check bench/results/fingerprint.md   # exit 1 when a digest moved
    python bench/fingerprint.py --methods simclr --set simclr.jitter_strength=1.0   # an earlier default back

Digests are of the exact bytes (shards) and the exact float32 weights (``state_dict`` in key order), so they are
meaningful on one machine and one torch build; another CPU (other oneDNN kernels) gives other, equally valid digests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS = 20


def _digest_tensors(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def render_digest(folder: Path) -> str:
    from pipeline.config import RenderConfig
    from pipeline.render import render_set

    render_set(folder, RenderConfig(n_patches=256, size=32, shard_size=64, seed=0), log=lambda *a, **k: None)
    h = hashlib.sha256()
    for tar in sorted(folder.glob("patches-*.tar")):
        h.update(tar.read_bytes())
    return h.hexdigest()[:16]


def labelled_folder(folder: Path) -> Path:
    """A deterministic 4-class ImageFolder of 32 px PNGs (64 images) for the supervised baseline."""
    rng = np.random.default_rng(0)
    for c in range(4):
        (folder / f"class{c}").mkdir(parents=True)
        for i in range(16):
            img = (rng.random((32, 32, 3)) * 64 + c * 48).astype(np.uint8)
            Image.fromarray(img).save(folder / f"class{c}" / f"{i:03d}.png")
    return folder


def method_digest(method: str, data: Path, out: Path, overrides: dict | None = None) -> str:
    """The weights after a fixed-seed fp32 run (``--no-amp``: bf16 is the default on CPUs that have it) with the
    method's ``small_options`` (its smoke-run settings) and ``overrides``."""
    overrides = overrides or {}
    from train.methods import get_method
    from train.run.loop import TrainConfig, train

    torch.set_num_threads(1)
    cfg = TrainConfig(method=method, data=str(data), out=str(out), arch="cifar", batch_size=16, epochs=100,
                      max_steps=STEPS, workers=0, progress=False, log_every=4, ckpt_every=8, shuffle_buffer=64,
                      seed=0, device="cpu", amp=False, options={**get_method(method).small_options, **overrides})
    train(cfg)
    model = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    return _digest_tensors(model)


def fingerprints(methods: list[str], overrides: dict[str, dict] | None = None) -> dict[str, str]:
    from train.methods import get_method

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = {"render": render_digest(tmp / "set")}
        labelled = labelled_folder(tmp / "labelled")
        for m in methods:
            data = labelled if get_method(m).data_kind == "labelled" else tmp / "set"
            rows[f"train-{m}"] = method_digest(m, data, tmp / f"run-{m}", (overrides or {}).get(m))
            print(f"{'train-' + m:20s} {rows['train-' + m]}", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", type=Path, help="a results file with 'name digest' lines to compare against")
    ap.add_argument("--methods", default=None, help="comma-separated methods (default: every registered one; one "
                    "the reference does not record is listed as NOT RECORDED)")
    ap.add_argument("--set", action="append", default=[], metavar="METHOD.OPTION=VALUE",
                    help="an option of one method (a JSON value), e.g. to check a changed default's earlier value")
    args = ap.parse_args()
    from train.methods import list_methods

    overrides: dict[str, dict] = {}
    for item in args.set:
        target, _, value = item.partition("=")
        method, _, option = target.partition(".")
        overrides.setdefault(method, {})[option] = json.loads(value)
    rows = fingerprints(args.methods.split(",") if args.methods else list_methods(), overrides)
    print(f"{'render':20s} {rows['render']}")
    return 0 if args.check is None else check_against(rows, args.check)


def check_against(rows: dict[str, str], reference: Path) -> int:
    """Print each digest that moved or is not recorded in `reference`, then 'identical'; 1 when one moved. The first
    digest recorded for an item counts: a results file lists this machine's table before older machines' ones."""
    expected: dict[str, str] = {}
    for item, digest in re.findall(r"^\|?\s*`?([\w-]+)`?\s*\|?\s*`?([0-9a-f]{16})`?", reference.read_text(), re.M):
        expected.setdefault(item, digest)
    moved = [f"{k}: {expected[k]} -> {v}" for k, v in rows.items() if k in expected and expected[k] != v]
    missing = [k for k in rows if k not in expected]
    for line in moved:
        print("MOVED", line)
    for k in missing:
        print("NOT RECORDED", k)
    print("identical" if not moved else f"{len(moved)} digest(s) moved")
    return 1 if moved else 0


if __name__ == "__main__":
    sys.exit(main())
