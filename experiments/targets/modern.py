"""`reproduce modern`: the paper's question asked of today's methods (issue 21).

    python -m experiments modern [--preset quick|full|smoke] [--work runs/reproduce-modern]
    python experiments/reproduce.py modern [...]   (the same)

SimCLR, MoCo v2, BYOL and DINO train a ResNet-18 with the CIFAR stem (3x3/1 convolution, no max-pool) twice each:
(a) on Image B expanded into a CIFAR-sized set by the paper's augmentation (the same render as `reproduce cifar10`),
(b) on all of CIFAR-10's training images. Beside them, the same ResNet-18 trained with labels on CIFAR-10 and its
random initialisation. Every encoder is probed by `probe linear` on CIFAR-10 at every tap (stem, layer1..layer4;
docs/architecture.md says how each is pooled). The report (WORK/report-modern.md) tables top-1 per tap per row and
what one image gives against the full set per method, and draws one plot (WORK/report-modern.png): every row's
per-tap curve, in absolute top-1 and relative to the supervised encoder, as the paper's Figure 6.

The stages are experiments/stage.py's (resumable, skipped when complete, Ctrl-C clean, `--time-limit`,
`--stages`, `--report-only`). The stage names carry the method and the training set (`train-simclr-imageB`,
`probe-simclr-cifar10`, `train-supervised-resnet18`...), so this target may share a --work folder with `cifar10`;
its Image B render is then the same stage. With its own folder, a complete render of the same command in the
sibling `reproduce-cifar10` folder is linked rather than made again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from common.fileio import atomic_write_text
from experiments.commands import probe_stage, render_stage, supervised_data, workers_option
from experiments.registry import Target, register
from experiments.report import report_header
from experiments.stage import BIN, Stage, as_built, portable_command

if TYPE_CHECKING:
    from probe.report import TapCurve

TAPS = ("stem", "layer1", "layer2", "layer3", "layer4")
METHOD_NAMES = {"simclr": "SimCLR", "mocov2": "MoCo v2", "byol": "BYOL", "dino": "DINO",
                "supervised": "supervised", "random": "random init."}
TRAIN_SETS = {"imageB": "Image B", "cifar10": "CIFAR-10"}
SHARDS = "cifar-B-all"  # the name `reproduce cifar10` renders Image B under: one render for both targets

# What each preset changes; everything else is the tools' defaults (each method's original small-data settings).
# `epochs` is per training set: the Image B set and CIFAR-10 get the same number of optimisation steps, so the
# comparison is one image against the full set at equal compute, not at equal epochs.
PRESETS: dict[str, dict] = {
    # One 2-core CPU, at most about 3 hours. Sized twice (bench/results/modern.md): first from the real command's
    # steps timed on a machine at load 6-10 (CPU seconds per step at batch 128: SimCLR 4.1, BYOL 5.4, DINO 10.3,
    # MoCo v2 4.9), which predicted 3.4 h without MoCo v2; then from each method's step alone on one thread
    # (bench/step_cost.py: SimCLR 1.35-1.57, MoCo v2 1.03-1.13, BYOL 2.37-2.55, DINO 3.79-4.69), which showed the
    # first figures to be mostly two threads waiting on a loaded machine: the four methods' 8 runs then cost about
    # 7,600 CPU-s, so MoCo v2 fits and is in. The measured run's stage times are in bench/results/modern-quick.md.
    # - Width 16 (channels 16/32/64/128): width 32 costs about 2x as much per image here and width 64 6-8x
    #   (forward + backward at 32 px).
    # - Steps: one epoch of CIFAR-10 at batch 128 is 390 steps (the floor: epochs are whole, and the schedules span
    #   them); Image B gets the same 390 steps (5 epochs of its 10,000 patches), so both rows see 50,000 samples.
    # - Supervised: one epoch, SGD lr 0.1, a linear classifier on pooled layer4.
    # - Probes: 10,000 training / 5,000 test images of CIFAR-10, 10 epochs (milestones 3, 6, 8: the demo's
    #   shortened protocol), 10 of them. The full protocol would cost about 3,400 s per probe at this width.
    "quick": {
        "n_patches": 10_000,  # as `reproduce cifar10` quick: the same render
        "arch": "resnet18-cifar-w16",
        "methods": ("simclr", "mocov2", "byol", "dino"),
        "batch_size": 128,
        "epochs": {"imageB": 5, "cifar10": 1},
        "train": {"simclr": [], "mocov2": [], "byol": [], "dino": []},
        "supervised": ["--epochs", "1", "--batch-size", "128", "--lr", "0.1", "--head-dim", "0"],
        "workers": 2,
        "probe": ["--limit-train", "10000", "--limit-test", "5000", "--epochs", "10", "--milestones", "3,6,8"],
    },
    # One GPU: 200 epochs per self-supervised run on either set (the methods' defaults here; the originals' CIFAR
    # schedules are longer, up to 800-1,000 epochs, which does not fit 8 runs on one GPU), at each method's default
    # batch (256) and options, DINO with its 6 local crops. 50,000 patches: Image B has as many images per epoch as
    # CIFAR-10, so equal epochs are equal steps. The supervised ResNet-18: the usual CIFAR recipe (SGD lr 0.1, batch
    # 128, 200 epochs, /10 at 100 and 150, a linear classifier on the pooled layer4). Probes: the full protocol.
    "full": {
        "n_patches": 50_000,
        "arch": "resnet18-cifar",
        "methods": ("simclr", "mocov2", "byol", "dino"),
        "batch_size": 256,
        "epochs": {"imageB": 200, "cifar10": 200},
        "train": {"simclr": [], "mocov2": [], "byol": [], "dino": []},
        "supervised": ["--epochs", "200", "--batch-size", "128", "--lr", "0.1", "--milestones", "100,150",
                       "--head-dim", "0"],
        "probe": [],
    },
    # For the test suite only: every stage in seconds on toy data; its numbers mean nothing.
    "smoke": {
        "n_patches": 128,
        "arch": "resnet18-cifar-w16",
        "methods": ("simclr", "mocov2", "byol", "dino"),
        "batch_size": 16,
        "max_steps": 2,
        "train": {"simclr": [], "mocov2": [], "byol": [], "dino": []},
        "supervised": ["--max-steps", "2", "--batch-size", "16", "--head-dim", "0"],
        "workers": 0,
        "probe": ["--epochs", "1", "--batch-size", "64", "--workers", "0"],
    },
}

PRESET_NOTES = {
    "quick": "CPU: ResNet-18 (CIFAR stem) at width 16 (channels 16/32/64/128); SimCLR, MoCo v2, BYOL and "
             "DINO at batch 128 for 390 steps on Image B (10,000 patches, 5 epochs) and on CIFAR-10 (1 epoch); "
             "supervised 1 epoch; probes on 10,000 / 5,000 images for 10 epochs",
    "full": "one GPU: ResNet-18 (CIFAR stem) at width 64; SimCLR, MoCo v2, BYOL and DINO 200 epochs at batch 256 on "
            "Image B (50,000 patches) and on CIFAR-10; supervised 200 epochs; the full 36-epoch probes",
    "smoke": "test-suite toy run: width 16, 2 steps per training, 1-epoch probes; its numbers mean nothing",
}


def arch_options(preset: dict) -> list[str]:
    return ["--arch", preset["arch"]]


def schedule_options(preset: dict, method: str, train_set: str) -> list[str]:
    """How long a self-supervised run is: the preset's epochs on that set, with the method's schedules compressed
    to it; or (smoke) a fixed step count."""
    if "max_steps" in preset:
        return ["--max-steps", str(preset["max_steps"]), "--ckpt-every", "1"]
    epochs = preset["epochs"][train_set]
    return ["--epochs", str(epochs), *compressed_schedule(method, epochs)]


def compressed_schedule(method: str, epochs: int) -> list[str]:
    """The method's schedule lengths given in epochs (learning-rate warm-up, DINO's teacher-temperature warm-up and
    frozen last layer) scaled from its default run length to `epochs`, so that a short run keeps the shape of the
    original schedule: SimCLR's 10 warm-up epochs of 200 are 5% of any run, not all of a 3-epoch one."""
    from dataclasses import fields

    from train.methods import get_method

    cls = get_method(method)
    options = []
    for f in fields(cls.Options):
        if f.name.endswith("_epochs") and f.default and epochs != cls.default_epochs:
            options += [f"--{f.name.replace('_', '-')}", f"{f.default * epochs / cls.default_epochs:g}"]
    return options


