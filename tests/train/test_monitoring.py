"""Watching a run: the k-NN monitor's metrics line, the online probe, TensorBoard event files; none of them may change
the training or its exact resume, and each refuses bad input in one line before any work."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from train.cli import main
from train.data.sources import TensorSource
from train.methods import get_method, list_methods
from train.models.encoder_io import load_encoder
from train.monitors.knn import knn_predict, open_knn_monitor, tap_features
from train.monitors.tensorboard_log import EventLog
from train.run.loop import train

from ..conftest import train_config, write_cifar10

STEPS = 12  # 3 epochs of 4 steps on 64 images


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("knn"), per_batch=8, test=24)


@pytest.fixture(scope="module")
def labelled_tensors():
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(64) % 4


def cfg(method, out, **kw):
    return train_config(method, "tensors", out, **{"max_steps": STEPS, "log_every": 2, "ckpt_every": 4,
                                                    "tensorboard": False, **kw})


def read_metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def checkpoint(out):
    return torch.load(Path(out) / "checkpoint.pt", weights_only=True)


def assert_same_weights(a, b):
    assert a["step"] == b["step"]
    for name, value in a["model"].items():
        assert torch.equal(b["model"][name], value), name


def test_knn_line_equals_knn_predict_on_the_final_encoder(cifar, labelled_tensors, tmp_path):
    out = tmp_path / "run"
    train(cfg("rotnet", out, knn_data=f"cifar10:{cifar}", knn_k=5, knn_train_size=30, knn_test_size=20,
              knn_tap="conv3", knn_temperature=0.5), TensorSource(*labelled_tensors))
    lines = [r for r in read_metrics(out) if r.get("event") == "knn"]
    assert [(r["step"], r["epoch"]) for r in lines] == [(4, 1), (8, 2), (12, 3)]
    assert all(r["knn_tap"] == "conv3" and r["knn_k"] == 5 for r in lines)
    # the same subsets, drawn from the run's seed, and the exported encoder (the weights at step 12)
    monitor = open_knn_monitor(f"cifar10:{cifar}", 32, "conv3", 5, 30, 20, seed=0, temperature=0.5)
    assert (monitor.train_images.shape[0], monitor.test_images.shape[0]) == (30, 20)
    encoder, _ = load_encoder(out / "encoder.pt")
    encoder = encoder.to(memory_format=torch.channels_last)  # as it trained
    train_features = tap_features(encoder, monitor.train_images, "conv3")
    test_features = tap_features(encoder, monitor.test_images, "conv3")
    predicted = knn_predict(train_features, monitor.train_labels, test_features, 10, k=5, temperature=0.5, chunk=7)
    assert json.loads((out / "config.json").read_text())["knn_temperature"] == 0.5
    expected = 100.0 * (predicted == monitor.test_labels).float().mean().item()
    assert lines[-1]["knn_top1"] == pytest.approx(expected)
    assert monitor.evaluate(encoder)["knn_top1"] == pytest.approx(expected)


@pytest.mark.parametrize("method", ["rotnet", "monogan"])
def test_monitors_do_not_change_training_and_resume_is_bit_identical(method, cifar, labelled_tensors, tmp_path):
    # monogan: its critic keeps the shared encoder's BatchNorm in eval mode while training; a monitor that put the
    # encoder back with encoder.train() would have switched them to batch statistics
    source = TensorSource(*labelled_tensors)
    watching = dict(knn_data=str(cifar), knn_k=3, knn_train_size=20, knn_test_size=10, online_probe=True,
                    online_probe_tap="conv2", tensorboard=True)
    train(cfg(method, tmp_path / "plain"), source)
    train(cfg(method, tmp_path / "watched", **watching), source)
    plain, watched = checkpoint(tmp_path / "plain"), checkpoint(tmp_path / "watched")
    assert_same_weights(plain, watched)
    assert "online_probe" in watched and "online_probe" not in plain

    # stopped at step 6 (mid-epoch, after a checkpoint at 4 and a k-NN line), resumed with --resume alone
    train(cfg(method, tmp_path / "resumed", max_steps=6, **watching), source)
    # --resume alone: every setting not given comes from the run's record
    train(train_config(method, "tensors", tmp_path / "resumed", resume=True, max_steps=STEPS, arch=None, epochs=None,
                       batch_size=None, log_every=None, ckpt_every=None, shuffle_buffer=None, options={}), source)
    resumed = checkpoint(tmp_path / "resumed")
    assert_same_weights(watched, resumed)
    for name, value in watched["online_probe"]["model"].items():
        assert torch.equal(resumed["online_probe"]["model"][name], value), name
    probe_lines = {r["step"]: r["online_probe_top1"] for r in read_metrics(tmp_path / "watched")
                   if "online_probe_top1" in r}
    assert sorted(probe_lines) == list(range(2, STEPS + 1, 2))
    assert {r["step"]: r["online_probe_top1"] for r in read_metrics(tmp_path / "resumed")
            if "online_probe_top1" in r} == probe_lines
    knn = {r["step"]: r["knn_top1"] for r in read_metrics(tmp_path / "watched") if r.get("event") == "knn"}
    knn_resumed = {r["step"]: r["knn_top1"] for r in read_metrics(tmp_path / "resumed") if r.get("event") == "knn"}
    assert sorted(knn) == [4, 8, 12] and sorted(knn_resumed) == [4, 6, 8, 12]  # 6: where the first part ended
    assert {step: knn_resumed[step] for step in knn} == knn


def test_online_probe_learns_separable_labels(tmp_path):
    # four classes of flat colours: a linear probe on any tap separates them within a few dozen steps
    g = torch.Generator().manual_seed(0)
    colours = torch.tensor([[220, 20, 20], [20, 220, 20], [20, 20, 220], [220, 220, 20]], dtype=torch.uint8)
    labels = torch.arange(128) % 4
    noise = torch.randint(0, 30, (128, 3, 32, 32), generator=g, dtype=torch.uint8)
    images = colours[labels][:, :, None, None] // 2 + noise
    out = tmp_path / "run"
    train(cfg("rotnet", out, max_steps=16, log_every=1, online_probe=True), TensorSource(images, labels))
    tops = [r["online_probe_top1"] for r in read_metrics(out) if "online_probe_top1" in r]
    assert tops[0] == 25.0  # zero weights: every logit equal, class 0 predicted, a quarter right
    assert tops[-4:] == [100.0] * 4


def test_event_file_holds_the_metrics_scalars_and_pictures_of_the_views(labelled_tensors, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train(cfg("rotnet", out, max_steps=6, tensorboard=True), TensorSource(*labelled_tensors))
    # a killed run's events after its checkpoint (step 6): the resumed run's purge must drop them
    EventLog(out).record({"step": 8, "epoch": 2, "loss": 999.0})
    train(cfg("rotnet", out, resume=True, tensorboard=True), TensorSource(*labelled_tensors))
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    losses = {e.step: e.value for e in events.Scalars("train/loss")}
    logged = {r["step"]: r["loss"] for r in read_metrics(out) if "loss" in r and "event" not in r}
    assert sorted(losses) == sorted(logged) == list(range(2, STEPS + 1, 2))
    assert losses == pytest.approx(logged, rel=1e-5)
    assert {e.step for e in events.Scalars("train/lr")} == set(logged)
    # rotnet's four rotated copies, at each epoch's start; 16 of the batch of 16 in a grid of 8 columns
    assert events.Tags()["images"] == ["views/0", "views/1", "views/2", "views/3"]
    pictures = events.Images("views/0")
    assert [p.step for p in pictures] == [0, 4, 8]
    assert (pictures[0].width, pictures[0].height) == (8 * 34 + 2, 2 * 34 + 2)


def test_no_tensorboard_writes_no_event_file(labelled_tensors, tmp_path):
    out = tmp_path / "run"
    train(cfg("rotnet", out, max_steps=4, tensorboard=False), TensorSource(*labelled_tensors))
    assert (out / "checkpoint.pt").exists() and not (out / "tensorboard").exists()


def test_a_failing_event_file_is_one_warning_and_the_run_trains_on(labelled_tensors, tmp_path, monkeypatch, caplog):
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    source = TensorSource(*labelled_tensors)
    train(cfg("rotnet", tmp_path / "ref", max_steps=6), source)
    monkeypatch.setattr("train.monitors.tensorboard_log.append_bytes", full)
    with caplog.at_level(logging.WARNING, logger="train.monitors.tensorboard_log"):
        train(cfg("rotnet", tmp_path / "run", max_steps=6, tensorboard=True), source)
    warnings = [r.getMessage() for r in caplog.records if r.name == "train.monitors.tensorboard_log"]
    assert len(warnings) == 1 and warnings[0].endswith(
        "No space left on device; TensorBoard events off for the rest of the run")
    assert_same_weights(checkpoint(tmp_path / "ref"), checkpoint(tmp_path / "run"))
    assert not list((tmp_path / "run" / "tensorboard").glob("events.*"))


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--knn-data", "{cifar}", "--knn-tap", "conv9"], 2,
     "Error: Invalid value for '--knn-tap': cifar has no tap 'conv9'; its taps are conv1, conv2, conv3, conv4."),
    (["--knn-data", "{tiny}"], 1, "Error: {tiny}: a set of shards (manifest.json), not a labelled set; the k-NN "
                                  "monitor needs labels"),
    (["--knn-data", "cifar10:{missing}"], 1, "Error: {missing}: no such labelled data set folder"),
    (["--online-probe"], 1, "--online-probe needs a training set with labels"),
    (["--online-probe", "--online-probe-tap", "fc"], 2, "Error: Invalid value for '--online-probe-tap'"),
])
def test_bad_monitor_input_is_one_line_before_any_work(args, code, message, cifar, tiny_set, tmp_path):
    places = {"cifar": cifar, "tiny": tiny_set, "missing": tmp_path / "missing"}
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["rotnet", str(tiny_set), "--out", str(out), "--arch", "cifar",
                                       "--device", "cpu", "--workers", "0", "--no-progress",
                                       *[a.format(**places) for a in args]])
    assert result.exit_code == code, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message.format(**places) in errors[0], result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("method", list_methods())
def test_example_views_come_from_the_given_generator_only(method, labelled_tensors):
    torch.manual_seed(0)
    opts = get_method(method).Options(**get_method(method).small_options)
    model = get_method(method)(opts, "cifar", 64, 4)
    images = labelled_tensors[0][:6]
    state = torch.get_rng_state()
    first = model.example_views(images, torch.Generator().manual_seed(5))
    again = model.example_views(images, torch.Generator().manual_seed(5))
    other = model.example_views(images, torch.Generator().manual_seed(6))
    assert torch.equal(torch.get_rng_state(), state)  # the run's global stream is not touched
    if method in ("rotnet", "deepcluster", "supervised", "bigan", "monogan"):
        assert first
    for a, b in zip(first, again, strict=True):
        assert a.dtype == torch.float32 and a.shape[:2] == (6, 3) and a.min() >= -1 and a.max() <= 1
        assert torch.equal(a, b)
    if method != "monogan":  # monogan's only randomness is a flip (which may come out the same)
        assert any(not torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_knn_data_takes_every_labelled_kind_probe_data_takes(tmp_path, monkeypatch, writers):
    """`--knn-data cifar10-jpg:PATH` (the shared train.tar.gz and test.tar.gz) was refused although README says the
    monitor takes `probe --data`'s kinds (issue 32): the archives are extracted once into the cache, as for probe."""
    source = tmp_path / "src"
    writers.image_tree(source / "train", {"cat": 3, "dog": 3})
    writers.image_tree(source / "test", {"cat": 2, "dog": 2}, seed=1)
    shared = tmp_path / "shared"
    shared.mkdir()
    writers.tarball(shared / "train.tar.gz", source / "train", "train")
    writers.tarball(shared / "test.tar.gz", source / "test", "test")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from_archives = open_knn_monitor(f"cifar10-jpg:{shared}", 32, "conv1", 3, 6, 4, seed=0)
    from_folders = open_knn_monitor(f"imagefolder:{source}", 32, "conv1", 3, 6, 4, seed=0)
    assert (from_archives.train_images.shape[0], from_archives.test_images.shape[0]) == (6, 4)
    assert torch.equal(from_archives.train_images, from_folders.train_images)
    assert torch.equal(from_archives.test_labels, from_folders.test_labels)
    assert list((tmp_path / "cache").rglob("train"))  # extracted into the cache, not beside the archives
