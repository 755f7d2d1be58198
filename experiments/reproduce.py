"""Reproduce the paper's CIFAR-10 results end to end: render -> train -> probe -> report, resumable stage by stage.

    python experiments/reproduce.py cifar10  [--preset quick|full] [--work runs/reproduce-cifar10]
    python experiments/reproduce.py ablation [--preset quick|full] [--work runs/reproduce-cifar10]
    python experiments/reproduce.py cifar100 --data cifar100:PATH [--preset quick|full] [--work ...]
    python experiments/reproduce.py modern   [--preset quick|full] [--work runs/reproduce-modern]

`cifar10` is Table 3's CIFAR-10 rows: MonoGAN, RotNet and DeepCluster trained on Image B expanded to a CIFAR-sized
set, their real-data twins (RotNet and the GAN trained on all of CIFAR-10), against the random-initialisation and
fully supervised baselines, each probed on conv1..conv4. `cifar100` is Table 3's CIFAR-100 columns: the same
single-image models, RotNet and the GAN trained on CIFAR-100 and a supervised CIFAR-100 baseline, all probed on
CIFAR-100 (the pickles must be given: the set is not in shared/data). `ablation` is Table 1: MonoGAN on every subset
of {scale, rotation, jitter}. Targets run with the same --work folder share their common stages (the rendered set,
the single-image trainings, the CIFAR-10 baselines). `modern` (experiments/modern.py, issue 21) asks the same
question of SimCLR, MoCo v2, BYOL and DINO on a ResNet-18.

Every stage records its command, wall time and the commit in WORK/stages/NAME.json when it succeeds; a stage whose
record and outputs exist is skipped, so the same command resumes after an interruption (training resumes from its
last checkpoint). `--time-limit` stops cleanly after that many seconds (exit status 3: run the command again), so a
preset can be run as a series of bounded batch commands. `--stages` runs a subset of the stages, and
`--report-only` writes the report from the stages finished so far. An interrupted stage's wall time is kept in
WORK/stages/NAME.partial.json (written every minute as well, so a driver killed outright loses at most a minute of
it) and added to the record of the attempt that completes it.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ToolkitError
from pipeline.fileio import atomic_write_text
from probe.report import NO_PAPER_ROW
from probe.results import md_code

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BIN = Path(sys.executable).parent
PARTIAL_EVERY_S = 60.0  # how often a running stage's wall time so far is written to its .partial.json

# What each preset changes; everything else is the tools' defaults (the papers' settings).
PRESETS: dict[str, dict] = {
    # One 2-core CPU, about two and a half hours for `cifar10`'s single-image rows and baselines on a quiet machine,
    # about 3 h more for the two real-data rows (measured: RotNet about 65 min, the GAN 1.1 s per critic step, and
    # 9 min per probe; bench/results/real-data-cifar10.md) and 45 min for the learning-free ones: 10,000 patches
    # instead of 50,000 (so DeepCluster can re-cluster every epoch), 4,992-6,248 steps per method instead of the
    # full schedules, and fully connected heads of 1024 instead of 4096 for RotNet, DeepCluster and supervised (on
    # the CPU the 4096-wide heads cost as much as the encoder; the probes read the encoder only).
    "quick": {
        "n_patches": 10_000,
        "train": {
            # 2.5x the steps of the first quick preset (6,000 against 2,400) and 4x its Adam step size: at 2,400
            # steps of lr 1e-4 most conv1 filters were still noise and conv1 scored +1.4 over random
            # (bench/results, follow-up).
            # Resize-convolution generator: with transposed convolutions half the critic's conv1 filters became
            # detectors of the generator's checkerboard, and conv1 scored +3.0 over random; resize gave +5.5
            "monogan": ["--max-steps", "6000", "--batch-size", "64", "--lr", "4e-4", "--beta1", "0",
                        "--g-upsampling", "resize"],
            # 4,992 steps; 800 left conv1 at +2.9 over random, 4,992 reached +5.1
            "rotnet": ["--epochs", "32", "--milestones", "22,28", "--batch-size", "64", "--head-dim", "1024"],
            "deepcluster": ["--epochs", "40", "--batch-size", "64", "--head-dim", "1024"],
            # 8 epochs, not fewer: the row measures what the JPEG copy of CIFAR-10 costs against the paper's
            # 90-epoch row, and 1,000 steps left conv1 at 59.2 against 63.1 after 8 epochs
            "supervised": ["--epochs", "8", "--batch-size", "64", "--head-dim", "1024"],
            # The real-data twins (RotNet and the GAN trained on all 50,000 images: 781 steps per epoch) take the
            # same number of steps as their single-image rows, so that the "one image vs the full set" comparison
            # is like for like: RotNet 4,992 steps with the rate dropped at the same fractions of the run as the
            # single-image 22/32 and 28/32 (epochs 4.4 and 5.6 of 6.4: 4 and 6); the GAN 6,000 critic steps on a
            # 20-epoch linear ramp, which leaves it at the same 62% of its rate as the single-image run's
            # 38.5 of 100 epochs
            "rotnet-real": ["--epochs", "7", "--milestones", "4,6", "--max-steps", "4992", "--batch-size", "64",
                            "--head-dim", "1024"],
            "monogan-real": ["--max-steps", "6000", "--epochs", "20", "--batch-size", "64", "--lr", "4e-4",
                             "--beta1", "0", "--g-upsampling", "resize"],
        },
        "workers": 2,  # loader workers of every training stage (the 2-core machine the results were measured on)
        "probe": [],
        "init": [],  # probe init-kmeans: its defaults (160 images, as the paper's row; 10 scaling iterations)
    },
    # One GPU: the paper-scale schedules at d = 50,000: the tools' defaults but for the epochs (DeepCluster 100, not
    # its ImageNet-scale 500) and the supervised batch (128, not 256). Loader workers: train's default (the CPUs the
    # process may use, less one).
    "full": {
        "n_patches": 50_000,
        "train": {
            "monogan": ["--epochs", "100"],
            "rotnet": ["--epochs", "30"],
            "deepcluster": ["--epochs", "100"],
            "supervised": ["--epochs", "90", "--batch-size", "128"],
            # the same epochs as the single-image rows: at d = 50,000 patches and 50,000 images, the same steps
            "rotnet-real": ["--epochs", "30"],
            "monogan-real": ["--epochs", "100"],
        },
        "probe": [],
        "init": [],  # probe init-kmeans: its defaults (160 images, as the paper's row; 10 scaling iterations)
    },
    # For the test suite only: the whole chain in a minute or two on toy data. Heads of 64 (the quick preset's
    # --head-dim option at a toy width): at the default 4096, the fc layers made each step and checkpoint (270 MB)
    # of RotNet, DeepCluster and supervised cost seconds.
    "smoke": {
        "n_patches": 256,
        "train": {m: ["--max-steps", "3", "--batch-size", "16", "--ckpt-every", "2",
                      *([] if m.startswith("monogan") else ["--head-dim", "64"])]
                  for m in ("monogan", "rotnet", "deepcluster", "supervised", "rotnet-real", "monogan-real")},
        "workers": 2,
        "probe": ["--epochs", "1", "--batch-size", "64", "--workers", "0"],
        # 48 images: conv3 and conv4 need 384 patches each, and a CIFAR image gives 9 at those layers
        "init": ["--n-images", "48", "--between-layer-iterations", "1"],
    },
}
ABLATION = {  # Table 1 rows: (label, scale, rotate, jitter)
    "none": ("(c) No aug.", False, False, False),
    "jitter": ("(d) Jitter", False, False, True),
    "rotation": ("(e) Rotation", False, True, False),
    "scale": ("(f) Scale", True, False, False),
    "rot-jitter": ("(g) Rot. & jitter", False, True, True),
    "rot-scale": ("(h) Rot. & scale", True, True, False),
    "jitter-scale": ("(i) Jitter & scale", True, False, True),
    "all": ("(j) All", True, True, True),
}


@dataclass
class Stage:
    name: str
    command: list[str]
    outputs: list[Path]
    run_dir: Path | None = None  # a training run: resumed from its checkpoint, cleared if it never wrote one
    meta: dict = field(default_factory=dict)
    # files an earlier stage makes (shards, an encoder): one newer than this stage's record makes it run again,
    # as make does, so a retrained encoder is probed again even though the probe's command is the same
    inputs: list[Path] = field(default_factory=list)


def cifar10_stages(work: Path, preset: dict, src: Path, data: str, device: str) -> tuple[list[Stage], list]:
    stages, reports = single_image_rows(work, preset, src, data, device)
    return stages, [*baseline_reports(work, "Fully supervised", "Random"), *reports]


def single_image_rows(work: Path, preset: dict, src: Path, data: str, device: str) -> tuple[list[Stage], list]:
    """Table 3's rows for the data set `data` names: MonoGAN, RotNet and DeepCluster trained on Image B (the same
    stages for every target sharing --work), their real-data twins, and the baselines."""
    shards = work / "shards" / "cifar-B-all"
    stages = [render_stage(shards, src, preset["n_patches"], scale=True, rotate=True, jitter=True)]
    reports = []
    for method in ("monogan", "rotnet", "deepcluster"):
        stages += train_and_probe(work, method, shards, preset, data, device)
        # Table 3's RotNet row was trained on the full set, not on one image, and it has no DeepCluster row:
        # those two are shown beside the paper, compared only through the gains over random and (RotNet) with
        # the real-data twin
        paper_row = {"monogan": "MonoGAN", "rotnet": NO_PAPER_ROW, "deepcluster": NO_PAPER_ROW}[method]
        reports.append((probe_folder(work, data) / method / "results.json", paper_row))
    real_stages, real_reports = real_set_rows(work, preset, data, device)
    free_stages, free_reports = learning_free_rows(work, preset, data, device)
    return (stages + real_stages + baselines(work, preset, data, device) + free_stages,
            [*reports, *real_reports, *free_reports])


def cifar100_stages(work: Path, preset: dict, src: Path, data: str, device: str) -> tuple[list[Stage], list]:
    """Table 3's CIFAR-100 columns: the single-image models (the same stages as `cifar10`, shared through --work),
    RotNet and the GAN trained on CIFAR-100, and the baselines, all probed on the CIFAR-100 pickles `data` names."""
    from train.cifar_pickle import read_cifar

    kind, _, path = data.partition(":")
    if kind != "cifar100" or not path:
        raise ToolkitError("the cifar100 target reads CIFAR-100's python pickles: give --data cifar100:PATH "
                           "(PATH: cifar-100-python/ or the folder holding it; the set is not in shared/data)")
    read_cifar(Path(path).expanduser(), "cifar100")  # a missing or broken folder refused before any stage runs
    stages, reports = single_image_rows(work, preset, src, data, device)
    sup = "supervised-cifar100"
    return stages, [*baseline_reports(work, "Fully supervised", "Random", data, sup), *reports]


# Table 3's rows trained on a real set, by the run's method: the paper row each is compared with (per data set) and
# the single-image run it is the twin of
REAL_ROWS = {"rotnet": {"cifar10": "RotNet", "cifar100": "RotNet"},
             "monogan": {"cifar10": "GAN (CIFAR-10)", "cifar100": "GAN (CIFAR-100)"}}


def real_set_rows(work: Path, preset: dict, data: str, device: str) -> tuple[list[Stage], list]:
    """RotNet and the GAN trained on the whole of the probe's data set (its train split; labels unused), probed on
    it: the N = d end of the paper's comparison, each named after its paper row."""
    dataset = data_set_of(data)
    stages, reports = [], []
    for method, rows in REAL_ROWS.items():
        run = work / "runs" / f"{method}-{dataset}"
        stages.append(Stage(f"train-{run.name}", [str(BIN / "train"), method, data, "--arch", "cifar", "--out",
                                                  str(run), "--device", device, *workers_option(preset),
                                                  *preset["train"][f"{method}-real"]],
                            [run / "encoder.pt"], run_dir=run))
        stages.append(probe_stage(work, run.name, str(run / "encoder.pt"), preset, data, device))
        reports.append((probe_folder(work, data) / run.name / "results.json", rows[dataset]))
    return stages, reports


