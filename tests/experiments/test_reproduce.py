"""The end-to-end reproduction runs render -> train -> probe -> report, and resumes by skipping finished stages."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from experiments import cli
from experiments import stage as runner
from experiments.paper_cifar import PRESETS
from experiments.report import device_name, stage_row
from experiments.targets.cifar10 import cifar10_stages
from pipeline.sources import default_pool

from ..conftest import StagedRun, stop_when, write_cifar10, write_cifar100

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "reproduce.py"


def rows_after(report: str, start: str) -> list[str]:
    """The report's line starting with `start` and the line after it."""
    lines = report.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(start))
    return lines[i:i + 2]


# The smoke preset of `reproduce cifar10` is run once, in steps that are each a test (the same worker runs them in
# order: xdist_group), and every check of the end-to-end reproduction is made against that one work folder:
# --stages and --report-only before anything is trained, the trainings, the probes and the report, a second run
# that skips every stage, the ablation's --report-only from the shared stages, and CIFAR-100 in the same folder.
# The fixtures are session-scoped: a module's fixtures are torn down whenever its worker runs another module's
# test in between, which would run the smoke preset again.
SMOKE = pytest.mark.xdist_group("reproduce-cifar10-smoke")


def reproduce(cmd: list[str], *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=timeout)


def succeeded(run: subprocess.CompletedProcess) -> bool:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return True


@pytest.fixture(scope="session")
def smoke(tmp_path_factory) -> SimpleNamespace:
    """The smoke run on Image B and a toy CIFAR-10 (200 training, 60 test images), on the CPU, in phases."""
    root = tmp_path_factory.mktemp("reproduce-smoke")
    data = write_cifar10(root, per_batch=40, test=60)
    work = root / "work"
    cmd = [sys.executable, str(SCRIPT), "cifar10", "--preset", "smoke", "--work", str(work),
           "--src", str(default_pool()[1]), "--data", f"cifar10:{data}", "--device", "cpu"]
    trained = "render-*,train-*,init-*"
    phases = [("render", "render-*"),
              ("single-image trainings", "render-*,train-monogan,train-rotnet,train-deepcluster"),
              ("trainings", trained), ("some probes", f"{trained},probe-monogan*,probe-rotnet*"), ("all", None)]
    return SimpleNamespace(root=root, data=data, work=work, cmd=cmd, run=StagedRun(cmd, phases))


@SMOKE
def test_stages_runs_a_subset_and_report_only_needs_a_finished_probe(smoke):
    smoke.run.upto("render")
    work = smoke.work
    assert (work / "shards" / "cifar-B-all" / "manifest.json").exists()
    assert sorted(p.name for p in (work / "stages").iterdir()) == ["render-cifar-B-all.json"]
    assert not (work / "report-cifar10.md").exists()
    # the driver's refusals, in this process (the command line after the script)
    with pytest.raises(SystemExit, match="no probe has finished yet"):
        cli.main([*smoke.cmd[2:], "--report-only"])
    with pytest.raises(SystemExit, match="^--stages train-nothing: matches none"):
        cli.main([*smoke.cmd[2:], "--stages", "train-nothing"])


@SMOKE
def test_stages_selects_exactly_the_matching_trainings(smoke):
    out = smoke.run.upto("single-image trainings").stdout
    assert "[render-cifar-B-all] done before" in out and "4 selected stages done" in out  # the render too
    runs = smoke.work / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["deepcluster", "monogan", "rotnet"]
    assert all((runs / name / "encoder.pt").is_file() for name in ("deepcluster", "monogan", "rotnet"))


@SMOKE
def test_smoke_trainings_and_initialisations(smoke):
    out, work = smoke.run.upto("trainings").stdout, smoke.work
    assert out.count("done before") == 4 and "selected stages done" in out  # the render, 3 trainings
    assert not (work / "report-cifar10.md").exists()  # --stages writes no report
    init = torch.load(work / "runs" / "kmeans-init" / "encoder.pt", weights_only=True)
    assert init["config"]["method"] == "kmeans-init" and init["config"]["n_images"] == 48
    config = json.loads((work / "runs" / "rotnet-cifar10" / "config.json").read_text())
    assert config["data"] == f"cifar10:{smoke.data}" and config["num_samples"] == 200  # the whole train split
    for name in ("monogan", "rotnet", "deepcluster", "rotnet-cifar10", "monogan-cifar10", "supervised"):
        assert (work / "runs" / name / "encoder.pt").is_file(), name


