"""Acceptance (issue 31 item 3): a data kind is one file. A tiny kind (`npz:PATH`, image and label arrays in one .npz
file), written into a temporary folder named in SINGLE_IMAGE_SSL_PLUGINS, is read by `train` (a self-supervised
method and the supervised baseline) and `probe`, and listed by their help, with no other edit; an unknown kind is the
one-line error listing the registered kinds; the help texts generated from the registry are today's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from train.data.kinds import KINDS, labelled_folder_listing, probe_data_help, real_set_listing

REPO = Path(__file__).resolve().parents[2]
BUILT_IN = ["cifar10", "cifar100", "cifar10-jpg", "imagefolder", "shards"]

# What a user adding a kind writes: its prefix, help and style, and `open` (both splits, labels, classes). The default
# readers of `train` (the self-supervised methods' and `train supervised`'s) read the train split `open` gives.
NPZ_KIND = '''
"""`npz:PATH`: a set kept as one .npz file of arrays."""

from pathlib import Path

from common.errors import DataError
from train.data.kinds import register_kind
from train.data.kinds.base import DataKind
from train.data.specs import LabelledData

FIELDS = ("train_images", "train_labels", "test_images", "test_labels", "classes")


@register_kind
class Npz(DataKind):
    name = "npz"
    summary = "arrays in one .npz file: PATH holds " + ", ".join(FIELDS)
    probe_help = "one .npz file of uint8 N x H x W x 3 images and their labels"
    style = "cifar"

    @classmethod
    def open(cls, spec, cache_dir=None):
        import numpy as np

        from train.data.sources import ArrayImages

        path = Path(spec.path)
        if not path.is_file():
            raise DataError(f"{path}: no such .npz file")
        with np.load(path) as arrays:
            missing = [name for name in FIELDS if name not in arrays]
            if missing:
                raise DataError(f"{path}: missing {', '.join(missing)}")
            a = {name: arrays[name] for name in FIELDS}
        return LabelledData(spec, [str(c) for c in a["classes"]],
                            ArrayImages(a["train_images"], a["train_labels"]),
                            ArrayImages(a["test_images"], a["test_labels"]), style=cls.style)
'''

# In a child process: the registries of this one must not learn the plugin (other tests check what they list).
DRIVER = """
import json, sys
from click.testing import CliRunner
import probe.cli, train.cli
results = []
for tool, args in json.loads(sys.argv[1]):
    r = CliRunner().invoke({"train": train.cli.main, "probe": probe.cli.main}[tool], args, terminal_width=200)
    results.append({"code": r.exit_code, "output": r.output, "error": repr(r.exception) if r.exception else None})
