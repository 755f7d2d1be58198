"""The paper's CIFAR rows, which the cifar10, cifar100 and ablation targets share: the presets, the stages of Table 3's
rows (MonoGAN, RotNet and DeepCluster on Image B, their real-data twins, the learning-free baselines) and of the
baselines (supervised, random), and the report that sets them against the paper's tables. Targets run with the same
--work folder share their common stages (the rendered set, the single-image trainings, the CIFAR-10 baselines).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from common.fileio import atomic_write_text
from experiments.commands import (
    data_set_of,
    probe_folder,
    probe_stage,
    render_stage,
    supervised_data,
    workers_option,
)
from experiments.report import report_header
from experiments.stage import BIN, Stage
from probe.report import NO_PAPER_ROW

if TYPE_CHECKING:
    from probe.paper import PaperPart

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
        stages += real_set_stages(work, method, preset, data, device)
        reports.append((probe_folder(work, data) / f"{method}-{dataset}" / "results.json", rows[dataset]))
    return stages, reports


def real_set_stages(work: Path, method: str, preset: dict, data: str, device: str) -> list[Stage]:
    """`method` trained on the train split of `data` (`preset["train"]["METHOD-real"]`) and probed on `data`: runs and
    stages named METHOD-DATASET, shared by every target that trains the same method on the same set."""
    run = work / "runs" / f"{method}-{data_set_of(data)}"
    train = Stage(f"train-{run.name}", [str(BIN / "train"), method, data, "--arch", "cifar", "--out", str(run),
                                        "--device", device, *workers_option(preset),
                                        *preset["train"][f"{method}-real"]],
                  [run / "encoder.pt"], run_dir=run)
    return [train, probe_stage(work, run.name, str(run / "encoder.pt"), preset, data, device)]


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


def baseline_reports(work: Path, supervised_row: str, random_row: str, data: str = "cifar10:",
                     supervised: str = "supervised") -> list[tuple[Path, str]]:
    """The baselines' results with the paper rows they are compared to (both random variants against Random)."""
    probes = probe_folder(work, data)
    return [(probes / supervised / "results.json", supervised_row),
            (probes / "random" / "results.json", random_row),
            (probes / "random-leaky" / "results.json", random_row)]



def train_and_probe(work: Path, method: str, shards: Path, preset: dict, data: str, device: str,
                    run_name: str | None = None) -> list[Stage]:
    run = work / "runs" / (run_name or method)
    train = Stage(f"train-{run.name}", [str(BIN / "train"), method, str(shards), "--arch", "cifar", "--out", str(run),
                                        "--device", device, *workers_option(preset), *preset["train"][method]],
                  [run / "encoder.pt"], run_dir=run, inputs=[shards / "manifest.json"])
    return [train, probe_stage(work, run.name, str(run / "encoder.pt"), preset, data, device)]



def baselines(work: Path, preset: dict, data: str, device: str) -> list[Stage]:
    """The supervised encoder trained on the probe's data set, and the random encoder probed twice: plain, and with
    MonoGAN's leaky ReLU (its like-for-like baseline)."""
    sup_data = supervised_data(data)
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


JPEG_NOTE = ("The CIFAR-10 copy in `shared/data/cifar10-jpg` was re-encoded as JPEG (quality 75, 4:2:0 chroma); the "
             "fully supervised row measures what that, together with the preset's schedule, costs against the "
             "paper's 66.5 / 70.1 / 72.4 / 75.9. The copy's own cost is measured apart by `bench/jpeg_cost.py` "
             "(`bench/results/jpeg-cost.md`: a second JPEG generation of the same size costs the supervised row "
             "0.6-1.6 points and the single-image and random rows nothing measurable, on the CPU quick preset).")



def write_report(work: Path, target: str, preset_name: str, reports: list, stages: list[dict], device: str,
                 data: str, missing: list[str] = (), *, title: str) -> Path:
    """WORK/report-TARGET.md: the stages, the central claim (gains over random), one image against the full set,
    and `probe report`'s comparison of every finished probe with its paper row (WORK/report-TARGET-probe.md)."""
    results = [(p, row) for p, row in reports if p.exists()]
    body = work / f"report-{target}-probe.md"
    cmd = [str(BIN / "probe"), "report", *[str(p) for p, _ in results], "--out", str(body)]
    for _, row in results:
        cmd += ["--against", row]
    subprocess.run(cmd, check=True)
    lines = report_header(f"Reproduction of the paper's {title}", preset_name, PRESET_NOTES[preset_name], device,
                          "probe and supervised data", data, stages, missing)
    if data.startswith("cifar10-jpg:"):
        lines += ["", JPEG_NOTE]
    lines += ["", *gains_section(work, [p for p, _ in results], data), *twins_section(work, data, results), "---",
              "", body.read_text()]
    out = work / f"report-{target}.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


def top1(path: Path) -> list[float]:
    """conv1..conv4 top-1 of a linear probe's results.json."""
    layers = json.loads(path.read_text())["layers"]
    return [layers[f"conv{i}"]["top1"] for i in range(1, 5)]


def table3_part(dataset: str) -> PaperPart:
    from probe.paper import paper_parts

    return next(p for p in paper_parts() if p.table_id == "table3" and p.dataset == dataset)


def gains_section(work: Path, results: list[Path], data: str = "cifar10:") -> list[str]:
    """The paper's central claim, checked: each single-image model's gain over its like-for-like random baseline
    (leaky ReLU for MonoGAN's critic, ReLU otherwise), against the paper's MonoGAN-over-random gain. Models trained
    on a real set are left to the twins table: the claim is about one image."""
    from train.data.real_sets import real_set_spec

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