@SMOKE
def test_probes_run_stage_by_stage_and_the_report_waits_for_all(smoke):
    out, work = smoke.run.upto("some probes").stdout, smoke.work
    assert sorted(p.name for p in (work / "probes").iterdir()) == ["monogan", "monogan-cifar10", "rotnet",
                                                                    "rotnet-cifar10"]
    assert "selected stages done" in out and not (work / "report-cifar10.md").exists()


@SMOKE
def test_smoke_report_compares_like_with_like(smoke):
    smoke.run.upto("all")
    work, data, report = smoke.work, smoke.data, (smoke.work / "report-cifar10.md").read_text()
    assert "preset: **smoke**" in report and "| train-monogan |" in report and "MonoGAN" in report
    # the report names the data it probed by its kind, never by a folder of the machine's, and speaks of the JPEG
    # copy only when that copy was used
    assert "data: `cifar10`" in report and str(data) not in report and "JPEG" not in report
    assert (work / "report-cifar10-probe.png").exists()
    gains = [line for line in report.splitlines() if line.startswith(("| monogan |", "| rotnet |", "| deepcluster |"))]
    assert [g.split(" | ")[1] for g in gains] == ["random-leaky", "random", "random"]  # like-for-like baselines
    # the paper's RotNet row was trained on all of CIFAR-10: a single-image RotNet is not compared with it, the
    # RotNet trained on the CIFAR-10 pickles is; the GAN trained on them is compared with the paper's GAN row
    assert "| difference to MonoGAN" in report
    assert not rows_after(report, "| measured: rotnet on cifar10")[1].startswith("| difference")
    assert rows_after(report, "| measured: rotnet-cifar10 on cifar10")[1].startswith("| difference to RotNet (")
    assert rows_after(report, "| measured: monogan-cifar10 on cifar10")[1].startswith(
        "| difference to GAN (CIFAR-10) (")
    assert "| rotnet-cifar10 |" not in report  # the central claim's table is about single-image models
    # one image against the full set: per layer, with the paper's MonoGAN - GAN (CIFAR-10) difference
    assert "## One image against the full set (CIFAR-10, points)" in report
    twins = [line.split(" | ") for line in report.splitlines() if " vs " in line and line.startswith("| ")]
    assert [(t[0], t[1]) for t in twins] == [("| rotnet vs rotnet-cifar10", f"conv{i}") for i in range(1, 5)] + [
        ("| monogan vs monogan-cifar10", f"conv{i}") for i in range(1, 5)]
    assert [t[-1] for t in twins] == ["- |"] * 4 + ["+0.4 |", "-0.7 |", "-1.7 |", "-5.7 |"]
    one, full, diff = (float(v) for v in twins[4][2:5])
    assert diff == pytest.approx(one - full, abs=0.11)
    # the smoke preset's 1-epoch probes are not the paper's protocol: said so, and never judged in bold
    assert "| difference to MonoGAN (protocol differs: not comparable) |" in report
    assert "protocol differs from the paper's: epochs 1 (paper: 36); batch size 64 (paper: 192)" in report
    for name in ("monogan", "rotnet", "deepcluster", "rotnet-cifar10", "monogan-cifar10", "supervised", "random",
                 "random-leaky"):
        results = json.loads((work / "probes" / name / "results.json").read_text())
        assert set(results["layers"]) == {"conv1", "conv2", "conv3", "conv4"}
    # the learning-free baselines beside Table 3 (it has no row for them), out of the central claim's table
    for name, row in (("kmeans-init", "kmeans-init"), ("random-rescaled", "random-rescaled"),
                      ("scattering", "random:scattering-cifar")):
        assert f"| measured: {row} on cifar10 (protocol differs) |" in report
        assert f"| {name} |" not in report
    scattering = json.loads((work / "probes" / "scattering" / "results.json").read_text())
    assert set(scattering["layers"]) == {"conv1", "conv2"}  # the two orders


