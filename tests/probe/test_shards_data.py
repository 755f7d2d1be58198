"""`--data shards:LOCATION`: packed labelled splits streamed from a folder or over http, probed ImageNet-style;
or each split named on its own (`train=...;val=...`), as a folder or as a URL pattern with its manifest.

The encoder is random:alexnet-small: ImageNet-style probing evaluates at 224 px, which the 32 px CIFAR encoder
refuses; conv1 alone keeps it fast.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from common.errors import DataError
from pipeline.pack import pack_set
from probe.cli import main
from probe.datasets import data_loader, open_data, subset
from probe.results import portable

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
    # recorded as given, an absolute path relative to the results' folder (no machine path in results.json)
    assert data["kind"] == "shards" and data["path"] == portable(str(location), out) and data["streamed"]
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


def _samples(split) -> list[tuple[bytes, int]]:
    return [(np.asarray(image).tobytes(), label) for image, label in split]


def _same_samples_as_the_folder_form(spec, location):
    """The split list streams what the packed pair does: in order for testing, each sample once when shuffled."""
    folder, named = open_data(f"shards:{location}"), open_data(f"shards:{spec}")
    assert named.classes == folder.classes
    assert _samples(named.train) == _samples(folder.train) and _samples(named.test) == _samples(folder.test)
    shuffled = _samples(named.train.shuffled(seed=0, buffer=1))  # the interleaved training streams
    assert sorted(shuffled) == sorted(_samples(folder.train)) and shuffled != _samples(folder.train)


def test_probe_splits_given_as_url_patterns_with_manifests(tmp_path, writers):
    location = _pack(tmp_path, writers)
    with LoopbackServer(location) as server:
        spec = (f"train={server.url}/train/patches-{{000000..000003}}.tar;"
                f"train-manifest={server.url}/train/manifest.json;"
                f"val={server.url}/val/patches-{{000000..000001}}.tar;val-manifest={server.url}/val/")
        result = _probe(spec, tmp_path / "out", "--workers", "2")
        assert result.exit_code == 0, result.output
        results = _check_results(tmp_path / "out", spec)
        assert results["data"]["train_location"] == f"{server.url}/train/patches-{{000000..000003}}.tar"
        _same_samples_as_the_folder_form(spec, location)


def test_probe_splits_given_as_pipe_commands_and_folders(tmp_path, writers):
    location = _pack(tmp_path, writers)
    spec = (f"train=pipe:cat {location}/train/patches-{{000000..000003}}.tar; "
            f"train-manifest={location}/train/manifest.json; val={location}/val")
    result = _probe(spec, tmp_path / "out", "--workers", "0")
    assert result.exit_code == 0, result.output
    _check_results(tmp_path / "out", spec)
    _same_samples_as_the_folder_form(spec, location)


def test_split_lists_refuse_what_they_cannot_read_in_one_line(tmp_path, writers):
    location = _pack(tmp_path, writers)
    pattern = f"pipe:cat {location}/train/patches-{{000000..000003}}.tar"
    manifest, val = f"{location}/train/manifest.json", f"val={location}/val"
    short = pattern.replace("000003", "000002")
    cases = {
        f"train={pattern};{val}": f"{pattern}: a URL pattern needs train-manifest= (the split's manifest.json",
        f"train={short};train-manifest={manifest};{val}":
            f"{short}: the URL pattern does not match the manifest's 4 shards: misses 1 (patches-000003.tar) "
            f"({manifest})",
        f"train={pattern};train-manifest={location}/nowhere/manifest.json;{val}": f"{location}/nowhere: no such folder",
        f"train={location}/train": f"train={location}/train: missing val=SPLIT",
        f"train={location}/train;{val};val-manifest={manifest}":
            f"{location}/val: val-manifest= goes with a URL pattern",
        f"train=pipe:cat a; cat b;{val}": "'cat b' is not NAME=VALUE with NAME one of train, train-manifest, val",
        f"train={location}/train;{val};{val}": "val= given twice",
    }
    for spec, message in cases.items():
        with pytest.raises(DataError, match=re.escape(message)):
            open_data(f"shards:{spec}")
    result = _probe(f"train={pattern};{val}", tmp_path / "out")
    assert result.exit_code == 1
    assert f"Error: {pattern}: a URL pattern needs train-manifest=" in result.output


def test_packed_images_reach_the_probe_as_they_would_from_their_folder(tmp_path):
    """pack copies files unchanged; the stream must decode them as the folder form does (EXIF, 16-bit scaled)."""
    from PIL import Image

    from train.data.image_folder import load_rgb

    for split in ("train", "val"):
        folder = tmp_path / "src" / split / "a"
        folder.mkdir(parents=True)
        Image.fromarray(np.full((8, 8), 30000, np.uint16)).save(folder / "grey16.png")
        halves = np.zeros((6, 10, 3), np.uint8)
        halves[:, 5:] = 255
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
        Image.fromarray(halves).save(folder / "rotated.jpg", exif=exif, quality=95)
        pack_set(tmp_path / "src" / split, tmp_path / "shards" / split, log=lambda m: None)
    streamed = [np.asarray(image) for image, _ in open_data(f"shards:{tmp_path / 'shards'}").train]
    from_files = [np.asarray(load_rgb(tmp_path / "src" / "train" / "a" / n)) for n in ("grey16.png", "rotated.jpg")]
    assert [a.shape for a in streamed] == [(8, 8, 3), (10, 6, 3)]
    assert all(np.array_equal(s, f) for s, f in zip(streamed, from_files, strict=True))
    assert streamed[0].max() == 117  # 30000 / 65535 of full scale, not clipped to 255


@pytest.mark.parametrize("where", ["folder", "http"])
def test_a_flipped_bit_in_a_packed_image_stops_the_probe_in_one_line(tmp_path, writers, where):
    from ..faults import flip_byte_in_image

    location = _pack(tmp_path, writers)
    flip_byte_in_image(location / "train" / "patches-000001.tar", sample=2)
    out = tmp_path / "out"
    if where == "folder":
        result = _probe(location, out, "--workers", "1")
        shard = location / "train" / "patches-000001.tar"
    else:
        with LoopbackServer(location) as server:
            result = _probe(server.url, out, "--workers", "0")
            shard = f"{server.url}/train/patches-000001.tar"
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"Error: {shard}: sha256 differs from the manifest's, a damaged or altered shard (samples "
                     f"000000004..000000007); stopped. `pipeline verify` names the damaged sample"], lines
    assert not (out / "results.json").exists()


def test_a_packed_pair_in_a_folder_named_like_a_pattern(tmp_path, writers):
    location = _pack(tmp_path / "set{1,2}::x", writers)
    result = _probe(location, tmp_path / "out", "--workers", "0")
    assert result.exit_code == 0, result.output