def image_b_shards(work: Path, render: Stage) -> Path:
    """Where the Image B set lives: WORK/shards/cifar-B-all, linked to the sibling `reproduce-cifar10` folder's set
    when that one is complete and was made by the same command (a symbolic link, so the training commands name the
    same folder whichever it is; a link whose target has gone is removed and the set rendered here)."""
    own = work / "shards" / SHARDS
    if own.is_symlink() and not own.exists():
        own.unlink()
    if own.exists():
        return own
    sibling_work = work.parent / "reproduce-cifar10"
    sibling = sibling_work / "shards" / SHARDS
    record = sibling_work / "stages" / f"{render.name}.json"
    if sibling.resolve() != own.resolve() and (sibling / "manifest.json").exists() and record.exists():
        ran = as_built(json.loads(record.read_text()), sibling_work)
        if command_without_out(ran) == command_without_out(portable_command(render.command, work)):
            own.parent.mkdir(parents=True, exist_ok=True)
            own.symlink_to(sibling.resolve(), target_is_directory=True)
    return own


def command_without_out(command: list[str]) -> list[str]:
    at = command.index("--out")
    return command[:at] + command[at + 2:]


def modern_stages(work: Path, preset: dict, src: Path, data: str, device: str) -> tuple[list[Stage], list]:
    """Every stage of the target, in order, and the probes' results files with their row names."""
    shards = work / "shards" / SHARDS
    render = render_stage(shards, src, preset["n_patches"], scale=True, rotate=True, jitter=True)
    image_b_shards(work, render)
    stages, reports = [render], []
    train_data = {"imageB": str(shards), "cifar10": data}
    for method in preset["methods"]:
        for train_set, where in train_data.items():
            name = f"{method}-{train_set}"
            run = work / "runs" / name
            inputs = [shards / "manifest.json"] if train_set == "imageB" else []
            stages.append(Stage(f"train-{name}", [
                str(BIN / "train"), method, where, *arch_options(preset), "--out", str(run), "--device", device,
                "--batch-size", str(preset["batch_size"]), *schedule_options(preset, method, train_set),
                *workers_option(preset), *preset["train"][method]], [run / "encoder.pt"], run_dir=run,
                inputs=inputs))
            stages.append(probe_stage(work, name, str(run / "encoder.pt"), preset, data, device))
            reports.append((work / "probes" / name / "results.json", row_label(method, train_set)))
    stages += baselines(work, preset, data, device)
    reports += [(work / "probes" / "supervised-resnet18" / "results.json", row_label("supervised", "cifar10")),
                (work / "probes" / "random-resnet18" / "results.json", row_label("random", None))]
    return stages, reports