@SMOKE
def test_a_second_run_skips_every_finished_stage(smoke):
    done = smoke.run.upto("all").stdout
    assert done.count("done before") == 13  # the render, 6 trainings, 2 initialisations, 4 probes of earlier phases
    again = reproduce(smoke.cmd)
    assert succeeded(again)
    assert again.stdout.count("skipped") == 20  # 1 render, 6 trainings, 2 initialisations, 11 probes


@SMOKE
def test_report_only_reports_the_finished_stages_and_lists_the_rest(smoke):
    """The ablation target shares the render and the random baselines' probes with cifar10: from the same work
    folder, --report-only reports those and lists every ablation stage not yet run, running nothing."""
    smoke.run.upto("all")
    cmd = [*smoke.cmd[:2], "ablation", *smoke.cmd[3:]]
    done = reproduce(cmd, "--report-only", timeout=120)
    assert succeeded(done)
    assert "train-monogan-scale" not in done.stdout + done.stderr  # nothing was run
    report = (smoke.work / "report-ablation.md").read_text()
    assert "| probe-random | " in report and "| probe-random-leaky | " in report
    incomplete = next(line for line in report.splitlines() if line.startswith("- **incomplete**"))
    assert "render-cifar-B-none" in incomplete and "probe-monogan-scale" in incomplete
    assert "probe-random," not in incomplete and "(b) Random feat." in report


@pytest.fixture(scope="session")
def smoke100(smoke) -> SimpleNamespace:
    """Table 3's CIFAR-100 columns in the same work folder, after the whole CIFAR-10 run, in phases."""
    smoke.run.upto("all")
    data = write_cifar100(smoke.root, train=200, test=60)
    cmd = [*smoke.cmd[:2], "cifar100", *smoke.cmd[3:smoke.cmd.index("--data")], "--data", f"cifar100:{data}",
           "--device", "cpu"]
    trained = "render-*,train-*,init-*"
    phases = [("trainings", trained), ("some probes", f"{trained},probe-cifar100-[a-m]*"), ("all", None)]
    return SimpleNamespace(work=smoke.work, data=data, cmd=cmd, run=StagedRun(cmd, phases))


@SMOKE
def test_cifar100_in_the_same_work_folder_shares_the_single_image_stages(smoke100):
    # the rendered set and the single-image trainings are shared (skipped); the real-data rows, the supervised
    # baseline and the k-means initialisation are CIFAR-100's own
    out = smoke100.run.upto("trainings").stdout
    assert out.count("skipped") == 4  # 1 render, 3 single-image trainings
    for name in ("rotnet-cifar100", "monogan-cifar100", "supervised-cifar100", "kmeans-init-cifar100"):
        assert (smoke100.work / "runs" / name / "encoder.pt").is_file(), name


@SMOKE
def test_cifar100_probes_read_cifar100(smoke100):
    smoke100.run.upto("some probes")
    probed = sorted((smoke100.work / "probes-cifar100").iterdir())
    assert probed and all(p.name[0] <= "m" for p in probed)
    for folder in probed:
        assert json.loads((folder / "results.json").read_text())["data"]["kind"] == "cifar100"


@SMOKE
def test_cifar100_report_against_the_papers_cifar100_columns(smoke100):
    smoke100.run.upto("all")
    work, data100 = smoke100.work, smoke100.data
    report = (work / "report-cifar100.md").read_text()
    assert "CIFAR-100 Table 3 columns" in report and "data: `cifar100`" in report and str(data100) not in report
    assert "| probe-cifar100-monogan |" in report and "| train-supervised-cifar100 |" in report
    assert rows_after(report, "| measured: monogan-cifar100 on cifar100")[1].startswith(
        "| difference to GAN (CIFAR-100) (")
    assert rows_after(report, "| measured: rotnet-cifar100 on cifar100")[1].startswith("| difference to RotNet (")
    assert rows_after(report, "| measured: supervised-cifar100 on cifar100")[1].startswith(
        "| difference to Fully supervised (")
    twins = [line.split(" | ") for line in report.splitlines() if line.startswith("| monogan vs monogan-cifar100")]
    assert [t[-1] for t in twins] == ["+1.8 |", "+4.7 |", "+0.5 |", "-7.8 |"]  # MonoGAN - GAN (CIFAR-100)
    assert "| monogan | random-leaky | " in report  # gains over CIFAR-100's own random baseline
    for name in ("monogan", "rotnet-cifar100", "supervised-cifar100", "random", "kmeans-init-cifar100", "scattering"):
        results = json.loads((work / "probes-cifar100" / name / "results.json").read_text())
        assert results["data"]["kind"] == "cifar100"


