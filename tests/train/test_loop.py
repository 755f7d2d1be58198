"""The training loop end to end on a tiny rendered set: every method, resume, DDP, errors, encoder.pt."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from common.errors import CheckpointError, DeviceError, Interrupted, NonFiniteLossError
from train.cli import main
from train.data.sources import ShardSource
from train.methods import get_method, list_methods
from train.models.encoder_io import load_encoder
from train.process import devices
from train.run.loop import train

from ..conftest import TORCHRUN, python_cli, stop_when
from ..conftest import train_config as cfg

RENDERED = [name for name in list_methods() if get_method(name).data_kind == "rendered"]
REPO = Path(__file__).resolve().parents[2]


def read_metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", RENDERED)
def test_each_method_trains_on_shards(method, tiny_set, tmp_path):
    out = tmp_path / method
    summary = train(cfg(method, tiny_set, out, max_steps=24))
    assert summary["step"] == 24 and summary["epoch"] == 1  # 16 steps per epoch at batch 16
    recs = [r for r in read_metrics(out) if "loss" in r and "event" not in r]
    assert len(recs) >= 6 and all(torch.isfinite(torch.tensor(r["loss"])) for r in recs)
    assert all(r["images_per_s"] > 0 for r in recs)
    # encoder.pt round-trips into the probe-facing loader and equals the trained encoder
    enc, info = load_encoder(out / "encoder.pt")
    assert info["arch"] == "cifar" and info["config"]["method"] == method and info["config"]["step"] == 24
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, ckpt["model"]["encoder." + k]), k
    if method in ("bigan", "monogan"):
        assert isinstance(enc.conv1.relu, torch.nn.LeakyReLU)
    if method == "deepcluster":
        starts = [r for r in read_metrics(out) if r.get("event") == "epoch_start"]
        assert len(starts) == 2 and starts[0]["clusters_nonempty"] == 4  # one clustering per epoch
        assert "nmi_prev" in starts[1]
        assert (ckpt["extra"]["labels"] >= 0).all() and ckpt["extra"]["clustered_epoch"] == 1


@pytest.mark.parametrize("progress", [False, True])
def test_deepcluster_shows_what_its_clustering_pass_is_doing(progress, tiny_set, tmp_path, caplog, capfd):
    caplog.set_level("INFO")
    train(cfg("deepcluster", tiny_set, tmp_path / "run", max_steps=1, progress=progress))
    phases = [r.getMessage() for r in caplog.records if r.getMessage().startswith("deepcluster: clustering")]
    stderr = capfd.readouterr().err
    wanted = ["features of 256 samples", "PCA to 16 dimensions, fitted on", "k-means, k = 4, on 256 x 16",
              "done in"]
    if progress:  # the bar names each phase; log lines would tear it
        assert phases == [] and "clustering, epoch 0" in stderr
        assert all(w in stderr for w in wanted), stderr
    else:
        assert all(any(w in p for p in phases) for w in wanted), phases
        assert all(p.startswith("deepcluster: clustering, epoch 0: ") for p in phases)


def test_rotnet_beats_chance_on_held_out_rotations(tiny_set, held_out_set, tmp_path):
    out = tmp_path / "rot"
    train(cfg("rotnet", tiny_set, out, batch_size=32, max_steps=40, options={"head_dim": 0, "lr": 0.05}))
    cls = get_method("rotnet")
    model = cls(cls.Options(head_dim=0), "cifar", num_samples=256)
    model.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["model"])
    held = torch.cat([b.images for b in ShardSource(held_out_set).loader(0, 64, shuffle=False,
                                                                          drop_last=False)])
    assert len(held) == 128
    acc = model.rotation_accuracy(held)
    assert acc > 0.45, acc  # chance is 0.25 (4 x 128 held-out views)


def _cli(*args, env_extra=None, **popen):
    return python_cli("train.cli", *args, "--device", "cpu", env_extra=env_extra, **popen)


DC_ARGS = ["--arch", "cifar", "--batch-size", "32", "--epochs", "10", "--workers", "0", "--no-progress",
           "--ckpt-every", "4", "--log-every", "2", "--shuffle-buffer", "64", "--k", "4", "--head-dim", "64",
           "--pca-dim", "16", "--seed", "3"]


def _finish(*args: str) -> None:
    proc = _cli(*args)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output


def _assert_same_checkpoint_at_step_12(ref: Path, run: Path) -> None:
    a = torch.load(ref / "checkpoint.pt", weights_only=True)
    b = torch.load(run / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 12
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["extra"]["labels"], b["extra"]["labels"])


def test_resume_after_sigkill_with_resume_alone_is_bit_identical(tiny_set, tmp_path):
    # --resume alone: every setting that shapes the result (here --workers 1: the shuffle buffer is per worker, and
    # the default is 4) and the checkpoint and logging intervals come from the run's record, not the defaults.
    # 8 steps per epoch: the reference runs 12 steps (crossing an epoch end and a re-clustering)
    args = [*DC_ARGS, "--workers", "1", "--max-steps", "12"]
    _finish("deepcluster", str(tiny_set), "--out", str(tmp_path / "ref"), *args)

    run = tmp_path / "killed"
    proc = _cli("deepcluster", str(tiny_set), "--out", str(run), *args)
    ckpt = run / "checkpoint.pt"
    stop_when(proc, ckpt.exists)  # SIGKILL at the first checkpoint
    proc.communicate(timeout=60)
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 4 <= killed_at < 12, killed_at

    _finish("deepcluster", str(tiny_set), "--out", str(run), "--resume")
    _assert_same_checkpoint_at_step_12(tmp_path / "ref", run)
    config = json.loads((run / "config.json").read_text())
    amp = devices.default_amp(torch.device("cpu"))[0]  # bf16 where this CPU has it natively (test_precision.py)
    assert (config["workers"], config["ckpt_every"], config["log_every"], config["amp"]) == (1, 4, 2, amp)
    steps = [r["step"] for r in read_metrics(run) if "loss" in r and "event" not in r]
    assert steps == sorted(set(steps)) == list(range(2, 13, 2))  # the killed run's lines after its checkpoint went


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_saves_a_checkpoint_and_the_resumed_run_is_bit_identical(tiny_set, tmp_path, signum):
    # Ctrl-C, and a scheduler's SIGTERM, signal every process of the run, DataLoader workers included
    args = [*DC_ARGS, "--workers", "2", "--ckpt-every", "1000"]
    _finish("deepcluster", str(tiny_set), "--out", str(tmp_path / "ref"), "--max-steps", "12", *args)
    run = tmp_path / "interrupted"
    proc = _cli("deepcluster", str(tiny_set), "--out", str(run), "--max-steps", "1000", *args,
                start_new_session=True)
    stop_when(proc, lambda: (run / "metrics.jsonl").exists() and any("loss" in r for r in read_metrics(run)),
              signum, group=True)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    ckpt = run / "checkpoint.pt"
    stopped_at = torch.load(ckpt, weights_only=True)["step"]
    assert 2 <= stopped_at < 12, stopped_at  # the reference's span, so the two runs can be compared
    assert f"Stopped: {ckpt}: interrupted at step {stopped_at} of 80, saved; --resume continues" in output
    assert "Traceback" not in output, output
    assert read_metrics(run)[-1] == {**read_metrics(run)[-1], "event": "interrupted", "step": stopped_at}

    _finish("deepcluster", str(tiny_set), "--out", str(run), "--max-steps", "12", "--resume", *args)
    _assert_same_checkpoint_at_step_12(tmp_path / "ref", run)


def test_an_interrupt_in_process_stops_after_the_step_and_restores_the_handler(tiny_set, tmp_path, monkeypatch):
    cls = get_method("rotnet")
    real_step = cls.training_step
    calls = {"n": 0}

    def interrupted_at_third(self, batch, gen):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # a batch scheduler's stop; handled like Ctrl-C
        return real_step(self, batch, gen)

    monkeypatch.setattr(cls, "training_step", interrupted_at_third)
    handler = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    with pytest.raises(Interrupted, match="interrupted at step 3 of 40"):
        train(cfg("rotnet", tiny_set, out, max_steps=40, ckpt_every=100))
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is handler


def test_a_run_failing_before_its_first_checkpoint_leaves_nothing(tiny_set, tmp_path, monkeypatch):
    def broken(self, batch, gen):
        raise RuntimeError("broken step")

    monkeypatch.setattr(get_method("rotnet"), "training_step", broken)
    out = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError, match="broken step"):
        train(cfg("rotnet", tiny_set, out, max_steps=4))
    assert not out.exists()
    out.mkdir()  # a folder the user made is kept, emptied of the failed run's records
    with pytest.raises(RuntimeError, match="broken step"):
        train(cfg("rotnet", tiny_set, out, max_steps=4))
    assert out.is_dir() and not list(out.iterdir())


# Each rank records its weights at the end and whether DistributedDataParallel carried its gradients.
TWO_RANKS_SCRIPT = """
import hashlib, json, os, sys
import train.run.loop as loop
from train.process import devices
from train.cli import main