# The baselines that learn nothing (Table 2 rows b and d; Table 3 has neither, so they are shown beside it):
# Krahenbuhl et al.'s k-means initialisation and, as their "random + data-dependent scaling", the same rescaling
# of the seeded random network, both from a seeded subset of the probe's own training images; and the scattering
# transform (J = 2, L = 8), whose two orders stand for conv1 and conv2
LEARNING_FREE = {"kmeans-init": "kmeans", "random-rescaled": "random"}


def learning_free_rows(work: Path, preset: dict, data: str, device: str) -> tuple[list[Stage], list]:
    """The k-means initialisation, the rescaled random network and the scattering transform, each probed on `data`
    (its CIFAR-10 stages keep plain names; another set's carry the set's name, as the supervised baseline's)."""
    dataset = data_set_of(data)
    suffix = "" if dataset == "cifar10" else f"-{dataset}"
    stages, reports = [], []
    for name, filters in LEARNING_FREE.items():
        run = work / "runs" / f"{name}{suffix}"
        # --force: a stage run again (its command changed) replaces the encoder it made before
        stages.append(Stage(f"init-{run.name}", [str(BIN / "probe"), "init-kmeans", "cifar", "--data", data,
                                                 "--filters", filters, "--out", str(run), "--force",
                                                 *preset["init"]], [run / "encoder.pt"]))
        stages.append(probe_stage(work, run.name, str(run / "encoder.pt"), preset, data, device))
    stages.append(probe_stage(work, "scattering", "random:scattering-cifar", preset, data, device))
    folder = probe_folder(work, data)
    for name in (*(f"{n}{suffix}" for n in LEARNING_FREE), "scattering"):
        reports.append((folder / name / "results.json", NO_PAPER_ROW))
    return stages, reports