def test_a_stage_recorded_with_another_command_runs_again_from_scratch(tmp_path):
    records, run = tmp_path / "stages", tmp_path / "run"
    out = run / "encoder.pt"

    def stage(steps: int):
        write = ("import pathlib, sys; p = pathlib.Path(sys.argv[1]); p.parent.mkdir(exist_ok=True); "
                 "p.write_text(' '.join(sys.argv[2:]))")
        return runner.Stage("train-x", [sys.executable, "-c", write, str(out), "--steps", str(steps)], [out],
                               run_dir=run)

    runner.run_stage(stage(1), records, None)
    assert out.read_text() == "--steps 1"
    assert runner.run_stage(stage(1), records, None)["command"][-1] == "1"  # same command: skipped
    assert out.read_text() == "--steps 1"
    (run / "checkpoint.pt").write_text("a checkpoint of the 1-step run")
    done = runner.run_stage(stage(2), records, None)
    assert out.read_text() == "--steps 2"  # the preset changed: rerun, not resumed from the old checkpoint
    assert "--resume" not in done["command"] and not (run / "checkpoint.pt").exists()
    assert json.loads((records / "train-x.json").read_text())["command"][-1] == "2"


def test_a_record_names_no_folder_of_the_machine_and_a_moved_work_folder_keeps_its_stages(tmp_path):
    """Records name the work folder's files relative to it and a tool by its name, so a work folder copied to
    another place (or machine) skips what it has done; an absolute record of an earlier version still counts."""
    work = tmp_path / "work"
    write = "import pathlib, sys; p = pathlib.Path(sys.argv[1]); p.parent.mkdir(parents=True); p.write_text('ok')"

    def stage(root: Path) -> runner.Stage:
        out = root / "runs" / "x" / "encoder.pt"
        return runner.Stage("train-x", [str(runner.BIN / "python"), "-c", write, str(out), f"cifar10:{root}/c"], [out])

    done = runner.run_stage(stage(work), work / "stages", None)
    assert done["command"][0] == "python" and done["command"][-2:] == ["runs/x/encoder.pt", "cifar10:c"]
    assert str(tmp_path) not in (work / "stages" / "train-x.json").read_text()
    moved = tmp_path / "moved"
    work.rename(moved)
    assert runner.run_stage(stage(moved), moved / "stages", None)["finished"] == done["finished"]  # skipped
    record = moved / "stages" / "train-x.json"
    record.write_text(json.dumps({**done, "command": stage(moved).command}))  # an earlier version's absolute one
    assert runner.ran_before(stage(moved), moved / "stages")


def test_a_stage_records_the_commit_it_started_at_and_every_commit_it_was_resumed_at(tmp_path, monkeypatch):
    """A long stage outlives commits made while it runs: the code it ran is the code of its start (and of each
    resumed attempt's start), not the commit at its end."""
    records, out = tmp_path / "stages", tmp_path / "done"
    commits = iter(["aaa", "bbb", "ccc", "ddd"])
    monkeypatch.setattr(runner, "git_commit", lambda: next(commits))
    slow = runner.Stage("train-x", [sys.executable, "-c", "import time; time.sleep(60)"], [out])
    with pytest.raises(runner.TimeLimit):
        runner.run_stage(slow, records, time.time())  # stopped at once: an interrupted attempt at "aaa"
    assert json.loads((records / "train-x.partial.json").read_text())["commits"] == ["aaa"]
    write = f"import pathlib; pathlib.Path({str(out)!r}).write_text('ok')"
    quick = runner.Stage("train-x", [sys.executable, "-c", write], [out])
    done = runner.run_stage(quick, records, None)  # resumed at "bbb"; "ccc" is what HEAD says at its end
    assert done["commit"] == "bbb" and done["commits"] == ["aaa", "bbb"]
    assert stage_row(done).endswith("| aaa, bbb |")
    assert next(commits) == "ccc"  # asked once per attempt, at its start
    assert not (records / "train-x.partial.json").exists()