print(json.dumps(results))
"""
TRAIN_QUICK = ["--arch", "cifar", "--max-steps", "2", "--batch-size", "8", "--workers", "0", "--device", "cpu",
               "--no-progress", "--no-tensorboard"]
PROBE_QUICK = ["--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-progress", "--threads", "1",
               "--layers", "conv1"]


def _invoke(plugins: Path, *commands: tuple[str, list]) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SINGLE_IMAGE_SSL_PLUGINS": str(plugins)}
    payload = json.dumps([[tool, [str(a) for a in args]] for tool, args in commands])
    proc = subprocess.run([sys.executable, "-c", DRIVER, payload], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def npz_set(tmp_path) -> tuple[Path, Path]:
    """The plugin folder holding the kind, and a set of 32 + 16 random 32 px images of 3 classes in its format."""
    plugins = tmp_path / "my-kinds"
    plugins.mkdir()
    (plugins / "npz_kind.py").write_text(NPZ_KIND)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(48, dtype=np.int64) % 3
    data = tmp_path / "set.npz"
    np.savez(data, train_images=images[:32], train_labels=labels[:32], test_images=images[32:],
             test_labels=labels[32:], classes=np.array(["red", "green", "blue"]))
    return plugins, data


def test_a_kind_file_in_a_plugin_folder_is_trained_and_probed_on(npz_set, tmp_path):
    plugins, data = npz_set
    spec, unknown = f"npz:{data}", f"mnist:{tmp_path}"
    # in one process, as the CLIs are entry points: torch is imported once
    trained, supervised, probed, train_help, probe_help, train_unknown, probe_unknown = _invoke(
        plugins, ("train", ["rotnet", spec, "--out", tmp_path / "rot", *TRAIN_QUICK, "--head-dim", "16"]),
        ("train", ["supervised", spec, "--out", tmp_path / "sup", *TRAIN_QUICK]),
        ("probe", ["linear", tmp_path / "rot" / "encoder.pt", "--data", spec, "--out", tmp_path / "lin",
                   *PROBE_QUICK]),
        ("train", ["rotnet", "--help"]), ("probe", ["linear", "--help"]),
        ("train", ["rotnet", unknown, "--out", tmp_path / "never", *TRAIN_QUICK]),
        ("probe", ["linear", "random:cifar", "--data", unknown, "--out", tmp_path / "never", *PROBE_QUICK]))
    for run in (trained, supervised, probed, train_help, probe_help):
        assert run["code"] == 0 and run["error"] is None, run
    assert "done: 2 steps" in trained["output"] and (tmp_path / "rot" / "encoder.pt").is_file()
    config = (tmp_path / "rot" / "config.json").read_text()
    assert '"kind": "npz"' in config and "(train split, 32 images, 3 classes, loaded at 32 px)" in config
    assert "done: 2 steps" in supervised["output"] and (tmp_path / "sup" / "encoder.pt").is_file()
    results = json.loads((tmp_path / "lin" / "results.json").read_text())
    assert results["data"]["kind"] == "npz" and results["data"]["style"] == "cifar"
    assert (results["data"]["train_size"], results["data"]["test_size"], results["data"]["num_classes"]) == (32, 16, 3)
    assert list(results["layers"]) == ["conv1"]
    # the help texts that list the kinds list it, after the built-in ones
    assert "cifar100:, cifar10-jpg:, npz:), whose train split" in " ".join(train_help["output"].split()), train_help
    assert "npz (one .npz file of uint8 N x H x W x 3 images and their labels)." in " ".join(
        probe_help["output"].split())
    kinds = ", ".join([*BUILT_IN, "npz"])
    for run in (train_unknown, probe_unknown):
        assert run["code"] == 1 and run["output"].splitlines() == [
            f"Error: {unknown}: unknown data set kind 'mnist'; choose one of {kinds}"], run
    assert not (tmp_path / "never").exists()


def test_an_unknown_kind_is_one_line_listing_the_registered_kinds(tmp_path):
    from click.testing import CliRunner

    from probe.cli import main

    result = CliRunner().invoke(main, ["linear", "random:cifar", "--data", f"mnist:{tmp_path}", "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code == 1 and result.output.splitlines() == [
        f"Error: mnist:{tmp_path}: unknown data set kind 'mnist'; choose one of {', '.join(BUILT_IN)}"]


def test_the_help_texts_generated_from_the_registry_are_the_ones_written_before_it():
    # the built-in kinds in file order; --help of `train METHOD` and `probe linear` byte-identical to issue 31's start
    assert list(KINDS) == BUILT_IN
    assert real_set_listing() == "imagefolder:, shards:, cifar10:, cifar100:, cifar10-jpg:"
    assert labelled_folder_listing() == "cifar10, cifar10-jpg, cifar100 or imagefolder"
    assert probe_data_help() == (
        "Data set as KIND:PATH. Kinds: cifar10 / cifar100 (python pickles), cifar10-jpg (the shared "
        "train.tar.gz + test.tar.gz, extracted once into the cache), imagefolder (PATH/train and PATH/val "
        "class folders), shards (PATH/train and PATH/val packed by `pipeline pack`, PATH a folder or an http(s) "
        "URL, streamed; or each split on its own: 'shards:train=SPLIT;val=SPLIT', SPLIT a folder, URL, or URL "
        "pattern with ';train-manifest=M' / ';val-manifest=M').")
