"""`make demo`: the paper's finding on this machine, in minutes: one image, heavy augmentation, and a network whose
first layers beat random ones.

    python experiments/demo.py [--seed N] [--work runs/demo] [--data KIND:PATH] [--src IMAGE]

1. render:  one image (Image B of the paper, `../shared/data/paper-images/animals.png`, where that folder is present;
            else an embedded photograph) expanded into patches of 32 px by the paper's augmentation, and a preview
            sheet of them;
2. train:   RotNet on those patches, with the short schedule measured for the demo (bench/results/demo.md);
3. probe:   linear probes on conv1 and conv2 of the trained encoder and of its own random initialisation (the same
            seed), on a seeded CIFAR-10 subset with a shortened protocol (PRESETS below; bench/results/demo.md);
4. picture: the learned conv1 filters beside the random ones, the preview and the probe numbers with their gains,
            in WORK/demo.png, and a one-line finding made of the run's own numbers (also in WORK/finding.txt).

The stages are the reproductions' (experiments/stage.py): each is skipped when its outputs are complete, so a
second run takes seconds, and after Ctrl-C the same command continues (training from its last checkpoint). WORK is
runs/demo/seed-N, one folder per seed (`bench/demo_seeds.py` runs several and tabulates the spread).
Probe data, in this order: --data (or $DEMO_DATA) as KIND:PATH; the shared CIFAR-10 JPEG copy in
../shared/data/cifar10-jpg; CIFAR-10 downloaded by torchvision (checksums verified) into the user cache. Without any
of them the probes are skipped and the picture shows the filters.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import ToolkitError
from common.fileio import atomic_write_bytes, atomic_write_text
from experiments.commands import probe_stage, render_stage
from experiments.stage import (
    BIN,
    ROOT,
    SHARED,
    Interrupted,
    Stage,
    StageFailed,
    finished_record,
    git_commit,
    ran_before,
    run_stage,
)
from experiments.tool_options import PresetError, check_stages
from pipeline.preview import contact_sheet
from train.data.archive import default_cache_dir

if TYPE_CHECKING:
    import numpy as np

METHOD = "rotnet"
METHOD_NAMES = {"rotnet": "RotNet", "monogan": "MonoGAN", "deepcluster": "DeepCluster", "bigan": "BiGAN"}
LAYERS = ("conv1", "conv2")
DATA_NAMES = {"cifar10": "CIFAR-10", "cifar10-jpg": "CIFAR-10 (JPEG copy)", "cifar100": "CIFAR-100"}
# The baseline: train seeds the encoder first (train/run/loop.py, train/methods/base.py), so with the same seed this is
# the trained encoder's own initialisation (tests/experiments/test_demo.py checks it).
RANDOM = "random:cifar"
# The schedules. `demo` was chosen by measurement on the 2-core CPU (bench/results/demo.md): RotNet gave the largest
# gains per CPU-second of the candidates (MonoGAN's steps cost 2.4x as much), batch 32 a little more per image than
# 64; SGD lr 0.1 divided by 5 for the last quarter; the trainer's default precision (bf16 autocast where the CPU has
# it natively, fp32 elsewhere: an earlier machine without it ran `--amp` 20x slower).
# 448 steps, not 600: the 600-step schedule took 8 min 29 s from an empty folder on the quiet machine, over the
# 8-minute limit; at 448 the gains over random across seeds 0-2 were conv1 +2.0 to +2.3, conv2 +3.5 to +5.5 (at 600:
# +2.3 to +3.6 and +4.9 to +5.8), still above every spread across seeds (at most 2.1).
# The probe protocol is the paper's (BatchNorm + linear on frozen features, SGD momentum 0.9, batch 192, lr 0.01
# divided by 5 at milestones) shortened: conv1 and conv2 only, a seeded 25,000 of the 50,000 training images and
# 5,000 of the 10,000 test images, 10 epochs instead of 36 with the milestones moved to epochs 3, 6 and 8. With
# 10,000 training images conv1's gain (+1.2 on seed 2) was within the spread across seeds; 25,000 widen it
# (+3.6 on seed 2) for about 100 CPU-seconds per probe instead of 45 (bench/results/demo.md).
PRESETS: dict[str, dict] = {
    "demo": {
        "n_patches": 3600,  # 112 steps per epoch at batch 32: 448 steps, each patch seen 4 times
        "train": ["--epochs", "4", "--milestones", "3", "--batch-size", "32", "--head-dim", "1024",
                  "--workers", "1"],
        "probe": ["--layers", ",".join(LAYERS), "--limit-train", "25000", "--limit-test", "5000",
                  "--epochs", "10", "--milestones", "3,6,8"],
    },
    # For the test suite only: the same stages in seconds; its numbers mean nothing. Enough steps after the first
    # checkpoint for the test to interrupt the training in the middle.
    "tiny": {
        "n_patches": 96,
        "train": ["--max-steps", "8", "--batch-size", "8", "--head-dim", "32", "--workers", "0",
                  "--ckpt-every", "2"],
        "probe": ["--layers", ",".join(LAYERS), "--epochs", "1", "--batch-size", "16", "--workers", "0"],
    },
}


def default_source(shared: Path) -> tuple[Path, str]:
    """Image B of the paper where the shared folder is present, else an embedded photograph; and which it is."""
    image_b = shared / "paper-images" / "animals.png"
    if image_b.is_file():
        return image_b, "Image B of the paper"
    from pipeline.sources import default_pool

    return default_pool()[0], f"an embedded photograph: {image_b.parent} is not here"


def locate_data(explicit: str | None, shared: Path, download: bool = True) -> tuple[str | None, str]:
    """The probe data as KIND:PATH and where it comes from; (None, a line saying how to point at a copy) if none."""
    if explicit:
        return explicit, "as given"
    shared = shared / "cifar10-jpg"
    if (shared / "train.tar.gz").is_file() and (shared / "test.tar.gz").is_file() or (shared / "train").is_dir():
        return f"cifar10-jpg:{shared}", "the shared CIFAR-10 JPEG copy"
    if download:
        try:
            return f"cifar10:{download_cifar10(default_cache_dir().parent / 'cifar10')}", "torchvision's CIFAR-10"
        except (OSError, RuntimeError) as e:  # offline, refused, or a download that failed its checksum
            why = f"the CIFAR-10 download failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    else:
        why = "no download was allowed"
    return None, (f"no CIFAR-10 here ({shared} is missing and {why}): set DEMO_DATA=KIND:PATH (e.g. "
                  f"DEMO_DATA=cifar10:~/data/cifar-10-batches-py) to probe the filters; showing them unprobed")


def download_cifar10(root: Path) -> Path:
    """CIFAR-10's python pickles in `root`, downloaded and checked by torchvision on first use (its MD5 sums of the
    archive and of every batch file); a copy already there is checked and kept."""
    from torchvision.datasets import CIFAR10

    root.mkdir(parents=True, exist_ok=True)
    CIFAR10(str(root), train=True, download=True)
    return root / CIFAR10.base_folder


def demo_stages(work: Path, preset: dict, src: Path, seed: int, data: str | None, device: str) -> list[Stage]:
    """render, train, and (with data) the two probes; the picture is drawn in this process after them."""
    shards, run = work / "shards", work / "run"
    render = render_stage(shards, src, preset["n_patches"], scale=True, rotate=True, jitter=True)
    render.name, render.command = "render", [*render.command, "--seed", str(seed)]
    train = Stage(f"train-{METHOD}", [str(BIN / "train"), METHOD, str(shards), "--arch", "cifar", "--out", str(run),
                                      "--device", device, "--seed", str(seed), *preset["train"]],
                  [run / "encoder.pt"], run_dir=run, inputs=[shards / "manifest.json"])
    if data is None:
        return [render, train]
    probe = {**preset, "probe": [*preset["probe"], "--seed", str(seed)]}
    return [render, train, probe_stage(work, METHOD, str(run / "encoder.pt"), probe, data, device),
            probe_stage(work, "random", RANDOM, probe, data, device)]


def check_data(data: str) -> None:
    """Open the probe data before any stage: a wrong DEMO_DATA is then one line up front, and the shared JPEG copy is
    unpacked into the user cache here (once, about half a minute; the probes find it there by content), so that the
    probe stages time only themselves."""
    from probe.datasets import open_data

    print(f"[data] opening {data} (a JPEG copy is unpacked into the user cache on first use)", flush=True)
    open_data(data)


def top1(result: Path) -> dict[str, float]:
    layers = json.loads(result.read_text())["layers"]
    return {name: layers[name]["top1"] for name in LAYERS}


def summarize(work: Path, src: Path, data: str | None, records: dict[str, dict]) -> dict:
    """Everything the picture and the finding say, read from the run's own files."""
    config = json.loads((work / "run" / "config.json").read_text())
    summary = {"method": config["method"], "steps": config["total_steps"], "patches": config["num_samples"],
               "source": src.name, "train_s": records[f"train-{METHOD}"]["wall_s"], "data": data,
               "stage_s": {name: r["wall_s"] for name, r in records.items()},
               "stage_cpu_s": {name: r["cpu_s"] for name, r in records.items() if "cpu_s" in r},
               "commit": git_commit()}
    trained, random = work / "probes" / METHOD / "results.json", work / "probes" / "random" / "results.json"
    if data is not None and trained.exists() and random.exists():
        used = json.loads(trained.read_text())["data"]
        summary.update(dataset=DATA_NAMES.get(used["kind"], used["kind"]),
                       train_images=used.get("train_used", used["train_size"]),
                       test_images=used.get("test_used", used["test_size"]),
                       trained=top1(trained), random=top1(random))
        summary["gain"] = {name: round(summary["trained"][name] - summary["random"][name], 2) for name in LAYERS}
    return summary