def data_set_of(data: str) -> str:
    """The paper's data set a --data specification holds: cifar100 for `cifar100:`, else CIFAR-10."""
    return "cifar100" if data.partition(":")[0] == "cifar100" else "cifar10"


def probe_folder(work: Path, data: str) -> Path:
    """Where probes on `data` go: WORK/probes for CIFAR-10 (either copy), WORK/probes-cifar100 for CIFAR-100, so
    that targets sharing --work keep their probes apart."""
    return work / ("probes" if data_set_of(data) == "cifar10" else f"probes-{data_set_of(data)}")


def ablation_stages(work: Path, preset: dict, src: Path, data: str, device: str) -> tuple[list[Stage], list]:
    stages, reports = [], []
    for name, (label, scale, rotate, jitter) in ABLATION.items():
        shards = work / "shards" / f"cifar-B-{name}"
        stages.append(render_stage(shards, src, preset["n_patches"], scale, rotate, jitter))
        run = "monogan" if name == "all" else f"monogan-{name}"
        stages += train_and_probe(work, "monogan", shards, preset, data, device, run_name=run)
        reports.append((work / "probes" / run / "results.json", label))
    stages += baselines(work, preset, data, device)
    return stages, [*baseline_reports(work, "(a) Fully sup.", "(b) Random feat."), *reports]