held = {}
real_build = loop.build_method

def build(*args, **kwargs):
    held["method"] = method = real_build(*args, **kwargs)
    return method

loop.build_method = build
try:
    main(sys.argv[2:])
except SystemExit as exit:
    if exit.code:
        raise
method, h = held["method"], hashlib.sha256()
for name, p in sorted(method.named_parameters()):
    h.update(name.encode() + p.detach().contiguous().numpy().tobytes())
with open(os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump({"weights": h.hexdigest(), "ddp": method._ddp is not None}, f)
"""


@TORCHRUN
@pytest.mark.parametrize("method", ["deepcluster", "monogan"])
def test_torchrun_two_processes_gloo(method, tiny_set, tmp_path):
    """Both ways of averaging gradients, two gloo ranks: DistributedDataParallel for a single-optimiser method
    (DeepCluster, whose top layer is re-initialised in place at the epoch end crossed here), the explicit all-reduce
    for the GAN methods (MonoGAN: two optimisers, a double backward). Ranks end with identical weights."""
    out = tmp_path / "ddp"
    (tmp_path / "script.py").write_text(TWO_RANKS_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    options = [str(a) for k, v in get_method(method).small_options.items() for a in (f"--{k.replace('_', '-')}", v)]
    args = ["--arch", "cifar", "--device", "cpu", "--batch-size", "16", "--max-steps", "10", "--workers", "0",
            "--no-progress", "--log-every", "2", "--shuffle-buffer", "64", *options]
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(tmp_path / "script.py"), str(tmp_path), method, str(tiny_set), "--out", str(out), *args],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["ddp"] == ranks[1]["ddp"] == (get_method(method).gradient_sync == "ddp") == (method != "monogan")
    recs = read_metrics(out)
    assert recs[0]["world_size"] == 2
    assert recs[-1]["event"] == "end" and recs[-1]["step"] == 10
    if method == "deepcluster":
        # 256 samples / (16 x 2 ranks) = 8 steps per epoch: 10 steps cross one epoch end (two clusterings)
        assert [r["epoch"] for r in recs if r.get("event") == "epoch_start"] == [0, 1]
    load_encoder(out / "encoder.pt")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_set, tmp_path, monkeypatch):
    cls = get_method("rotnet")
    real_step = cls.training_step
    calls = {"n": 0}

    def poisoned(self, batch, gen):
        out = real_step(self, batch, gen)
        calls["n"] += 1
        if calls["n"] >= 10:
            out["loss"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(cls, "training_step", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="non-finite by step 12.*step 8"):
        train(cfg("rotnet", tiny_set, out, max_steps=40, ckpt_every=8, log_every=4))
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 8
    assert any(r.get("event") == "nonfinite" for r in read_metrics(out))


@pytest.mark.parametrize("method", ["monogan", "deepcluster"])
def test_amp_on_the_cpu_runs_every_step_under_bf16_autocast(method, tiny_set, tmp_path, monkeypatch):
    # the two methods with the most numerics outside plain SGD: WGAN-GP's double backward, k-means on features
    cls = get_method(method)
    real_step = cls.training_step
    seen = []

    def recorded(self, batch, gen):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return real_step(self, batch, gen)

    monkeypatch.setattr(cls, "training_step", recorded)
    out = tmp_path / method
    summary = train(cfg(method, tiny_set, out, max_steps=20, amp=True))
    assert seen == [(True, torch.bfloat16)] * 20
    assert torch.isfinite(torch.tensor(summary["loss"]))
    assert json.loads((out / "config.json").read_text())["amp"] is True


def test_resume_checks_architecture_and_existing_runs(tiny_set, tmp_path, trained_encoder):
    out = shutil.copytree(trained_encoder("rotnet"), tmp_path / "run")  # a 2-step RotNet run
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(cfg("rotnet", tiny_set, out, max_steps=2))
    with pytest.raises(CheckpointError, match="architecture 'cifar', not 'alexnet-small'"):
        train(cfg("rotnet", tiny_set, out, max_steps=4, resume=True, arch="alexnet-small"))
    with pytest.raises(CheckpointError, match="method 'rotnet', not 'monogan'"):
        train(cfg("monogan", tiny_set, out, max_steps=4, resume=True))
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(cfg("rotnet", tiny_set, tmp_path / "fresh", max_steps=4, resume=True))


def test_cli_errors_for_empty_and_incomplete_sets(tmp_path):
    from pipeline.config import RenderConfig
    from pipeline.render import render_set

    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(main, ["rotnet", str(empty), "--out", str(tmp_path / "o1"), "--arch", "cifar", "--device", "cpu"])
    assert r.exit_code == 1 and "Error:" in r.output and "manifest" in r.output, r.output
    half = tmp_path / "half"
    render_set(half, RenderConfig(n_patches=64, size=32, shard_size=32), part=(0, 2),
               log=lambda *a, **k: None)
    r = runner.invoke(main, ["rotnet", str(half), "--out", str(tmp_path / "o2"), "--arch", "cifar", "--device", "cpu"])
    assert r.exit_code == 1 and "incomplete" in r.output, r.output
    assert "Traceback" not in r.output


def test_cli_help_explains_with_examples():
    runner = CliRunner()
    r = runner.invoke(main, ["--help"])
    assert r.exit_code == 0
    for name in (*list_methods(), "torchrun"):
        assert name in r.output
    for name in list_methods():
        r = runner.invoke(main, [name, "--help"])
        assert r.exit_code == 0 and "Example" in r.output and f"train {name}" in r.output
        assert get_method(name).summary.split(":")[0] in r.output
        assert "--max-steps" in r.output and "--resume" in r.output
        # only the methods that read rendered sets can use a set's manifest
        assert ("--manifest" in r.output) == (get_method(name).data_kind == "rendered"), name
    r = runner.invoke(main, ["rotnet", "--help"])
    assert "--milestones" in r.output and "10,20,25" in r.output


def test_supervised_on_an_image_folder(tmp_path):
    from PIL import Image

    root = tmp_path / "folder"
    g = torch.Generator().manual_seed(0)
    for c, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        (root / "train" / f"class{c}").mkdir(parents=True)
        for i in range(16):
            noise = (torch.rand(40, 48, 3, generator=g) * 60).to(torch.uint8)
            arr = (torch.tensor(colour, dtype=torch.uint8) // 2 + noise).numpy()
            Image.fromarray(arr).save(root / "train" / f"class{c}" / f"{i}.png")
    out = tmp_path / "sup"
    r = CliRunner().invoke(main, ["supervised", str(root), "--out", str(out), "--arch", "cifar", "--device", "cpu",
                                  "--batch-size", "8",
                                  "--max-steps", "12", "--workers", "0", "--no-progress", "--head-dim", "0",
                                  "--log-every", "4"])
    assert r.exit_code == 0, r.output
    recs = [x for x in read_metrics(out) if "loss" in x]
    assert recs[-1]["acc"] > 0.5
    _, info = load_encoder(out / "encoder.pt")
    assert "ImageFolder" in info["config"]["data_description"]


def test_unknown_device_is_a_usage_error(tiny_set, tmp_path):
    out = tmp_path / "tpu"
    r = CliRunner().invoke(main, ["rotnet", str(tiny_set), "--out", str(out), "--arch", "cifar", "--device", "tpu"])
    assert r.exit_code == 2 and "'tpu' is not a device" in r.output and "cuda:N" in r.output, r.output
    assert "Traceback" not in r.output and not out.exists()
    with pytest.raises(DeviceError, match="'tpu'"):  # the Python API refuses it the same way
        train(cfg("rotnet", tiny_set, out, device="tpu"))


def test_fresh_start_never_replaces_an_encoder(tiny_set, tmp_path, trained_encoder):
    out = shutil.copytree(trained_encoder("rotnet"), tmp_path / "run")  # a 2-step RotNet run
    (out / "checkpoint.pt").unlink()  # e.g. deleted to save space: encoder.pt is all that is left
    before = (out / "encoder.pt").read_bytes()
    r = CliRunner().invoke(main, ["rotnet", str(tiny_set), "--out", str(out), "--arch", "cifar", "--max-steps", "2",
                                  "--device", "cpu",
                                  "--workers", "0", "--no-progress", "--head-dim", "64"])
    assert r.exit_code == 1 and "already holds a run (encoder.pt" in r.output, r.output
    assert (out / "encoder.pt").read_bytes() == before


def test_fresh_start_over_a_run_stopped_before_its_first_checkpoint(tiny_set, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}\n")
    (out / "metrics.jsonl").write_text('{"event": "start", "step": 0}\n{"step": 4, "loss": 1.0}\n')
    train(cfg("rotnet", tiny_set, out, max_steps=2, log_every=1))
    recs = read_metrics(out)
    assert [r.get("event") for r in recs].count("start") == 1  # the old run's lines are gone
    assert [r["step"] for r in recs if "loss" in r and "event" not in r] == [1, 2]
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["max_steps"] == recorded["total_steps"] == 2
    # what ran, not "auto" and the device's default
    assert recorded["device"] == "cpu" and recorded["amp"] is devices.default_amp(torch.device("cpu"))[0]


def test_resume_refuses_other_data_or_hyper_parameters(tiny_set, tmp_path):
    from pipeline.config import RenderConfig
    from pipeline.render import render_set

    out = tmp_path / "run"
    train(cfg("rotnet", tiny_set, out, max_steps=2))
    config_before = (out / "config.json").read_text()
    other = tmp_path / "other"
    render_set(other, RenderConfig(n_patches=20, size=32, shard_size=20), log=lambda *a, **k: None)
    with pytest.raises(CheckpointError, match=r"other data or settings \(data_identity.num_samples 256 -> 20"):
        train(cfg("rotnet", other, out, max_steps=4, resume=True))
    with pytest.raises(CheckpointError, match=r"batch_size 16 -> 8; .*options.lr 0.1 -> 0.5\)"):
        train(cfg("rotnet", tiny_set, out, max_steps=4, resume=True, batch_size=8,
                  options={**get_method("rotnet").small_options, "lr": 0.5}))
    with pytest.raises(CheckpointError, match=r"seed 0 -> 1\)"):
        train(cfg("rotnet", tiny_set, out, max_steps=4, resume=True, seed=1))
    assert (out / "config.json").read_text() == config_before  # nothing rewritten by a refused resume
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2


def test_resume_allows_a_moved_set_and_a_longer_run(tiny_set, tmp_path, caplog):
    import shutil

    out = tmp_path / "run"
    train(cfg("rotnet", tiny_set, out, max_steps=2))
    moved = shutil.copytree(tiny_set, tmp_path / "moved")
    summary = train(cfg("rotnet", moved, out, max_steps=20, epochs=200, resume=True, workers=1, log_every=2,
                        ckpt_every=0))
    assert summary["step"] == 20
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == ["--workers 1 where the run recorded 0 (the shuffle buffer is per DataLoader worker): the "
                      "resumed run will not match an uninterrupted one"]
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == str(moved) and config["max_steps"] == 20 and config["epochs"] == 200
    assert config["workers"] == 1 and config["batch_size"] == 16


def test_cli_resume_alone_continues_with_the_recorded_settings(tiny_set, tmp_path):
    out = tmp_path / "run"
    first = ["rotnet", str(tiny_set), "--out", str(out), "--arch", "cifar", "--device", "cpu", "--batch-size", "32",
             "--lr", "0.05", "--head-dim", "64", "--shuffle-buffer", "64", "--max-steps", "2", "--workers", "0",
             "--no-progress"]
    r = CliRunner().invoke(main, first)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["rotnet", str(tiny_set), "--out", str(out), "--resume", "--max-steps", "4",
                                  "--device", "cpu", "--workers", "0", "--no-progress", "--log-every", "1"])
    assert r.exit_code == 0, r.output
    config = json.loads((out / "config.json").read_text())
    assert (config["arch"], config["batch_size"], config["shuffle_buffer"]) == ("cifar", 32, 64)
    assert config["options"]["lr"] == 0.05 and config["options"]["head_dim"] == 64
    assert [x["lr"] for x in read_metrics(out) if "loss" in x and "event" not in x][-1] == 0.05
    r = CliRunner().invoke(main, ["rotnet", str(tiny_set), "--out", str(out), "--resume", "--batch-size", "16",
                                  "--device", "cpu",
                                  "--lr", "0.5", "--no-progress"])
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert "batch_size 32 -> 16" in r.output and "options.lr 0.05 -> 0.5" in r.output
    assert json.loads((out / "config.json").read_text()) == config


def test_a_packed_labelled_set_is_refused_in_one_line(tmp_path):
    from PIL import Image

    from pipeline.pack import pack_set

    for label in ("a", "b"):
        (tmp_path / "src" / label).mkdir(parents=True)
        Image.new("RGB", (16, 16), (40, 80, 120)).save(tmp_path / "src" / label / "x.png")
    pack_set(tmp_path / "src", tmp_path / "packed", log=lambda m: None)
    r = CliRunner().invoke(main, ["rotnet", str(tmp_path / "packed"), "--out", str(tmp_path / "run"),
                                  "--arch", "cifar", "--device", "cpu"])
    assert r.exit_code == 1 and "a labelled set packed by `pipeline pack`" in r.output, r.output
    assert not (tmp_path / "run").exists()


def test_an_out_folder_that_cannot_be_made_is_one_line(tiny_set, tmp_path):
    """A file-system error naming a path (here --out below a regular file) is reported like the tools' errors."""
    (tmp_path / "file").write_text("not a folder")
    r = CliRunner().invoke(main, ["rotnet", str(tiny_set), "--out", str(tmp_path / "file" / "run"),
                                  "--arch", "cifar", "--device", "cpu", "--max-steps", "1", "--workers", "0"])
    last_line = r.output.strip().splitlines()[-1]
    assert r.exit_code == 1 and last_line == f"Error: {tmp_path / 'file' / 'run'}: Not a directory"


def test_a_per_step_schedule_advances_every_step_and_resumes_exactly(tiny_set, tmp_path, monkeypatch):
    """``schedule_unit = "step"``: the loop calls ``on_step_end`` after each step, before any checkpoint of it, so the
    schedules advance per iteration and a resume continues them exactly (RotNet's milestones read as steps here)."""
    monkeypatch.setattr(get_method("rotnet"), "schedule_unit", "step")
    options = {**get_method("rotnet").small_options, "milestones": [3, 5]}
    whole = tmp_path / "whole"
    train(cfg("rotnet", tiny_set, whole, max_steps=8, log_every=1, options=options))
    lrs = [r["lr"] for r in read_metrics(whole) if "loss" in r and "event" not in r]
    # the rate logged after step s is the one step s + 1 uses: 0.1 for steps 1-3, x 0.2 from step 4, again from 6
    assert lrs == pytest.approx([0.1, 0.1, 0.02, 0.02, 0.004, 0.004, 0.004, 0.004])
    parts = tmp_path / "parts"
    train(cfg("rotnet", tiny_set, parts, max_steps=4, log_every=1, options=options))
    train(cfg("rotnet", tiny_set, parts, max_steps=8, log_every=1, options=options, resume=True))
    a, b = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (whole, parts))
    assert a["schedulers"] == b["schedulers"] and a["schedulers"]["main"]["last_epoch"] == 8
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_configure_receives_the_runs_facts(tiny_set, tmp_path, monkeypatch):
    """Run facts reach a method only through the RunContext given to configure: nothing is set on it from outside."""
    cls = get_method("rotnet")
    real_configure, seen = cls.configure, []

    def recorded(self, ctx):
        seen.append(ctx)
        return real_configure(self, ctx)

    monkeypatch.setattr(cls, "configure", recorded)
    train(cfg("rotnet", tiny_set, tmp_path / "run", max_steps=3, epochs=5))
    (ctx,) = seen
    # 256 samples at batch 16: 16 steps an epoch; --max-steps 3 stops the run, the schedules still span 5 epochs
    assert (ctx.total_epochs, ctx.steps_per_epoch, ctx.total_steps) == (5, 16, 3)
    amp = devices.default_amp(torch.device("cpu"))[0]
    assert (ctx.device, ctx.amp, ctx.world_size) == (torch.device("cpu"), amp, 1)