def test_a_stage_runs_again_when_an_input_is_newer_than_its_record(tmp_path):
    """A retrained encoder must be probed again although the probe's command has not changed."""
    records, encoder, result = tmp_path / "stages", tmp_path / "encoder.pt", tmp_path / "probe" / "results.json"
    encoder.write_text("encoder, first training")
    copy = ("import pathlib, sys; out = pathlib.Path(sys.argv[2]); out.parent.mkdir(exist_ok=True); "
            "out.write_text(pathlib.Path(sys.argv[1]).read_text())")
    probe = runner.Stage("probe-x", [sys.executable, "-c", copy, str(encoder), str(result)], [result],
                            inputs=[encoder])
    runner.run_stage(probe, records, None)
    runner.run_stage(probe, records, None)  # nothing changed: skipped
    assert result.read_text() == "encoder, first training"
    encoder.write_text("encoder, second training")
    record_time = (records / "probe-x.json").stat().st_mtime
    os.utime(encoder, (record_time + 5, record_time + 5))  # coarse file-system clocks: make "later" unambiguous
    runner.run_stage(probe, records, None)
    assert result.read_text() == "encoder, second training"


def test_data_that_cannot_be_found_is_one_line_before_any_stage(tmp_path):
    with pytest.raises(SystemExit) as missing:
        cli.main(["cifar10", "--preset", "smoke", "--work", str(tmp_path / "work"), "--src", str(default_pool()[1]),
                  "--device", "cpu", "--data", f"cifar10-jpg:{tmp_path / 'nowhere'}"])
    assert str(missing.value).startswith(f"--data cifar10-jpg:{tmp_path / 'nowhere'}: ")
    assert "\n" not in str(missing.value) and not (tmp_path / "work" / "stages").exists()


@pytest.mark.parametrize("limit", ["-5", "0", "nan", "soon"])
def test_a_time_limit_that_is_not_positive_is_refused_before_any_stage(tmp_path, limit, capsys):
    work = tmp_path / "work"
    with pytest.raises(SystemExit) as refused:
        cli.main(["cifar10", "--preset", "smoke", "--work", str(work), "--src", str(default_pool()[1]), "--device",
                  "cpu", f"--time-limit={limit}"])
    assert refused.value.code == 2  # argparse's usage error
    assert "argument --time-limit:" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not work.exists()


def test_ctrl_c_stops_the_running_stage_and_records_the_time_spent(tmp_path):
    """A Ctrl-C reaches the driver only (stages run in a session of their own); it must pass it on, wait for the
    stage to stop as the tools do on Ctrl-C, and exit, leaving no stage running behind it."""
    marker, records = tmp_path / "marker", tmp_path / "stages"
    stage_code = ("import pathlib, signal, sys, time; m = pathlib.Path(sys.argv[1]); "
                  "signal.signal(signal.SIGINT, lambda *a: (m.write_text('stopped'), sys.exit(130))); "
                  "m.write_text('started'); time.sleep(120)")
    driver = ("import sys; from pathlib import Path; from experiments import stage as r\n"
              f"stage = r.Stage('train-x', [sys.executable, '-c', {stage_code!r}, {str(marker)!r}], [Path('never')])\n"
              "try:\n"
              f"    r.run_stage(stage, Path({str(records)!r}), None)\n"
              "except r.Interrupted as e:\n"
              "    print('interrupted during', e); sys.exit(130)\n")
    # SIGINT's default disposition for the driver: a suite started in the background passes it on ignored
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for _ in range(600):
        if marker.exists() and marker.read_text() == "started":
            break
        time.sleep(0.1)
    time.sleep(0.3)  # the stage has run a measurable time (records keep tenths of a second) when Ctrl-C comes
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert out.strip().splitlines()[-1] == "interrupted during train-x" and marker.read_text() == "stopped"
    assert json.loads((records / "train-x.partial.json").read_text())["wall_s"] > 0
    assert not (records / "train-x.json").exists()