def baseline_reports(work: Path, supervised_row: str, random_row: str, data: str = "cifar10:",
                     supervised: str = "supervised") -> list[tuple[Path, str]]:
    """The baselines' results with the paper rows they are compared to (both random variants against Random)."""
    probes = probe_folder(work, data)
    return [(probes / supervised / "results.json", supervised_row),
            (probes / "random" / "results.json", random_row),
            (probes / "random-leaky" / "results.json", random_row)]


def render_stage(shards: Path, src: Path, n: int, scale: bool, rotate: bool, jitter: bool) -> Stage:
    cmd = [str(BIN / "pipeline"), "render", "--n-src", "1", "--src", str(src), "--size", "32",
           "--n-patches", str(n), "--out", str(shards)]
    cmd += [flag for on, flag in ((scale, "--no-scale"), (rotate, "--no-rotate"), (jitter, "--no-jitter")) if not on]
    return Stage(f"render-{shards.name}", cmd, [shards / "manifest.json"])


def train_and_probe(work: Path, method: str, shards: Path, preset: dict, data: str, device: str,
                    run_name: str | None = None) -> list[Stage]:
    run = work / "runs" / (run_name or method)
    train = Stage(f"train-{run.name}", [str(BIN / "train"), method, str(shards), "--arch", "cifar", "--out", str(run),
                                        "--device", device, *workers_option(preset), *preset["train"][method]],
                  [run / "encoder.pt"], run_dir=run, inputs=[shards / "manifest.json"])
    return [train, probe_stage(work, run.name, str(run / "encoder.pt"), preset, data, device)]


def workers_option(preset: dict) -> list[str]:
    """The preset's loader workers for training stages, or none: train's default for the machine."""
    return ["--workers", str(preset["workers"])] if "workers" in preset else []


def baselines(work: Path, preset: dict, data: str, device: str) -> list[Stage]:
    kind, _, path = data.partition(":")
    sup_data = str(cifar_imagefolder(Path(path)) if kind == "cifar10-jpg" else Path(path))
    # trained on the probe's data set: CIFAR-10's run keeps its old name, so existing work folders resume
    run = work / "runs" / ("supervised" if data_set_of(data) == "cifar10" else f"supervised-{data_set_of(data)}")
    sup = Stage(f"train-{run.name}", [str(BIN / "train"), "supervised", sup_data, "--arch", "cifar", "--out",
                                      str(run), "--device", device, *workers_option(preset),
                                      *preset["train"]["supervised"]],
                [run / "encoder.pt"], run_dir=run)
    # two random baselines: the plain encoder, and MonoGAN's leaky-ReLU variant (its like-for-like baseline)
    return [sup, probe_stage(work, run.name, str(run / "encoder.pt"), preset, data, device),
            probe_stage(work, "random", "random:cifar", preset, data, device),
            probe_stage(work, "random-leaky", "random:cifar:leaky_relu=true", preset, data, device)]