def test_resume_removes_what_a_killed_writer_left_and_keeps_a_live_ones(tiny_set, tmp_path, trained_encoder):
    """A writer killed between writing its temporary file and renaming it leaves `NAME.tmp-HOST-PID`; resuming
    removes those of dead processes on this host, and keeps another host's and a live process's."""
    out = shutil.copytree(trained_encoder("rotnet"), tmp_path / "run")  # a 2-step RotNet run
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = os.uname().nodename
    left = [out / f"{name}.tmp-{host}-{dead.pid}" for name in ("checkpoint.pt", "encoder.pt", "config.json")]
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        kept = [out / f"checkpoint.pt.tmp-{host}-{live.pid}", out / f"checkpoint.pt.tmp-other-host-{dead.pid}"]
        for path in left + kept:
            path.write_bytes(b"half a file")
        assert train(cfg("rotnet", tiny_set, out, max_steps=4, resume=True))["step"] == 4
    finally:
        live.kill()
        live.wait()
    assert [p for p in left if p.exists()] == [] and all(p.exists() for p in kept)


@TORCHRUN
def test_the_documented_entry_points_cannot_be_shadowed_by_the_current_folder(tiny_set, tmp_path):
    """`python -m train.cli` and `torchrun -m train.cli` import a train/cli.py of the current folder before the
    installed one (issue 32, item 8); the documented forms, `torchrun --no-python train ...` (the console script)
    and `python -P -m train.cli`, run the toolkit's from any folder."""
    decoy = tmp_path / "work"
    (decoy / "train").mkdir(parents=True)
    (decoy / "train" / "__init__.py").write_text("")
    (decoy / "train" / "cli.py").write_text("raise SystemExit('the decoy train/cli.py ran')\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    shadowed = subprocess.run([sys.executable, "-m", "train.cli", "--help"], cwd=decoy, env=env, capture_output=True,
                              text=True, timeout=120)
    assert "the decoy train/cli.py ran" in shadowed.stderr  # the hazard the documented forms avoid
    safe = subprocess.run([sys.executable, "-P", "-m", "train.cli", "--help"], cwd=decoy, env=env,
                          capture_output=True, text=True, timeout=120)
    assert safe.returncode == 0 and "rotnet" in safe.stdout, safe.stderr
    script = Path(sys.executable).parent / "train"  # the console script installed beside this interpreter
    out = tmp_path / "run"
    ran = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "--no-python", str(script), "rotnet", str(tiny_set), "--out", str(out), "--arch", "cifar",
                          "--device", "cpu", "--batch-size", "16", "--max-steps", "2", "--workers", "0",
                          "--no-progress", "--head-dim", "64"], cwd=decoy, env=env, capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert read_metrics(out)[0]["world_size"] == 2 and (out / "encoder.pt").is_file()