def baselines(work: Path, preset: dict, data: str, device: str) -> list[Stage]:
    """The supervised ResNet-18 on CIFAR-10 (its JPEG copy through the extracted image folders, as `reproduce
    cifar10`'s supervised row) and the random initialisation of the same architecture and width."""
    sup_data = supervised_data(data)
    run = work / "runs" / "supervised-resnet18"
    sup = Stage("train-supervised-resnet18", [
        str(BIN / "train"), "supervised", sup_data, *arch_options(preset), "--out", str(run), "--device", device,
        *workers_option(preset), *preset["supervised"]], [run / "encoder.pt"], run_dir=run)
    return [sup, probe_stage(work, "supervised-resnet18", str(run / "encoder.pt"), preset, data, device),
            probe_stage(work, "random-resnet18", f"random:{preset['arch']}", preset, data, device)]


def row_label(method: str, train_set: str | None) -> str:
    name = METHOD_NAMES.get(method, method)
    return name if train_set is None else f"{name} on {TRAIN_SETS[train_set]}"


def top1_per_tap(path: Path) -> dict[str, float]:
    from probe.results import read_results

    return {tap: row["top1"] for tap, row in read_results(path)["layers"].items()}


def write_report(work: Path, target: str, preset_name: str, reports: list, stages: list[dict], device: str,
                 data: str, missing: list[str] = ()) -> Path:
    """WORK/report-modern.md (stages, the top-1 table, one image against the full set) and WORK/report-modern.png
    (every row's per-tap curve, absolute and relative to supervised); the registry's Report signature."""
    rows = {label: top1_per_tap(path) for path, label in reports if path.exists()}
    picture = plot_rows(rows, work / f"report-{target}.png", preset_name)
    title = "Today's methods on one image against CIFAR-10: per-tap linear probes (ResNet-18, CIFAR stem)"
    lines = [*report_header(title, preset_name, PRESET_NOTES[preset_name], device,
                            "probe data and the CIFAR-10 training set", data, stages, missing), "",
             "## Top-1 (%) of a linear probe on CIFAR-10, per tap", "",
             "| encoder | " + " | ".join(TAPS) + " |", "| --- |" + " ---: |" * len(TAPS),
             *[f"| {label} | " + " | ".join(cell(values.get(tap)) for tap in TAPS) + " |"
               for label, values in rows.items()], "",
             *one_image_section(rows), f"![per-tap top-1, absolute and relative to supervised]({picture.name})", ""]
    out = work / f"report-{target}.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