def probe_stage(work: Path, name: str, encoder: str, preset: dict, data: str, device: str) -> Stage:
    """`probe linear` of one encoder on `data`; on CIFAR-100 the stage is named probe-cifar100-NAME (the CIFAR-10
    probe of the same encoder keeps probe-NAME)."""
    folder = probe_folder(work, data)
    out = folder / name
    inputs = [] if encoder.startswith("random:") else [Path(encoder)]
    prefix = "probe-" if folder.name == "probes" else f"probe-{folder.name.removeprefix('probes-')}-"
    return Stage(f"{prefix}{name}", [str(BIN / "probe"), "linear", encoder, "--data", data, "--out", str(out),
                                   "--device", device, *preset["probe"]], [out / "results.json"], inputs=inputs)


def cifar_imagefolder(path: Path) -> Path:
    """The shared CIFAR-10 JPEG tarballs, extracted once (the same cache `probe` uses) into train/ and test/."""
    from train.archive import default_cache_dir, extracted

    if (path / "train").is_dir():
        return path
    return extracted([path / "train.tar.gz", path / "test.tar.gz"], default_cache_dir(), name="cifar10-jpg")


class TimeLimit(Exception):
    pass


class Interrupted(Exception):
    """Ctrl-C during a stage: its process was stopped as a Ctrl-C stops it (complete shards and checkpoints kept)."""


def finished_record(stage: Stage, records: Path) -> dict | None:
    """The stage's record if it has finished and its outputs are all there, else None."""
    record = records / f"{stage.name}.json"
    if record.exists() and all(p.exists() for p in stage.outputs):
        return json.loads(record.read_text())
    return None