def test_a_run_folder_has_one_writer_and_a_dead_writers_lock_is_taken_over(tiny_set, tmp_path, caplog):
    """Two `train` into one --out both exited 0, one run's files lost and metrics.jsonl interleaved (issue 32): the
    second is refused in one line naming the first (host and pid), before it writes anything; once the first is
    killed, its lock is taken over with a notice."""
    out = tmp_path / "run"
    first = _cli("rotnet", str(tiny_set), "--out", str(out), "--arch", "cifar", "--batch-size", "16", "--max-steps",
                 "100000", "--ckpt-every", "2", "--workers", "0", "--no-progress", "--head-dim", "64")
    lock = tmp_path / "run.lock"
    try:
        stop_when(first, lambda: (out / "checkpoint.pt").exists() and lock.exists(), signal.SIGSTOP)
        holder = f"host {os.uname().nodename}, pid {first.pid}"
        assert lock.read_text().split() == [os.uname().nodename, str(first.pid)]
        before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
        second = CliRunner().invoke(main, ["rotnet", str(tiny_set), "--out", str(out), "--resume", "--device", "cpu"])
        assert second.exit_code == 1, second.output
        assert second.output.strip().splitlines()[-1] == (
            f"Error: {out}: in use by another train run ({holder}, lock run.lock); wait for it to end or choose "
            "another --out")
        assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing of the first touched
    finally:
        first.kill()
        first.communicate(timeout=60)
    assert lock.exists()  # killed: the file stays, its lock went with the process
    with caplog.at_level("WARNING"):
        summary = train(cfg("rotnet", tiny_set, out, resume=True, max_steps=4, epochs=None, log_every=None,
                            ckpt_every=None, batch_size=None, shuffle_buffer=None, options={}))
    assert summary["step"] == 4 and not lock.exists()
    assert [r.getMessage() for r in caplog.records if "took over" in r.getMessage()] == [
        f"{out}: took over the lock of train run (host {os.uname().nodename}, pid {first.pid}), which ended without "
        "releasing it"]
