"""The learning-free baselines through `probe`: scattering probed and fine-tuned above, `probe init-kmeans`."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from probe.cli import main
from probe.report import _default_key


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


QUIET = ("--workers", "0", "--no-progress", "--device", "cpu")


def test_init_kmeans_writes_an_encoder_that_probes(tmp_path, writers):
    writers.cifar10(tmp_path / "data", per_batch=10, test=10)
    data = f"cifar10:{tmp_path / 'data'}"
    out = tmp_path / "km"
    result = _run("init-kmeans", "cifar", "--data", data, "--n-images", "48", "--between-layer-iterations", "2",
                  "--out", out, "--threads", "1")
    assert result.exit_code == 0, result.output
    payload = torch.load(out / "encoder.pt", weights_only=True)
    config = payload["config"]
    assert payload["arch"] == "cifar" and config["method"] == "kmeans-init" and config["n_images"] == 48
    assert config["data"] == data and config["init"]["seed"] == 0 and config["init"]["patches"]["conv1"] == 4800
    again = _run("init-kmeans", "cifar", "--data", data, "--n-images", "48", "--between-layer-iterations", "2",
                 "--out", out, "--force", "--threads", "1")
    assert again.exit_code == 0, again.output
    for key, value in torch.load(out / "encoder.pt", weights_only=True)["state_dict"].items():
        assert torch.equal(value, payload["state_dict"][key]), key  # deterministic from the seed
    probed = _run("linear", out / "encoder.pt", "--data", data, "--out", tmp_path / "p", "--epochs", "1",
                  "--batch-size", "8", *QUIET)
    assert probed.exit_code == 0, probed.output
    results = json.loads((tmp_path / "p" / "results.json").read_text())
    assert list(results["layers"]) == ["conv1", "conv2", "conv3", "conv4"]
    assert _default_key(results["encoder"]) == "kmeans-init"  # placed under Table 2 row (d) by probe report


def test_init_kmeans_refusals_are_one_line(tmp_path, writers):
    writers.cifar10(tmp_path / "data", per_batch=2, test=2)
    data = f"cifar10:{tmp_path / 'data'}"
    for args, problem in ((("cifar", "--n-images", "160"), "fewer than --n-images 160"),
                          (("alexnet", "--n-images", "4"), "32 px but the architecture takes 224 px"),
                          (("scattering-cifar", "--n-images", "4"), "convolutional encoders"),
                          (("cifar", "--n-images", "8"), "use more images")):
        result = _run("init-kmeans", *args, "--data", data, "--out", tmp_path / "x", "--threads", "1")
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1 and problem in lines[0], result.output
    assert not (tmp_path / "x" / "encoder.pt").exists()


def test_scattering_is_probed_on_cifar_with_conv2_pooled_below_9600(tmp_path, writers):
    writers.cifar10(tmp_path / "data", per_batch=4, test=6)
    out = tmp_path / "s"
    result = _run("linear", "random:scattering-cifar", "--data", f"cifar10:{tmp_path / 'data'}", "--out", out,
                  "--epochs", "1", "--batch-size", "8", *QUIET)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert {name: row["dims"] for name, row in results["layers"].items()} == {"conv1": 3264, "conv2": 8748}
    assert _default_key(results["encoder"]) == "scattering"  # not the random row: nothing in it is random


def test_scattering_on_imagenet_size_data_pools_and_finetunes_the_alexnet_above_it(tmp_path, writers):
    for split in ("train", "val"):
        writers.image_tree(tmp_path / "data" / split, {"a": 2, "b": 1}, size=40)
    data = f"imagefolder:{tmp_path / 'data'}"
    probe = _run("linear", "random:scattering", "--data", data, "--out", tmp_path / "p", "--layers", "conv2",
                 "--epochs", "1", "--batch-size", "2", "--center-crop", *QUIET)
    assert probe.exit_code == 0, probe.output
    row = json.loads((tmp_path / "p" / "results.json").read_text())["layers"]["conv2"]
    assert row["dims"] == 243 * 6 * 6  # 243 x 56 x 56 max-pooled to the grid nearest 9,216 dimensions
    tuned = _run("finetune", "random:scattering-alexnet", "--data", data, "--out", tmp_path / "ft", "--epochs",
                 "1", "--batch-size", "3", "--center-crop", *QUIET)
    assert tuned.exit_code == 0, tuned.output
    results = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert results["protocol"]["frozen"] == ["conv2"]  # the scattering front end, which has nothing to train
    state = torch.load(tmp_path / "ft" / "encoder.pt", weights_only=True)["state_dict"]
    assert not any(key.startswith("scattering") for key in state)
    assert state["conv3.conv.weight"].shape == (384, 243, 3, 3) and state["conv3.norm.running_var"].ne(1).any()