def run_stage(stage: Stage, records: Path, deadline: float | None) -> dict:
    record = records / f"{stage.name}.json"
    if (done := finished_record(stage, records)) is not None:
        newer = [p for p in stage.inputs if p.exists() and p.stat().st_mtime > record.stat().st_mtime]
        same = [a for a in done["command"] if a != "--resume"] == stage.command
        if same and not newer:
            print(f"[{stage.name}] done before ({done['wall_s']:.0f} s), skipped", flush=True)
            return done
        # a changed preset or input must not be answered with old outputs, nor resume the old run's checkpoint
        why = "with a different command" if not same else f"from an older {newer[0]}"
        print(f"[{stage.name}] done before {why}; running it again", flush=True)
        record.unlink()
        if stage.run_dir is not None:
            shutil.rmtree(stage.run_dir, ignore_errors=True)
    cmd = list(stage.command)
    if stage.run_dir is not None:
        if (stage.run_dir / "checkpoint.pt").exists():
            cmd.append("--resume")
        elif stage.run_dir.exists():
            shutil.rmtree(stage.run_dir)  # interrupted before its first checkpoint: nothing to resume
    print(f"[{stage.name}] {' '.join(cmd)}", flush=True)
    partial = records / f"{stage.name}.partial.json"  # wall time and code of earlier, interrupted attempts
    before = json.loads(partial.read_text()) if partial.exists() else {}
    earlier = before.get("wall_s", 0.0)
    # the code a stage runs is the code its process imported when it started: a commit made while a long stage
    # runs must not be recorded as the one that produced it
    commits = [*before.get("commits", []), git_commit()]
    records.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def save_partial() -> None:
        atomic_write_text(partial, json.dumps({"wall_s": round(earlier + time.time() - t0, 1),
                                               "commits": commits}) + "\n")
    # OpenMP threads that spin while waiting stall badly when the CPU is shared (measured on 2 cores under load:
    # 23 images/s spinning, 67 passive); passive waiting costs little on an idle machine.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    # a session of its own, so the whole tree (loader workers too) can be signalled; a Ctrl-C in the terminal then
    # reaches this process only, which passes it on
    proc = subprocess.Popen(cmd, start_new_session=True, env=env)
    saved = time.time()
    try:
        while proc.poll() is None:
            if time.time() - saved > PARTIAL_EVERY_S:  # a driver killed outright (SIGKILL, a closed session)
                save_partial()  # loses at most this much of the stage's wall time
                saved = time.time()
            if deadline is not None and time.time() > deadline:
                stop_stage(proc)
                save_partial()
                raise TimeLimit(stage.name)
            time.sleep(0.2)
    except KeyboardInterrupt:
        stop_stage(proc)
        save_partial()
        raise Interrupted(stage.name) from None
    if proc.returncode != 0:
        raise SystemExit(f"[{stage.name}] failed with exit status {proc.returncode}; fix the cause and run the same "
                         f"command again to resume")
    done = {"stage": stage.name, "command": cmd, "wall_s": round(earlier + time.time() - t0, 1),
            "commit": commits[-1], "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if len(set(commits)) > 1:  # resumed across commits: every attempt's code, oldest first
        done["commits"] = list(dict.fromkeys(commits))
    atomic_write_text(record, json.dumps(done, indent=1) + "\n")
    partial.unlink(missing_ok=True)
    return done


def stop_stage(proc: subprocess.Popen) -> None:
    """Stop a stage's process group as Ctrl-C would (the tools keep complete shards and checkpoints on an
    interrupt); kill it if it has not stopped within two minutes or on a second Ctrl-C."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    except ProcessLookupError:  # it had ended already
        pass
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stage_row(record: dict) -> str:
    """A finished stage's line in the reports' wall-time table: its name, wall time and the commit(s) it ran at."""
    commits = ", ".join(record.get("commits") or [record["commit"]])
    return f"| {record['stage']} | {record['wall_s']:.0f} | {commits} |"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: str) -> str:
    """The device the stages ran on: the GPU that --device names (cuda and auto: the trainers' cuda:LOCAL_RANK)."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        named = torch.device("cuda" if device == "auto" else device)
        index = named.index if named.index is not None else int(os.environ.get("LOCAL_RANK", "0"))
        return f"{torch.cuda.get_device_name(index)} (cuda:{index})"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"


JPEG_NOTE = ("The CIFAR-10 copy in `shared/data/cifar10-jpg` was re-encoded as JPEG (quality 75, 4:2:0 chroma); the "
             "fully supervised row measures what that, together with the preset's schedule, costs against the "
             "paper's 66.5 / 70.1 / 72.4 / 75.9. The copy's own cost is measured apart by `bench/jpeg_cost.py` "
             "(`bench/results/jpeg-cost.md`: a second JPEG generation of the same size costs the supervised row "
             "0.6-1.6 points and the single-image and random rows nothing measurable, on the CPU quick preset).")


def write_report(work: Path, target: str, preset_name: str, reports: list, stages: list[dict], device: str,
                 data: str, missing: list[str] = ()) -> Path:
    results = [(p, row) for p, row in reports if p.exists()]
    body = work / f"report-{target}-probe.md"
    cmd = [str(BIN / "probe"), "report", *[str(p) for p, _ in results], "--out", str(body)]
    for _, row in results:
        cmd += ["--against", row]
    subprocess.run(cmd, check=True)
    total = sum(s["wall_s"] for s in stages)
    lines = [f"# Reproduction of the paper's {REPORT_TITLES.get(target, target)}", "",
             f"- preset: **{preset_name}** ({PRESET_NOTES[preset_name]})",
             f"- device: {device_name(device)}; commit {git_commit()}; {time.strftime('%Y-%m-%d')}",
             f"- probe and supervised data: {md_code(data)}",
             f"- wall time: {total / 60:.1f} min over {len(stages)} stages",
             *([f"- **incomplete**: {len(missing)} stages not yet run ({', '.join(missing)}); the tables below hold "
                f"the finished ones only"] if missing else []), "",
             "| stage | wall (s) | commit |", "| --- | ---: | --- |"]
    lines += [stage_row(s) for s in stages]
    if data.startswith("cifar10-jpg:"):
        lines += ["", JPEG_NOTE]
    lines += ["", *gains_section(work, [p for p, _ in results], data), *twins_section(work, data, results), "---",
              "", body.read_text()]
    out = work / f"report-{target}.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


REPORT_TITLES = {"cifar10": "CIFAR-10 Table 3 rows", "cifar100": "CIFAR-100 Table 3 columns",
                 "ablation": "CIFAR-10 Table 1"}


def top1(path: Path) -> list[float]:
    """conv1..conv4 top-1 of a linear probe's results.json."""
    layers = json.loads(path.read_text())["layers"]
    return [layers[f"conv{i}"]["top1"] for i in range(1, 5)]


def table3_part(dataset: str):
    from probe.paper import paper_parts

    return next(p for p in paper_parts() if p.table_id == "table3" and p.dataset == dataset)


def gains_section(work: Path, results: list[Path], data: str = "cifar10:") -> list[str]:
    """The paper's central claim, checked: each single-image model's gain over its like-for-like random baseline
    (leaky ReLU for MonoGAN's critic, ReLU otherwise), against the paper's MonoGAN-over-random gain. Models trained
    on a real set are left to the twins table: the claim is about one image."""
    from train.real_sets import real_set_spec

    probes = probe_folder(work, data)
    baselines = {leaky: probes / name / "results.json" for leaky, name in ((False, "random"), (True, "random-leaky"))}
    table3 = table3_part(data_set_of(data))
    paper = [m - r for m, r in zip(table3.find("MonoGAN").values, table3.find("Random").values, strict=True)]
    lines = ["## The central claim: gain over the random baseline (points)", "",
             "The paper's single-image models beat random features by at least 5 points on conv1 and conv2.", "",
             "| model | baseline | conv1 | conv2 | conv3 | conv4 | conv1 and conv2 >= +5 |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |",
             "| paper: MonoGAN | paper: Random | " + " | ".join(f"{g:+.1f}" for g in paper) + " | yes |"]
    from train.methods import get_method, list_methods

    for path in results:
        result = json.loads(path.read_text())
        config = result["encoder"].get("config", {})
        method = config.get("method")
        if (method not in list_methods() or get_method(method).data_kind == "labelled"
                or real_set_spec(config.get("data") or "")):
            continue  # the baselines (random or learning-free weights, training on labels), the real-data twins
        leaky = bool(result["encoder"].get("arch_kwargs", {}).get("leaky_relu"))
        if not baselines[leaky].exists():
            continue
        gains = [m - r for m, r in zip(top1(path), top1(baselines[leaky]), strict=True)]
        holds = "yes" if min(gains[:2]) >= 5 else "no"
        lines.append(f"| {path.parent.name} | {baselines[leaky].parent.name} | "
                     + " | ".join(f"{g:+.1f}" for g in gains) + f" | {holds} |")
    return [*lines, ""]


def twins_section(work: Path, data: str, results: list[tuple[Path, str]]) -> list[str]:
    """One image against the full set, as the paper reads Table 3: each single-image model beside the same method
    trained on the whole data set, per layer, with the paper's difference where the paper has both rows (the GAN;
    the paper has no single-image RotNet on CIFAR)."""
    dataset = data_set_of(data)
    probes, part = probe_folder(work, data), table3_part(dataset)
    present = {path for path, _ in results}
    pairs = [(probes / method / "results.json", probes / f"{method}-{dataset}" / "results.json", rows[dataset])
             for method, rows in REAL_ROWS.items()]
    pairs = [pair for pair in pairs if pair[0] in present and pair[1] in present]
    if not pairs:
        return []
    name = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[dataset]
    lines = [f"## One image against the full set ({name}, points)", "",
             f"Each single-image model beside the same method trained on all of {name} at the same schedule; "
             "difference = single image minus full set. The paper's difference is MonoGAN minus its "
             f"\"{REAL_ROWS['monogan'][dataset]}\" row; it has no single-image RotNet on CIFAR.", "",
             "| model | layer | one image | full set | difference | paper's difference |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for single, real, paper_row in pairs:
        mono = part.find("MonoGAN") if single.parent.name == "monogan" else None
        twin = part.find(paper_row)
        for i, (one, full) in enumerate(zip(top1(single), top1(real), strict=True)):
            paper = ("-" if mono is None or mono.values[i] is None or twin.values[i] is None
                     else f"{mono.values[i] - twin.values[i]:+.1f}")
            lines.append(f"| {single.parent.name} vs {real.parent.name} | conv{i + 1} | {one:.1f} | {full:.1f} | "
                         f"{one - full:+.1f} | {paper} |")
    return [*lines, ""]


PRESET_NOTES = {
    "quick": "CPU: 10,000 patches instead of 50,000; MonoGAN 6,000 critic steps (1,200 generator steps) at Adam lr "
             "4e-4, beta1 0, with a resize-convolution generator; RotNet 32 epochs (4,992 steps); DeepCluster 40 "
             "epochs of 10,000 (6,240 steps); supervised 8 epochs of CIFAR-10; RotNet and the GAN trained on the full "
             "set (the real-data rows) take as many steps as their single-image rows (4,992 and 6,000); all at "
             "batch 64, with 1024-wide heads instead of 4096; probes use the full 36-epoch protocol",
    "full": "one GPU: 50,000 patches; MonoGAN 100 epochs, RotNet 30, DeepCluster 100, supervised 90; the real-data "
            "RotNet and GAN the same epochs as their single-image rows (30 and 100 of 50,000 images); 36-epoch probes",
    "smoke": "test-suite toy run: 256 patches, 3 steps per method, 1-epoch probes; its numbers mean nothing",
}


def positive_seconds(text: str) -> float:
    """--time-limit: a positive number of seconds, refused up front (a spent limit would stop the first stage
    part-way, and 0 would silently mean no limit)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number of seconds")
    return seconds


def default_data(target: str) -> str:
    """--data when not given: the shared JPEG copy of CIFAR-10; the cifar100 target has no default (the set is
    not on this machine), refused with one line."""
    if target == "cifar100":
        raise SystemExit("reproduce cifar100: --data cifar100:PATH is required (CIFAR-100's python pickles, "
                         "cifar-100-python/ or the folder holding it; the set is not in shared/data)")
    return f"cifar10-jpg:{SHARED / 'cifar10-jpg'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", choices=["cifar10", "ablation", "cifar100", "modern"])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--work", type=Path, default=None, help="default runs/reproduce-cifar10 (modern: -modern)")
    ap.add_argument("--src", type=Path, default=SHARED / "paper-images" / "animals.png", help="Image B by default")
    ap.add_argument("--data", default=None,
                    help="probe/supervised data as KIND:PATH (cifar10-jpg:DIR or cifar10:cifar-10-batches-py; "
                         "cifar100:cifar-100-python for cifar100, which requires it); default: "
                         f"cifar10-jpg:{SHARED / 'cifar10-jpg'}")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--time-limit", type=positive_seconds, default=None,
                    help="seconds; stop cleanly (exit 3) when reached")
    ap.add_argument("--stages", default=None,
                    help="comma-separated glob patterns (e.g. 'train-monogan,probe-monogan'): run only the matching "
                         "stages, e.g. to spread a preset over machines sharing --work; the report is then skipped")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: write the report from the stages finished so far, listing those not yet run")
    args = ap.parse_args()
    if not args.src.is_file():
        raise SystemExit(f"{args.src}: source image not found (pass --src)")
    preset = PRESETS[args.preset]
    args.data = args.data or default_data(args.target)
    build = {"cifar10": cifar10_stages, "cifar100": cifar100_stages}.get(args.target, ablation_stages)
    report_writer = write_report
    if args.target == "modern":  # SimCLR, MoCo v2, BYOL and DINO: experiments/modern.py (issue 21)
        import modern

        preset, build, report_writer = modern.PRESETS[args.preset], modern.modern_stages, modern.write_report
    args.work = args.work or ROOT / "runs" / f"reproduce-{'modern' if args.target == 'modern' else 'cifar10'}"
    try:
        stages, reports = build(args.work, preset, args.src, args.data, args.device)
    except ToolkitError as e:  # the CIFAR-10 data is located (and a JPEG archive unpacked) before any stage runs
        raise SystemExit(f"--data {args.data}: {e}") from None
    stages = list({s.name: s for s in stages}.values())  # shared stages once
    if args.stages:
        patterns = args.stages.split(",")
        stages = [s for s in stages if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]
        if not stages:
            raise SystemExit(f"--stages {args.stages}: matches none of this target's stages")
    records = args.work / "stages"
    if args.report_only:
        finished = {s.name: record for s in stages if (record := finished_record(s, records)) is not None}
        missing = [s.name for s in stages if s.name not in finished]
        if not any(p.exists() for p, _ in reports):
            raise SystemExit(f"{args.work}: no probe has finished yet; nothing to report")
        report = report_writer(args.work, args.target, args.preset, reports, list(finished.values()), args.device,
                               args.data, missing)
        print(f"report: {report} ({len(finished)} stages done, {len(missing)} not yet run)")
        return
    deadline = time.time() + args.time_limit if args.time_limit else None
    done = []
    try:
        for stage in stages:
            done.append(run_stage(stage, records, deadline))
    except TimeLimit as e:
        print(f"time limit reached during {e}; run the same command again to continue", flush=True)
        sys.exit(3)
    except Interrupted as e:
        print(f"interrupted during {e}; run the same command again to continue", flush=True)
        sys.exit(130)
    if args.stages:
        print(f"{len(done)} selected stages done; run without --stages to finish the rest and write the report")
        return
    report = report_writer(args.work, args.target, args.preset, reports, done, args.device, args.data)
    print(f"report: {report}")


def run() -> None:
    """main(), with a failing disk (every file is written through pipeline.fileio) reported as one line."""
    try:
        main()
    except OSError as e:
        if e.filename is None:
            raise
        raise SystemExit(f"{e.filename}: {e.strerror or e}") from None


if __name__ == "__main__":
    run()