def test_a_driver_killed_outright_keeps_the_wall_time_its_stage_had_run(tmp_path):
    """SIGKILL (a closed session, the OOM killer) gives the driver no chance to write the partial record on the way
    out: it is written while the stage runs, so the resumed stage's record still counts the time spent before."""
    records, out, pid = tmp_path / "stages", tmp_path / "done", tmp_path / "stage.pid"
    sleeper = f"import os, pathlib, time; pathlib.Path({str(pid)!r}).write_text(str(os.getpid())); time.sleep(600)"
    driver = ("import sys; from pathlib import Path; from experiments import stage as r\n"
              "r.PARTIAL_EVERY_S = 0.5\n"
              f"stage = r.Stage('train-x', [sys.executable, '-c', {sleeper!r}], [Path('never')])\n"
              f"r.run_stage(stage, Path({str(records)!r}), None)\n")
    proc = subprocess.Popen([sys.executable, "-c", driver], cwd=ROOT)
    partial = records / "train-x.partial.json"
    try:  # SIGKILL once the running stage's partial record holds a second of wall time
        stop_when(proc, lambda: partial.exists() and json.loads(partial.read_text())["wall_s"] >= 1.0, within_s=60)
    finally:
        proc.kill()
        proc.wait(timeout=60)
        if pid.exists():  # the stage, in a session of its own, outlives its driver
            os.kill(int(pid.read_text()), signal.SIGKILL)
    earlier = json.loads(partial.read_text())["wall_s"]
    assert earlier >= 1.0
    write = f"import pathlib; pathlib.Path({str(out)!r}).write_text('ok')"
    done = runner.run_stage(runner.Stage("train-x", [sys.executable, "-c", write], [out]), records, None)
    assert done["wall_s"] >= earlier and not partial.exists()


def test_the_full_preset_leaves_loader_workers_to_train_and_the_report_names_the_gpu_used(tmp_path, monkeypatch):
    import torch

    data = f"cifar10:{write_cifar10(tmp_path)}"

    def train_commands(preset):
        stages, _ = cifar10_stages(tmp_path / "work", PRESETS[preset], default_pool()[1], data, "cuda:1")
        return [s.command for s in stages if s.name.startswith("train-")]

    full, quick = train_commands("full"), train_commands("quick")
    assert len(full) == len(quick) == 6  # monogan, rotnet, deepcluster, their two real-data twins, supervised
    assert not any("--workers" in c for c in full)  # train's default: the CPUs the process may use
    assert all(c[c.index("--workers"):c.index("--workers") + 2] == ["--workers", "2"] for c in quick)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"GPU model {index}")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert device_name("cuda:1") == "GPU model 1 (cuda:1)"
    assert device_name("auto") == device_name("cuda") == "GPU model 0 (cuda:0)"
    assert device_name("cpu").startswith("CPU: ")


def test_cifar100_requires_its_pickles_and_refuses_missing_ones_in_one_line(tmp_path):
    args = ["cifar100", "--preset", "smoke", "--work", str(tmp_path / "work"), "--src", str(default_pool()[1]),
            "--device", "cpu"]
    # `python -m experiments` is the same command as experiments/reproduce.py
    result = subprocess.run([sys.executable, "-m", "experiments", *args], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().startswith("reproduce cifar100: --data cifar100:PATH is required")
    assert len(result.stderr.strip().splitlines()) == 1
    cases = {("--data", f"cifar10:{tmp_path}"): f"--data cifar10:{tmp_path}: the cifar100 target reads CIFAR-100",
             ("--data", f"cifar100:{tmp_path / 'nowhere'}"):
                 f"--data cifar100:{tmp_path / 'nowhere'}: {tmp_path / 'nowhere'}: no such folder"}
    for extra, message in cases.items():
        with pytest.raises(SystemExit) as refused:
            cli.main([*args, *extra])
        assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
    assert not (tmp_path / "work").exists()  # refused before any stage