def finding(summary: dict, picture: Path, no_data: str) -> str:
    what = (f"{METHOD_NAMES.get(summary['method'], summary['method'])} trained for {summary['steps']:,} steps "
            f"({summary['train_s'] / 60:.1f} min) on {summary['patches']:,} patches of one image ({summary['source']})")
    if "gain" not in summary:
        return f"finding: {what}; its conv1 filters beside random ones: {picture} (not probed: {no_data})"
    beats = "beats" if min(summary["gain"].values()) > 0 else "does not beat"
    layers = ", ".join(f"{name} {summary['trained'][name]:.1f}% vs {summary['random'][name]:.1f}% "
                       f"({summary['gain'][name]:+.1f})" for name in LAYERS)
    return (f"finding: {what} {beats} its random initialisation in linear probes on {summary['dataset']} "
            f"({summary['train_images']:,} train / {summary['test_images']:,} test images): {layers}; "
            f"picture: {picture}")


def conv1_filters(spec: str, seed: int) -> np.ndarray:
    """The picture `probe filters` draws of an encoder's conv1, as an array."""
    from probe.encoders import open_encoder
    from probe.filters import filter_grid, first_layer_weight

    return filter_grid(first_layer_weight(open_encoder(spec, seed=seed).module), scale=6)


def draw_picture(work: Path, summary: dict, seed: int, no_data: str) -> Path:
    """One PNG: learned and random conv1 filters side by side, a preview sheet of the training patches (also
    written alone as WORK/preview.png), and the probe numbers with their gains."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = METHOD_NAMES.get(summary["method"], summary["method"])
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), gridspec_kw={"height_ratios": [1, 1.15]})
    panels = [(axes[0, 0], conv1_filters(str(work / "run" / "encoder.pt"), seed),
               f"conv1 filters of {name}, {summary['steps']:,} steps"),
              (axes[0, 1], conv1_filters(RANDOM, seed), f"conv1 filters at random initialisation (seed {seed})"),
              (axes[1, 0], plt.imread(contact_sheet(work / "shards", work / "preview.png", seed=seed)),
               f"training patches: {summary['patches']:,} from {summary['source']}")]
    for ax, image, title in panels:
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    bars = axes[1, 1]
    if "gain" in summary:
        x = range(len(LAYERS))
        for offset, key, colour, label in ((-0.2, "random", "0.65", "random init."), (0.2, "trained", "C0", name)):
            values = [summary[key][layer] for layer in LAYERS]
            bars.bar([i + offset for i in x], values, width=0.4, color=colour, label=label)
            for i, value in zip(x, values, strict=True):
                bars.text(i + offset, value + 0.5, f"{value:.1f}", ha="center", fontsize=9)
        for i, layer in zip(x, LAYERS, strict=True):
            top = max(summary["trained"][layer], summary["random"][layer])
            bars.text(i, top + 4, f"{summary['gain'][layer]:+.1f} points", ha="center", fontsize=11, weight="bold")
        bars.set_xticks(list(x), LAYERS)
        bars.set_ylim(0, max(max(summary["trained"].values()), max(summary["random"].values())) + 10)
        bars.set_ylabel("top-1 (%)")
        bars.set_title(f"linear probes on {summary['dataset']} ({summary['train_images']:,} train / "
                       f"{summary['test_images']:,} test images)", fontsize=10)
        bars.legend(loc="lower right", fontsize=10)
    else:
        bars.axis("off")
        bars.text(0.5, 0.5, "not probed:\n" + no_data.replace(": ", ":\n", 1), ha="center", va="center",
                  wrap=True, fontsize=9)
    fig.suptitle(f"What {name} learns from one image ({summary['source']}) in {summary['train_s'] / 60:.1f} min of "
                 f"training on this machine (commit {summary['commit']})", fontsize=12)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    picture = work / "demo.png"
    atomic_write_bytes(picture, buffer.getvalue())
    return picture


def children_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process's finished children and their descendants."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_stages(stages: list[Stage], records_dir: Path) -> tuple[dict[str, dict], set[str]]:
    """Each stage's record (with `cpu_s`, the CPU time of its process tree, where it ran now), and the names of
    those that were reused. CPU time shows what a stage costs whatever else the machine is doing: on an idle machine
    with 2 cores its wall time is about half of it for the multi-threaded stages."""
    records, reused = {}, set()
    for stage in stages:
        started, cpu = time.time(), children_cpu_s()
        try:
            records[stage.name] = run_stage(stage, records_dir, None)
        except KeyboardInterrupt:  # before the stage's process was started (or after it ended): still this stage
            raise Interrupted(stage.name) from None
        if (records_dir / f"{stage.name}.json").stat().st_mtime < started:
            reused.add(stage.name)
        else:
            records[stage.name] = {**records[stage.name], "cpu_s": round(children_cpu_s() - cpu, 1)}
    return records, reused


def print_times(records: dict[str, dict], reused: set[str], elapsed: float) -> None:
    parts = [f"{name} {r['wall_s']:.0f} s" + (" (reused)" if name in reused else
                                             f" (CPU {r['cpu_s']:.0f} s)" if "cpu_s" in r else "")
             for name, r in records.items()]
    total = sum(r["wall_s"] for r in records.values())
    print(f"stage times: {', '.join(parts)}; {total / 60:.1f} min in all, {elapsed:.0f} s in this run", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="seeds the render, the training, the random encoder and "
                                                        "the probes; each seed has its own folder")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "demo", help="the run goes to WORK/seed-N")
    ap.add_argument("--src", type=Path, default=None, help="the one image (default: Image B, else embedded)")
    ap.add_argument("--data", default=os.environ.get("DEMO_DATA") or None,
                    help="probe data as KIND:PATH (default: $DEMO_DATA, else the shared copy, else a download)")
    ap.add_argument("--no-download", action="store_true", help="never download CIFAR-10")
    ap.add_argument("--shared", type=Path, default=SHARED, help="where the shared data folder is looked for "
                                                               "(paper-images/, cifar10-jpg/)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    src, which = (args.src, "as given") if args.src else default_source(args.shared)
    if not src.is_file():
        raise SystemExit(f"{src}: source image not found (pass --src)")
    work, start = args.work / f"seed-{args.seed}", time.time()
    print(f"[demo] one image: {src} ({which}); work folder {work}", flush=True)
    data, where = locate_data(args.data, args.shared, download=not args.no_download)
    print(f"[demo] probe data: {data} ({where})" if data else f"[demo] {where}", flush=True)
    try:
        stages = demo_stages(work, PRESETS[args.preset], src, args.seed, data, args.device)
        check_stages([s for s in stages if not ran_before(s, work / "stages")], args.preset)
        if any(s.name.startswith("probe-") and finished_record(s, work / "stages") is None for s in stages):
            check_data(data)
        records, reused = run_stages(stages, work / "stages")
    except ToolkitError as e:  # data that probe cannot open
        raise SystemExit(f"probe data {data}: {e}") from None
    except (PresetError, StageFailed) as e:
        raise SystemExit(f"demo: {e}" if isinstance(e, PresetError) else str(e)) from None
    except (Interrupted, KeyboardInterrupt) as e:
        stage = f" during {e}" if isinstance(e, Interrupted) else ""
        print(f"\ninterrupted{stage}; run `make demo` (or this command) again to continue", flush=True)
        sys.exit(130)
    print("[picture] the filters, the preview and the probe numbers", flush=True)
    drawn = time.time()
    summary = summarize(work, src, data, records)
    picture = draw_picture(work, summary, args.seed, where)
    records["picture"] = {"wall_s": round(time.time() - drawn, 1)}
    summary["stage_s"]["picture"] = records["picture"]["wall_s"]
    summary["this_run_s"] = round(time.time() - start, 1)
    line = finding(summary, picture, where)
    atomic_write_text(work / "finding.txt", line + "\n")
    atomic_write_text(work / "demo.json", json.dumps({**summary, "finding": line, "load_average": os.getloadavg()},
                                                     indent=1) + "\n")
    print_times(records, reused, time.time() - start)
    print(line, flush=True)


if __name__ == "__main__":
    main()
