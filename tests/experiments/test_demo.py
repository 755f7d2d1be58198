"""`make demo` (experiments/demo.py): render -> train -> probe -> one picture and a finding, resumable by stage."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from experiments import make_demo as demo
from pipeline.sources import default_pool

from ..conftest import write_cifar10

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo.py"


def run_demo(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DEMO), *args], capture_output=True, text=True, timeout=600, **kwargs)


def finding_numbers(line: str) -> list[float]:
    """The conv1 / conv2 numbers of a finding: trained %, random %, gain, per layer."""
    found = re.findall(r"(conv\d) (\d+\.\d)% vs (\d+\.\d)% \(([+-]\d+\.\d)\)", line)
    assert [f[0] for f in found] == ["conv1", "conv2"], line
    return [float(v) for f in found for v in f[1:]]


def interrupt(args: list[str], when) -> tuple[int, str]:
    """Run the demo, send it SIGINT (a terminal's Ctrl-C) once `when(stdout line)` is true, and return its exit
    status and output. The demo gets SIGINT's default disposition: a suite started in the background by a
    non-interactive shell inherits it ignored, and the signal would then never arrive."""
    proc = subprocess.Popen([sys.executable, str(DEMO), *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if when(line):
            proc.send_signal(signal.SIGINT)
            break
    return proc.wait(timeout=300), "".join(lines) + proc.communicate(timeout=300)[0]


def training_events(run: Path) -> list[tuple[str, int]]:
    """The run's start, interrupt, resume and end, each with the step it happened at."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(line["event"], line["step"]) for line in lines if "event" in line]


# One demo run in two tests on one worker (xdist_group): the training, stopped by Ctrl-C and continued without data;
# then the probes, stopped by Ctrl-C and continued, and a second run that reuses everything.
DEMO_RUN = pytest.mark.xdist_group("demo-seed-3")


@pytest.fixture(scope="session")
def demo_trained(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("demo")
    work, data = root / "work", f"cifar10:{write_cifar10(root, per_batch=40, test=60)}"
    base = ["--preset", "tiny", "--work", str(work), "--seed", "3", "--src", str(default_pool()[1]),
            "--device", "cpu", "--shared", str(root / "no-shared-folder")]
    run = work / "seed-3"

    # Ctrl-C in the middle of training: the trainer stops after the step in flight and keeps a checkpoint
    def training_checkpointed(line: str) -> bool:
        while line.startswith("[train-rotnet]") and not (run / "run" / "checkpoint.pt").exists():
            time.sleep(0.02)
        return line.startswith("[train-rotnet]")

    status, out = interrupt([*base, "--no-download"], training_checkpointed)
    interrupted = SimpleNamespace(status=status, out=out, events=training_events(run / "run"),
                                  checkpoint=(run / "run" / "checkpoint.pt").exists(),
                                  encoder=(run / "run" / "encoder.pt").exists())
    # no data anywhere: the same command continues the training from its checkpoint
    bare = run_demo([*base, "--no-download"])
    return SimpleNamespace(base=base, run=run, data=data, interrupted=interrupted, bare=bare)


@DEMO_RUN
def test_demo_stopped_in_training_continues_from_its_checkpoint_and_draws_without_data(demo_trained):
    interrupted, run = demo_trained.interrupted, demo_trained.run
    assert interrupted.status == 130, interrupted.out
    assert "interrupted during train-rotnet; run `make demo` (or this command) again to continue" in interrupted.out
    assert interrupted.checkpoint and not interrupted.encoder
    events = interrupted.events
    assert events[0] == ("start", 0) and events[1][0] == "interrupted" and len(events) == 2
    stopped_at = events[1][1]
    assert 2 <= stopped_at < 8

    # no data anywhere: one line says how to point at a copy; the same command continues the training from its
    # checkpoint, and the picture still shows the filters
    bare = demo_trained.bare
    assert bare.returncode == 0, bare.stdout[-3000:] + bare.stderr[-3000:]
    assert "set DEMO_DATA=KIND:PATH" in bare.stdout and "[render] done before" in bare.stdout
    assert re.search(r"^\[train-rotnet\] .* --resume$", bare.stdout, re.M), bare.stdout
    assert training_events(run / "run")[2:] == [("resume", stopped_at), ("end", 8)]
    finding = (run / "finding.txt").read_text()
    assert finding.startswith("finding: RotNet trained for 8 steps") and "not probed" in finding
    assert str(run / "demo.png") in finding and Image.open(run / "demo.png").size[0] > 600
    assert (run / "preview.png").exists() and not (run / "probes").exists()


@DEMO_RUN
def test_demo_stopped_in_a_probe_continues_and_its_finding_is_the_runs_own(demo_trained):
    base, run, data = demo_trained.base, demo_trained.run, demo_trained.data

    # Ctrl-C during a probe: the stage is stopped, the demo says how to go on and exits 130
    def probing(line: str) -> bool:
        if line.startswith("[probe-rotnet]"):
            time.sleep(0.5)  # into the stage's process (a Ctrl-C before it is one between stages)
        return line.startswith("[probe-rotnet]")

    status, out = interrupt([*base, "--data", data], probing)
    assert status == 130, out
    assert "interrupted during probe-rotnet; run `make demo` (or this command) again to continue" in out
    # not recorded as done, so the next run probes again (a tiny probe that finished in the instant before the
    # Ctrl-C reached it may have written its results.json on a quiet machine: the record decides, not the file)
    assert not (run / "stages" / "probe-rotnet.json").exists()

    # the same command continues: render and training reused, the probes run, picture and finding rewritten
    probed = run_demo([*base], env={**os.environ, "DEMO_DATA": data})
    assert probed.returncode == 0, probed.stdout[-3000:] + probed.stderr[-3000:]
    assert "[render] done before" in probed.stdout and "[train-rotnet] done before" in probed.stdout
    assert (run / "stages" / "probe-rotnet.json").exists()  # recorded now that it ran to its end
    line = probed.stdout.strip().splitlines()[-1]
    assert line == (run / "finding.txt").read_text().strip() and line.endswith(f"picture: {run / 'demo.png'}")
    assert re.search(r"stage times: render \d+ s \(reused\), train-rotnet \d+ s \(reused\), "
                     r"probe-rotnet \d+ s \(CPU \d+ s\), probe-random", probed.stdout), probed.stdout
    # every number in the finding is the run's own
    trained, random = (json.loads((run / "probes" / name / "results.json").read_text())["layers"]
                       for name in ("rotnet", "random"))
    expected = [v for layer in ("conv1", "conv2") for v in
                (trained[layer]["top1"], random[layer]["top1"], trained[layer]["top1"] - random[layer]["top1"])]
    assert finding_numbers(line) == pytest.approx(expected, abs=0.051)
    summary = json.loads((run / "demo.json").read_text())
    assert summary["steps"] == 8 and summary["patches"] == 96 and summary["data"] == data
    assert set(summary["stage_cpu_s"]) == {"probe-rotnet", "probe-random"}

    # a second run reuses every stage and says the same
    again = run_demo([*base, "--data", data])
    assert again.returncode == 0 and again.stdout.count("skipped") == 4
    assert again.stdout.strip().splitlines()[-1] == line


def test_data_is_found_or_one_line_says_how_to_give_it(tmp_path, monkeypatch):
    assert demo.locate_data("cifar10:/somewhere", tmp_path) == ("cifar10:/somewhere", "as given")
    shared = tmp_path / "shared"
    (shared / "cifar10-jpg").mkdir(parents=True)
    for name in ("train.tar.gz", "test.tar.gz"):
        (shared / "cifar10-jpg" / name).write_bytes(b"")
    assert demo.locate_data(None, shared)[0] == f"cifar10-jpg:{shared / 'cifar10-jpg'}"

    def offline(root):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(demo, "download_cifar10", offline)
    data, why = demo.locate_data(None, tmp_path / "nothing")
    assert data is None and "\n" not in why
    assert "download failed (OSError: <urlopen error" in why and "set DEMO_DATA=KIND:PATH" in why
    monkeypatch.setattr(demo, "download_cifar10", lambda root: root / "cifar-10-batches-py")
    assert demo.locate_data(None, tmp_path / "nothing")[0].startswith("cifar10:")


def test_the_random_baseline_is_the_trained_encoders_own_initialisation(tmp_path):
    """A step at a learning rate far below fp32 resolution (train refuses 0) leaves the weights as initialised: they
    must be the random encoder's of the same seed, so the picture and the probes compare a network with its own
    starting point."""
    shards, run = tmp_path / "shards", tmp_path / "run"
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "pipeline", "render", "--n-src", "1", "--src", default_pool()[1], "--size", "32",
                    "--n-patches", "16", "--out", shards], check=True, capture_output=True, timeout=300)
    subprocess.run([bin_dir / "train", "rotnet", shards, "--arch", "cifar", "--out", run, "--max-steps", "1",
                    "--batch-size", "8", "--head-dim", "16", "--workers", "0", "--lr", "1e-30", "--weight-decay", "0",
                    "--seed", "5", "--device", "cpu", "--no-progress"], check=True, capture_output=True, timeout=300)
    from probe.encoders import open_encoder

    trained = open_encoder(str(run / "encoder.pt")).module.state_dict()
    random = open_encoder("random:cifar", seed=5).module.state_dict()
    weights = [name for name in random if name.endswith("conv.weight")]
    assert len(weights) == 4
    for name in weights:
        assert torch.equal(trained[name], random[name]), name
    assert not torch.equal(open_encoder("random:cifar", seed=6).module.state_dict()[weights[0]],
                           random[weights[0]])


def test_probe_data_that_cannot_be_opened_is_one_line_before_any_stage(tmp_path, monkeypatch):
    work = tmp_path / "work"
    monkeypatch.setenv("DEMO_DATA", f"cifar10:{tmp_path / 'nowhere'}")
    with pytest.raises(SystemExit) as bad:  # the demo's main in this process
        demo.main(["--preset", "tiny", "--work", str(work), "--src", str(default_pool()[1]), "--device", "cpu"])
    assert str(bad.value) == f"probe data cifar10:{tmp_path / 'nowhere'}: {tmp_path / 'nowhere'}: no such folder"
    assert not work.exists()