def plot_rows(rows: dict[str, dict[str, float]], out: Path, preset_name: str) -> Path:
    """The report's plot of `rows` (label -> top-1 per tap): every row's per-tap curve, absolute and relative to
    supervised."""
    from probe.report import plot_tap_curves

    return plot_tap_curves([curve_of(label, values) for label, values in rows.items()], list(TAPS), out,
                           reference=row_label("supervised", "cifar10"),
                           title=f"Linear probes on CIFAR-10 per tap of ResNet-18 (preset {preset_name})")


def curve_of(label: str, values: dict[str, float]) -> TapCurve:
    """A row as a plot line: a method's two training sets in one colour, Image B solid, CIFAR-10 dashed."""
    from probe.report import TapCurve

    group, _, train_set = label.partition(" on ")
    colour = {METHOD_NAMES["supervised"]: "black", METHOD_NAMES["random"]: "0.55"}.get(group)
    return TapCurve(label, values, group, variant=1 if train_set == TRAIN_SETS["cifar10"] else 0, color=colour)


def one_image_section(rows: dict[str, dict[str, float]]) -> list[str]:
    """The paper's question per method: how far below the full set does one image land at each tap, and how far
    above random initialisation."""
    random = rows.get(row_label("random", None))
    lines = ["## One image against the full set (points)", "",
             "Per method, top-1 after training on Image B minus top-1 after training on CIFAR-10 (negative: the "
             "full set is better), and Image B's gain over the random initialisation.", "",
             "| method | measure | " + " | ".join(TAPS) + " |", "| --- | --- |" + " ---: |" * len(TAPS)]
    for method in METHOD_NAMES:
        single, full = rows.get(row_label(method, "imageB")), rows.get(row_label(method, "cifar10"))
        if single is None:  # not in this preset's methods, or a baseline (no Image B row)
            continue
        for measure, other in (("Image B - CIFAR-10", full), ("Image B - random", random)):
            if other is not None:
                lines.append(f"| {METHOD_NAMES[method]} | {measure} | "
                             + " | ".join(difference(single.get(tap), other.get(tap)) for tap in TAPS) + " |")
    return [*lines, ""]


def cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def difference(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a - b:+.1f}"


TARGET = register(Target("modern", modern_stages, write_report, PRESETS, work="reproduce-modern", order=40))
