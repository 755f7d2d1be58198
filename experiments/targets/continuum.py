"""`reproduce continuum`: the paper's Table 2 continuum at CIFAR scale (issue 33).

    python -m experiments continuum [--preset quick|full|smoke] [--work runs/reproduce-cifar10]

RotNet and DeepCluster (and MonoGAN in the full preset) trained on N source images expanded into sets of the same
number of 32 px patches: N = 1 (Images A, B and C, each its own row; Image B twice, with two seeds), N = 10 (two
seeds: the second picks another 10 images), N = 1,000 (all of the shared ImageNet sample) and N = full (all 50,000
CIFAR-10 training images, the real-data twins). Every encoder is probed on conv1..conv4 on CIFAR-10. The sources:
--src is Image B; Images A (ameyoko.jpg) and C (sf.png) lie beside it, and the ImageNet sample
(imagenet-sample-1000.tar, extracted once into WORK/sources) in the folder above (the layout of ../shared/data).
The N = 10 and N = 1,000 sets are picked from it by `pipeline render --n-src N --seed S`.

The stages are named as `reproduce cifar10`'s where the work is the same (render-cifar-B-all, train-rotnet,
probe-rotnet, train-rotnet-cifar10, the baselines...), so with the same --work (the default) those are shared.
The report (WORK/report-continuum.md, .png) is built from the probes' results.json files alone.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from experiments.commands import data_set_of, probe_folder, probe_stage, render_stage
from experiments.paper_cifar import PRESETS as PAPER_PRESETS
from experiments.paper_cifar import baselines, real_set_stages, train_and_probe
from experiments.registry import Target, register
from experiments.stage import Stage

METHODS = {"monogan": "MonoGAN", "rotnet": "RotNet", "deepcluster": "DeepCluster"}
IMAGE_FILES = {"A": "ameyoko.jpg", "C": "sf.png"}  # beside Image B (--src) in paper-images/
SAMPLE_TAR = "imagenet-sample-1000.tar"  # in the folder above paper-images/
CIFAR10_TRAIN = 50_000  # N = full: the CIFAR-10 training split
ONE_IMAGE = ("A", "B", "C")


@dataclass(frozen=True)
class Row:
    key: str
    kind: str  # "A", "B", "C" (one image), "deka", "kilo" (picked from the sample) or "full" (CIFAR-10 itself)
    seed: int  # seeds the pick of the sources, the patches and the training

    def shards(self) -> str:
        """The rendered set's folder name; Image B at seed 0 is `reproduce cifar10`'s set."""
        if self.kind in ONE_IMAGE:
            return f"cifar-{self.kind}-all" + (f"-seed{self.seed}" if self.seed else "")
        return f"cifar-{self.key}"

    def run(self, method: str) -> str:
        """The training run's name: Image B at seed 0 is `reproduce cifar10`'s run (the method's name)."""
        return method if self.key == "B" else f"{method}-{self.key}"


ROWS = {row.key: row for row in (Row("A", "A", 0), Row("B", "B", 0), Row("B-seed1", "B", 1), Row("C", "C", 0),
                                 Row("deka-seed0", "deka", 0), Row("deka-seed1", "deka", 1), Row("kilo", "kilo", 0),
                                 Row("full", "full", 0))}


def _preset(base: str, methods: tuple[str, ...], rows: tuple[str, ...], deepcluster_real: list[str],
            n_deka: int = 10, n_kilo: int = 1000) -> dict:
    """A continuum preset: the paper_cifar preset of the same name (so the shared stages have the same commands),
    with the methods, rows and N of the two picked sets, and DeepCluster's real-data schedule (cifar10 has none)."""
    preset = copy.deepcopy(PAPER_PRESETS[base])
    preset["train"]["deepcluster-real"] = deepcluster_real
    return {**preset, "methods": methods, "rows": rows, "n_deka": n_deka, "n_kilo": n_kilo}


# quick (one 2-core CPU), in bf16 (the default on a CPU with native bf16), measured 2026-12-05 on the quiet 2-core
# machine (bench/results/continuum-quick.md): the new stages of quick, beyond the 11 of cifar10's quick stages that
# it shares (train-rotnet, train-deepcluster, the real-data RotNet, the baselines), took 10,504 s, 2.9 h, within the
# issue's 4 h (in fp32, an estimated 5.7 h): the four renders 19 s, train-rotnet-{B-seed1,deka-seed0,deka-seed1,kilo}
# 1,174-1,392 s each (4,992 steps at about 4.2 steps/s), train-deepcluster-{B-seed1,deka-seed0,deka-seed1,kilo,
# cifar10} 770-804 s each (6,240 steps), the eleven 36-epoch probes 156-169 s each. Images A and C (about 4,700 s
# more: 4.2 h in all) and MonoGAN (about 2,100 s per row: 6,000 critic steps at about 2.9 steps/s) are in the full
# preset only.
QUICK_ROWS = ("B", "B-seed1", "deka-seed0", "deka-seed1", "kilo", "full")
PRESETS: dict[str, dict] = {
    # DeepCluster on all of CIFAR-10 (781 steps an epoch at batch 64) for the single-image row's 6,240 steps
    "quick": _preset("quick", ("rotnet", "deepcluster"), QUICK_ROWS,
                     ["--epochs", "8", "--max-steps", "6240", "--batch-size", "64", "--head-dim", "1024"]),
    # one GPU: every row and method; 50,000 patches and 50,000 images, so the same epochs are the same steps
    "full": _preset("full", tuple(METHODS), tuple(ROWS), ["--epochs", "100"]),
    # the test suite, in about a minute: RotNet alone, on toy sizes (12 photos in the toy sample: N = 1,000 is
    # "all"), every row but Images A and C (their render is Image B's with another file), random as the only
    # reference (each stage is a process start of seconds): 18 stages, 90 s on the shared 2-core machine at load 6
    # (106 s with 2 loader workers per training)
    # smoke: the second seed on the 10-photo rows only (the B-seed1 row is the same code path with N = 1)
    "smoke": {**_preset("smoke", ("rotnet",), ("B", "deka-seed0", "deka-seed1", "kilo", "full"),
                        ["--max-steps", "3", "--batch-size", "16", "--ckpt-every", "2", "--head-dim", "64"],
                        n_deka=10, n_kilo=12), "references": ("random",),
              "workers": 0},  # no loader processes: each would import torch again for 3 steps
}
PRESET_NOTES = {
    "quick": "CPU: RotNet and DeepCluster at the cifar10 quick rows' steps (4,992 and 6,240, batch 64, 1024-wide "
             "heads) on 10,000 patches of Image B (two seeds), of 10 ImageNet photos (two seeds: two picks) and "
             "of all 1,000, and on all of CIFAR-10; 36-epoch probes",
    "full": "one GPU: MonoGAN, RotNet and DeepCluster at the cifar10 full schedules on 50,000 patches of Images A, B "
            "(two seeds) and C, of 10 photos (two seeds) and of 1,000, and on all of CIFAR-10; 36-epoch probes",
    "smoke": "test-suite toy run: RotNet only, 256 patches, 3 steps, 1-epoch probes; its numbers mean nothing",
}


def sources(src: Path, work: Path, rows: tuple[str, ...]) -> dict[str, Path]:
    """Each source kind's path (A, B, C: files; sample: the extracted ImageNet sample's folder), located beside
    --src before any stage runs; a missing one is one line saying what to pass instead."""
    found = {"B": src}
    for kind, name in IMAGE_FILES.items():
        if kind in rows:
            found[kind] = _required(src.parent / name)
    if any(ROWS[key].kind in ("deka", "kilo") for key in rows):
        tar = _required(src.parent.parent / SAMPLE_TAR)
        found["sample"] = extract_sample(tar, work / "sources")
    return found


def _required(path: Path) -> Path:
    if not path.is_file():
        raise SystemExit(f"reproduce continuum: {path} not found; pass --src DIR/paper-images/animals.png where "
                         f"DIR holds paper-images/{{animals.png,{','.join(IMAGE_FILES.values())}}} and {SAMPLE_TAR} "
                         f"(the layout of ../shared/data)")
    return path


def extract_sample(tar: Path, into: Path) -> Path:
    """The sample extracted once into `into` (train.data.archive: a temporary folder renamed when complete, keyed by
    the archive's content; tarfile's "data" filter refuses links and paths out of the tree): the folder of images."""
    from common.errors import ToolkitError
    from train.data.archive import extracted

    try:
        folder = extracted([tar], into, name="imagenet-sample")
    except ToolkitError as e:
        raise SystemExit(f"reproduce continuum: {e}") from None
    inner = folder / tar.name.removesuffix(".tar")
    return inner if inner.is_dir() else folder


def continuum_stages(work: Path, preset: dict, src: Path, data: str, device: str) -> tuple[list[Stage], list]:
    """Every stage in order (each row's render, then each method's training and probe), the baselines, and the
    probes' results with their labels (METHOD/ROW, read back by the report)."""
    found = sources(src, work, preset["rows"])
    stages = []
    for key in preset["rows"]:
        row = ROWS[key]
        shards = work / "shards" / row.shards()
        if row.kind != "full":
            stages.append(row_render(row, shards, found, preset))
        for method in preset["methods"]:
            stages += row_training(row, method, shards, work, preset, data, device)
    if "supervised" in references(preset):
        stages += baselines(work, preset, data, device)  # cifar10's: supervised, random and random-leaky
    else:
        stages.append(probe_stage(work, "random", "random:cifar", preset, data, device))
    return stages, continuum_reports(work, preset, data)


def references(preset: dict) -> tuple[str, ...]:
    """The baselines the report draws: random, MonoGAN's leaky-ReLU random where MonoGAN is trained, supervised."""
    leaky = ("random-leaky",) if "monogan" in preset["methods"] else ()
    return preset.get("references", ("random", *leaky, "supervised"))


def row_render(row: Row, shards: Path, found: dict[str, Path], preset: dict) -> Stage:
    n = preset["n_patches"]
    if row.kind in ONE_IMAGE:  # Image B at seed 0 without --seed: cifar10's stage, command for command
        return render_stage(shards, found[row.kind], n, True, True, True, seed=row.seed or None)
    n_src = preset["n_deka"] if row.kind == "deka" else preset["n_kilo"]
    return render_stage(shards, found["sample"], n, True, True, True, n_src=n_src, seed=row.seed)


def row_training(row: Row, method: str, shards: Path, work: Path, preset: dict, data: str,
                 device: str) -> list[Stage]:
    """The method trained on the row's set and probed; a second seed trains with --seed as well."""
    if row.kind == "full":
        return real_set_stages(work, method, preset, data, device)
    if row.seed:
        preset = {**preset, "train": {**preset["train"], method: [*preset["train"][method], "--seed", str(row.seed)]}}
    return train_and_probe(work, method, shards, preset, data, device, run_name=row.run(method))


def run_name(row: Row, method: str, data: str) -> str:
    return f"{method}-{data_set_of(data)}" if row.kind == "full" else row.run(method)


def continuum_reports(work: Path, preset: dict, data: str) -> list[tuple[Path, str]]:
    """The results files the report reads, labelled METHOD/ROW (rows) or ref/NAME (the baselines)."""
    probes = probe_folder(work, data)
    reports = [(probes / run_name(ROWS[key], method, data) / "results.json", f"{method}/{key}")
               for method in preset["methods"] for key in preset["rows"]]
    return reports + [(probes / name / "results.json", f"ref/{name}") for name in references(preset)]


# ---- the report: from the probes' results.json files alone (the sheets of picked sources from the sets' manifests)
LAYERS = ("conv1", "conv2", "conv3", "conv4")
NOMINAL_N = {"A": 1, "B": 1, "C": 1, "deka": 10, "kilo": 1000, "full": CIFAR10_TRAIN}
REFERENCES = {"random": "random (ReLU)", "random-leaky": "random (leaky ReLU: MonoGAN's baseline)",
              "supervised": "supervised (CIFAR-10 labels)"}
SKIP_BAD_NOTE = ("A picked photo that cannot be used (unreadable, or shorter than render's --min-src-side) stops its "
                 "render with one line, as does a folder holding fewer images than N; `pipeline render --skip-bad` "
                 "replaces a bad pick with the next image of the seeded order (the N = 1,000 row then needs more "
                 "than 1,000 usable images in the folder).")


@dataclass
class Measured:
    n: int  # the number of source images, as its results.json records it
    top1: list[float]  # conv1..conv4


def read_measured(reports: list[tuple[Path, str]]) -> tuple[dict[str, dict[str, Measured]], dict[str, list[float]]]:
    """method -> row key -> its probe, and reference name -> conv1..conv4, from the results files that exist."""
    from probe.results import read_results

    rows: dict[str, dict[str, Measured]] = {}
    refs: dict[str, list[float]] = {}
    for path, label in reports:
        if not path.exists():
            continue
        result = read_results(path)
        top1 = [result["layers"][layer]["top1"] for layer in LAYERS]
        group, _, key = label.partition("/")
        if group == "ref":
            refs[key] = top1
            continue
        config = result["encoder"].get("config") or {}
        # N: the rendered set's sources (their hashes, which the encoder records), or the real set's images
        n_src = len((config.get("data_identity") or {}).get("sources") or [])
        full = config.get("num_samples") if ROWS[key].kind == "full" else None
        rows.setdefault(group, {})[key] = Measured(int(n_src or full or NOMINAL_N[ROWS[key].kind]), top1)
    return rows, refs


def row_label(key: str, n: int) -> str:
    row = ROWS[key]
    what = {"A": "Image A", "B": f"Image B, seed {row.seed}", "C": "Image C", "deka": f"deka, seed {row.seed}",
            "kilo": "kilo: the whole sample", "full": "all of CIFAR-10"}[row.kind]
    return f"N = {n:,} ({what})"


def method_table(method: str, rows: dict[str, Measured], refs: dict[str, list[float]]) -> list[str]:
    lines = [f"### {METHODS[method]}", "", "| source images | " + " | ".join(LAYERS) + " |",
             "| --- |" + " ---: |" * len(LAYERS)]
    lines += [f"| {row_label(key, m.n)} | " + " | ".join(f"{v:.1f}" for v in m.top1) + " |"
              for key, m in rows.items()]
    lines += [f"| *{REFERENCES[name]}* | " + " | ".join(f"{v:.1f}" for v in values) + " |"
              for name, values in refs.items()]
    return [*lines, ""]


# the points of a method's line: N = 1 is Image B (both seeds), N = 10 both picks; Images A and C are marks apart
LINE = (("B", "B-seed1"), ("deka-seed0", "deka-seed1"), ("kilo",), ("full",))


def spread_point(rows: dict[str, Measured], keys: tuple[str, ...], layer: int) -> tuple[int, float, float] | None:
    """(N, the mean over the seeds present, their range) at one layer, or None when none has finished."""
    values = [rows[k].top1[layer] for k in keys if k in rows]
    if not values:
        return None
    return rows[next(k for k in keys if k in rows)].n, sum(values) / len(values), max(values) - min(values)


def plot_continuum(rows: dict[str, dict[str, Measured]], refs: dict[str, list[float]], out: Path, title: str) -> Path:
    """Top-1 against N (log axis), a panel per layer, a line per method (error bars: the seeds' range), Images A and
    C as marks, the references as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.fileio import atomic_write_bytes
    from probe.report import LEGEND_FONT, PLOT_DPI

    fig, axes = plt.subplots(1, len(LAYERS), figsize=(4.2 * len(LAYERS), 4), squeeze=False)
    styles = {"random": ("0.55", "--"), "random-leaky": ("0.55", ":"), "supervised": ("black", "--")}
    for i, ax in enumerate(axes[0]):
        for j, (method, measured) in enumerate(rows.items()):
            colour = f"C{j}"
            points = [p for keys in LINE if (p := spread_point(measured, keys, i)) is not None]
            if points:
                ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] / 2 for p in points],
                            color=colour, marker="o", capsize=3, label=METHODS[method])
            for key, marker, offset in (("A", "^", 0.8), ("C", "s", 1.25)):
                if key in measured:
                    # set a little apart from N = 1 so the marks do not hide the line's point
                    ax.scatter([measured[key].n * offset], [measured[key].top1[i]], color=colour, marker=marker,
                               label=f"{METHODS[method]}, Image {key}")
        for name, values in refs.items():
            ax.axhline(values[i], color=styles[name][0], linestyle=styles[name][1], label=REFERENCES[name])
        ax.set_xscale("log")
        ax.set_title(LAYERS[i])
        ax.set_xlabel("N source images (log)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 (%), linear probe on CIFAR-10")
    # one legend for the four panels (a method keeps its colour C{j} in each), entries gathered from every panel so
    # that a series drawn only in some panels still has one; below the panels, at the size the other plots use
    entries = {label: handle for ax in axes[0] for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.suptitle(title)
    fig.tight_layout()
    fig.legend(list(entries.values()), list(entries), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4,
               fontsize=LEGEND_FONT, frameon=False)
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PLOT_DPI, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def fmt_seeds(rows: dict[str, Measured], keys: tuple[str, ...], layer: int) -> str:
    """A mean with its seeds beside it: `61.0 (seeds 60.5 / 61.5, spread 1.0)`, or the one value."""
    values = [rows[k].top1[layer] for k in keys if k in rows]
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.1f} (one seed)"
    return f"{mean:.1f} (seeds {' / '.join(f'{v:.1f}' for v in values)}, spread {max(values) - min(values):.1f})"


def questions(rows: dict[str, dict[str, Measured]]) -> list[str]:
    """The issue's two questions, answered per method from the measured numbers, with the seed spread beside."""
    lines = ["## The two questions, from these numbers", "",
             "1. Does conv1 at N = 1 (Image B, mean of its seeds) come within 2 points of N = full (or above it)?"]
    for method, measured in rows.items():
        one, full = spread_point(measured, LINE[0], 0), measured.get("full")
        if one is None or full is None:
            lines.append(f"   - {METHODS[method]}: not measured yet")
            continue
        diff = one[1] - full.top1[0]
        answer = "yes" if diff >= -2 else "no"
        seeds_agree = all(measured[k].top1[0] - full.top1[0] >= -2 for k in LINE[0] if k in measured)
        caveat = "" if seeds_agree == (answer == "yes") else "; the seeds disagree"
        lines.append(f"   - {METHODS[method]}: **{answer}**: N = 1 {fmt_seeds(measured, LINE[0], 0)} against "
                     f"N = full {full.top1[0]:.1f}, difference {diff:+.1f}{caveat}")
    lines += ["2. Does the gap to N = full at conv4 shrink as N grows (N = 1, 10, 1,000)?"]
    for method, measured in rows.items():
        full = measured.get("full")
        points = [(set(keys), spread_point(measured, keys, 3)) for keys in LINE[:3]]
        if full is None or any(p is None for _, p in points):
            lines.append(f"   - {METHODS[method]}: not measured yet")
            continue
        gaps = [full.top1[3] - p[1] for _, p in points]
        answer = "yes" if gaps[0] > gaps[1] > gaps[2] else "no"
        # a seed spread only where two seeds of the point have finished
        detail = ", ".join(f"N = {p[0]:,}: {gap:+.1f}"
                           + (f" (seed spread {p[2]:.1f})" if len(keys & measured.keys()) > 1 else "")
                           for (keys, p), gap in zip(points, gaps, strict=True))
        lines.append(f"   - {METHODS[method]}: **{answer}**: full minus N at conv4 is {detail}")
    return [*lines, "", "A difference smaller than the seed spread beside it is not told apart from seed noise.", ""]


def paper_section(methods: list[str]) -> list[str]:
    """Table 2's pattern in words, and its numbers as what they are: ImageNet (AlexNet, 224 px) numbers."""
    from probe.paper import paper_parts

    part = next(p for p in paper_parts() if p.table_id == "table2")
    names = {"monogan": "BiGAN", "rotnet": "RotNet", "deepcluster": "DeepCluster"}
    lines = ["## The paper's Table 2 pattern (ImageNet, not CIFAR-10)", "",
             "The paper trains BiGAN, RotNet and DeepCluster (AlexNet) on one image (Images A, B, C), on 10 "
             "(deka), on 1,000 (kilo) and on all 1,281,167 ImageNet images, and probes them on ImageNet. Its "
             "pattern: one image's conv1 and conv2 are as good as a million images' (within about 1.5 points, "
             "conv1 even above); more images help only the deeper layers (RotNet and DeepCluster improve from "
             "N = 1 to 1,000 at conv3 and conv4); BiGAN failed to converge at N = 10 and 1,000. The numbers "
             "below are **ImageNet numbers**, another data set, network and input size: read them for the "
             "pattern, never cell by cell against the CIFAR-10 tables above.", "",
             "| paper, ImageNet top-1 (%) | conv1 | conv2 | conv3 | conv4 |", "| --- | ---: | ---: | ---: | ---: |"]
    for method in methods:
        name = names[method]
        for row in part.rows:
            label = row.label
            if f"{name} mono" in label or f"{name} deka" in label or f"{name} kilo" in label or \
                    label.rstrip(" [‡]").endswith(f": {name}"):
                lines.append(f"| ImageNet: {label} | " + " | ".join(f"{v:.1f}" for v in row.values[:4]) + " |")
    return [*lines, ""]


def picked_sources(shards: Path) -> list[Path] | None:
    """The source files a rendered set was made from (its manifest's sources, paths as given), None if not made."""
    manifest = shards / "manifest.json"
    if not manifest.exists():
        return None
    return [Path(entry["path"]) for entry in json.loads(manifest.read_text())["sources"]]


def source_sheet(paths: list[Path], out: Path, tile: int = 128, cols: int = 5, gap: int = 2) -> Path:
    """The picked photos side by side (the paper's Figure 4), each fitted into a square tile on white, as `pipeline
    preview` draws a packed set's images."""
    import io

    from PIL import Image, ImageOps

    from common.fileio import atomic_write_bytes
    from pipeline.sources import open_rgb

    rows = -(-len(paths) // cols)
    sheet = Image.new("RGB", (cols * (tile + gap) + gap, rows * (tile + gap) + gap), (255, 255, 255))
    for n, path in enumerate(paths):
        r, c = divmod(n, cols)
        image = ImageOps.pad(open_rgb(path), (tile, tile), Image.BILINEAR, color=(255, 255, 255))
        sheet.paste(image, (gap + c * (tile + gap), gap + r * (tile + gap)))
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG")
    atomic_write_bytes(out, buffer.getvalue())
    return out


def sources_section(work: Path, target: str, row_keys: list[str]) -> list[str]:
    """Per picked set: the files (for N = 10 with a sheet of the photos and one of its patches), and how a bad
    source is refused."""
    from pipeline.preview import contact_sheet

    lines = ["## The picked sources", "",
             "The N = 10 and N = 1,000 sets are picked from the ImageNet sample by `pipeline render --n-src N "
             "--seed S` (a permutation seeded by S; N = 1,000 takes every image).", ""]
    for key in row_keys:
        row = ROWS[key]
        if row.kind not in ("deka", "kilo"):
            continue
        shards = work / "shards" / row.shards()
        picked = picked_sources(shards)
        if picked is None:
            lines += [f"- {row_label(key, NOMINAL_N[row.kind])}: not rendered yet", ""]
            continue
        if row.kind == "kilo":
            lines += [f"- {row_label(key, len(picked))}: all {len(picked):,} files of the sample", ""]
            continue
        sheet = source_sheet(picked, work / f"report-{target}-{key}.png")
        patches = contact_sheet(shards, work / f"report-{target}-{key}-patches.png", rows=4, cols=10)
        lines += [f"- {row_label(key, len(picked))}: " + ", ".join(f"`{p.name}`" for p in picked), "",
                  f"  ![the {len(picked)} photos]({sheet.name}) ![40 of its patches]({patches.name})", ""]
    return [*lines, SKIP_BAD_NOTE, ""]


def write_report(work: Path, target: str, preset_name: str, reports: list, stages: list[dict], device: str,
                 data: str, missing: list[str] = ()) -> Path:
    """WORK/report-continuum.md and .png: a table per method, the plot, the two questions, the paper's pattern and
    the picked sources; the registry's Report signature."""
    from common.fileio import atomic_write_text
    from experiments.report import report_header

    rows, refs = read_measured(reports)
    preset = PRESETS[preset_name]
    title = f"Top-1 on CIFAR-10 against the number of source images N (preset {preset_name})"
    picture = plot_continuum(rows, refs, work / f"report-{target}.png", title)
    lines = [*report_header("The paper's Table 2 continuum at CIFAR scale: N = 1, 10, 1,000 and the full set",
                            preset_name, PRESET_NOTES[preset_name], device, "probe and CIFAR-10 data", data, stages,
                            missing), "", "## Top-1 (%) of a linear probe on CIFAR-10, per method", ""]
    for method, measured in rows.items():
        lines += method_table(method, measured, refs)
    lines += [f"![top-1 against N, a panel per layer]({picture.name})", "", *questions(rows),
              *paper_section([m for m in METHODS if m in preset["methods"]]),
              *sources_section(work, target, list(preset["rows"]))]
    out = work / f"report-{target}.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


TARGET = register(Target("continuum", continuum_stages, write_report, PRESETS, work="reproduce-cifar10", order=50))
