"""`--data shards:LOCATION`: packed labelled splits streamed from a folder or over http, probed ImageNet-style.

The encoder is random:alexnet-small: ImageNet-style probing evaluates at 224 px, which the 32 px CIFAR encoder
refuses; conv1 alone keeps it fast.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from pipeline.pack import pack_set
from probe.cli import main
from probe.datasets import data_loader, open_data, subset
from probe.errors import DataError

from ..loopback import LoopbackServer

TRAIN = {"ant": 6, "bee": 5, "cow": 5}
VAL = {"ant": 2, "bee": 2, "cow": 2}


def _pack(root, writers, val=VAL, val_name="val"):
    for name, counts in (("train", TRAIN), (val_name, val)):
        writers.image_tree(root / "src" / name, counts, size=32, seed=len(name))
        pack_set(root / "src" / name, root / "shards" / name, shard_size=4, log=lambda m: None)
    return root / "shards"


def _probe(location, out, *extra):
    return CliRunner().invoke(main, ["linear", "random:alexnet-small", "--data", f"shards:{location}", "--out",
                                     str(out), "--layers", "conv1", "--epochs", "1", "--batch-size", "4",
                                     "--no-progress", *extra], catch_exceptions=False)


def _check_results(out, location):
    results = json.loads((out / "results.json").read_text())
    data = results["data"]
    assert data["kind"] == "shards" and data["path"] == str(location) and data["streamed"]
    assert data["num_classes"] == 3 and data["train_size"] == 16 and data["test_size"] == 6
    assert results["protocol"]["ten_crop"] and set(results["layers"]) == {"conv1"}
    return results


def test_probe_a_packed_pair_from_a_folder(tmp_path, writers):
    location = _pack(tmp_path, writers)
    result = _probe(location, tmp_path / "out", "--workers", "0")
    assert result.exit_code == 0, result.output
    _check_results(tmp_path / "out", location)


def test_probe_a_packed_pair_over_http(tmp_path, writers):
    location = _pack(tmp_path, writers, val_name="test")  # test/ stands in for val/
    with LoopbackServer(location) as server:
        result = _probe(server.url, tmp_path / "out", "--workers", "2")
        assert result.exit_code == 0, result.output
        _check_results(tmp_path / "out", server.url)
        # every sample exactly once per epoch across 2 workers, and each epoch in a new order
        train = open_data(f"shards:{server.url}/").train
        loader = data_loader(train.with_transform(lambda image: torch.tensor(image.size)), 4, shuffle=True,
                             workers=2, seed=0, drop_last=False)
        epochs = []
        for epoch in (0, 1):
            loader.dataset.set_epoch(epoch)
            epochs.append(torch.cat([labels for _, labels in loader]).tolist())
        assert [sorted(e) for e in epochs] == [[0] * 6 + [1] * 5 + [2] * 5] * 2
        assert epochs[0] != epochs[1]


def test_mismatched_classes_are_a_clear_error(tmp_path, writers):
    location = _pack(tmp_path, writers, val={"ant": 1, "bee": 1, "dog": 1})
    result = _probe(location, tmp_path / "out")
    assert result.exit_code == 1
    assert f"Error: {location}/val: classes do not match {location}/train (missing cow; extra dog)" in result.output


def test_limits_are_refused_for_streamed_data(tmp_path, writers):
    location = _pack(tmp_path, writers)
    data = open_data(f"shards:{location}")
    with pytest.raises(DataError, match="--limit-train/--limit-test need random access"):
        subset(data.train, 5, seed=0)
    assert subset(data.train, None, seed=0) is data.train
    result = _probe(location, tmp_path / "out", "--limit-test", "3")
    assert result.exit_code == 1 and "need random access" in result.output


def test_training_reads_several_shards_at_once(tmp_path, writers):
    # a packed split is in class order: shards 0 and 3 hold only ant and only cow; reading them interleaved
    # puts both classes into the first batch even without a shuffle buffer to speak of
    location = _pack(tmp_path, writers)
    train = open_data(f"shards:{location}").train.shuffled(seed=0, buffer=1)
    labels = [label for _, label in train]
    assert sorted(labels) == [0] * 6 + [1] * 5 + [2] * 5
    assert {0, 2} <= set(labels[:4])
