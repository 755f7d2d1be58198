"""The `probe` command line: linear probes, fine-tuning, filter pictures and reports against the paper."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

from pipeline.cli_group import ErrorReportingGroup
from pipeline.errors import DataError, ToolkitError, one_line
from pipeline.fileio import atomic_write_text
from pipeline.options import SEED, Bounds, IntList, float_range
from probe.init_kmeans import init_kmeans
from probe.transforms import NORMALIZATIONS

DATA_HELP = (
    "Data set as KIND:PATH. Kinds: cifar10 / cifar100 (python pickles), cifar10-jpg (the shared "
    "train.tar.gz + test.tar.gz, extracted once into the cache), imagefolder (PATH/train and PATH/val "
    "class folders), shards (PATH/train and PATH/val packed by `pipeline pack`, PATH a folder or an http(s) "
    "URL, streamed; or each split on its own: 'shards:train=SPLIT;val=SPLIT', SPLIT a folder, URL, or URL "
    "pattern with ';train-manifest=M' / ';val-manifest=M')."
)
THREADS_HELP = ("CPU threads for torch (default: torch's choice). On a CPU shared with other jobs, 1 can be "
                "several times faster: the probes' small operations gain little from a second thread, and "
                "threads waiting on a busy core stall every step.")


@click.group(cls=ErrorReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Evaluate encoders trained by `train` the way the paper does (section 4.1).

    \b
    probe linear   linear probes on every conv layer (Tables 1-3)
    probe finetune retrain on labels with conv1-conv2 frozen or as initialisation (Tables 4-5)
    probe filters  picture of the conv1 filters (Figure 2)
    probe report   results side by side with the paper's tables, with differences and a plot
    probe init-kmeans  the k-means initialisation baseline (Table 2 row d) as an encoder.pt

    \b
    Example: the random-initialisation baseline of Table 3 on the shared CIFAR-10 copy:
      probe linear random:cifar --data cifar10-jpg:../shared/data/cifar10-jpg --out runs/probe-random
      probe report runs/probe-random/results.json --out runs/probe-random/report.md
    """


def _png_path(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    if value.suffix.lower() != ".png":
        raise click.BadParameter(f"{value}: expected a .png file name")
    return value


def _layers(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _command_line() -> str:
    return shlex.join(["probe", *sys.argv[1:]])


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _device(value: str) -> str:
    """The device to run on, chosen and checked as `train` does (--device cuda without a GPU is one line)."""
    from train.devices import pick_device

    try:
        return str(pick_device(value))
    except RuntimeError as exc:  # torch's own complaint about a malformed name or a missing device index
        raise click.BadParameter(one_line(exc).rstrip("."), param_hint="'--device'") from None


def _check_out_dir(out_dir: Path, task: str, force: bool, encoder: str | None = None) -> None:
    """Refuse, before any work, an --out that would lose something: the encoder being fine-tuned (always), an
    encoder.pt a fine-tuning would replace, or a results.json of another kind. Rerunning the same kind of
    evaluation into its own folder replaces its results, as a rerun should; --force allows the rest."""
    _check_writable(out_dir)
    new_encoder = out_dir / "encoder.pt"
    if encoder is not None:
        if _same_file(Path(encoder), new_encoder):
            raise ToolkitError(f"{new_encoder}: this is the encoder being fine-tuned, which the result would "
                               "overwrite; give another --out")
        if new_encoder.exists() and not force:
            raise ToolkitError(f"{new_encoder}: already exists; give another --out, or --force to replace it")
    results = out_dir / "results.json"
    if results.exists() and not force:
        previous = _results_task(results)
        if previous != task:
            held = f"{previous} results" if previous else "a file that is not probe results"
            raise ToolkitError(f"{results}: holds {held}, which `probe {task}` would replace; give another --out, "
                               "or --force to replace it")


def _check_writable(out_dir: Path) -> None:
    """--out must be a folder that can be made and written, known before the work rather than after it."""
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ToolkitError(f"{existing}: not a folder, so --out {out_dir} cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):  # a read-only disk too (EROFS), even for root
        raise ToolkitError(f"{existing}: not writable, so --out {out_dir} cannot be written")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:  # either is missing (or random:ARCH): not the same file
        return False


def _results_task(path: Path) -> str | None:
    """The task a results.json records, or None when it is no readable results file."""
    from probe.results import read_results

    try:
        return read_results(path)["task"]
    except DataError:
        return None


POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)
POSITIVE_FLOAT = float_range(min=0, min_open=True)
NON_NEGATIVE_FLOAT = float_range(min=0)
# epochs, in order; a negative one would divide the learning rate before training starts
MILESTONES = IntList(Bounds(min=0), increasing=True)
FORCE_HELP = ("Replace what --out holds from another kind of run (and, for finetune, an existing encoder.pt). "
              "ENCODER itself is never replaced.")


@main.command()
@click.argument("encoder")
@click.option("--data", "data_spec", required=True, help=DATA_HELP)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for results.json and results.md.")
@click.option("--layers", help="Comma-separated layers to probe (default: all of them).")
@click.option("--epochs", type=POSITIVE, default=36, show_default=True, help="Training epochs.")
@click.option("--batch-size", type=click.IntRange(min=2), default=192, show_default=True,
              help="Images per SGD step (at least 2: the probes' BatchNorm needs two samples).")
@click.option("--lr", type=POSITIVE_FLOAT, default=0.01, show_default=True, help="Initial learning rate.")
@click.option("--milestones", type=MILESTONES, default="5,15,25", show_default=True,
              help="Epochs at which the learning rate is divided by --lr-divisor.")
@click.option("--lr-divisor", type=POSITIVE_FLOAT, default=5.0, show_default=True)
@click.option("--momentum", type=NON_NEGATIVE_FLOAT, default=0.9, show_default=True)
@click.option("--weight-decay", type=NON_NEGATIVE_FLOAT, default=1e-5, show_default=True,
              help="As the released linear-probes code.")
@click.option("--cifar-flip/--no-cifar-flip", default=False, show_default=True,
              help="CIFAR data: cache the mirrored training images too and train each epoch on a random one of "
                   "(image, mirror) per sample (2x feature memory).")
@click.option("--ten-crop/--center-crop", default=True, show_default=True,
              help="ImageNet-style testing: average 10 crops, or the centre crop only.")
@click.option("--normalize", type=click.Choice(["auto", *NORMALIZATIONS]), default="auto",
              show_default=True,
              help="Input normalisation; auto: what the encoder's config records, else train's (-1, 1) range.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seeds random:ARCH weights, probe init, order.")
@click.option("--limit-train", type=click.IntRange(min=2),
              help="Use a seeded random subset of this many training images (at least 2).")
@click.option("--limit-test", type=POSITIVE, help="Use a seeded random subset of this many test images.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 ... or auto.")
@click.option("--workers", type=NON_NEGATIVE, default=2, show_default=True,
              help="Data loading processes (0: in this process).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where archives are extracted (default: $XDG_CACHE_HOME or ~/.cache, then single-image-ssl/probe).")
@click.option("--threads", type=POSITIVE, help=THREADS_HELP)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--force", is_flag=True, help=FORCE_HELP)
def linear(encoder, data_spec, out_dir, layers, epochs, batch_size, lr, milestones, lr_divisor, momentum,
           weight_decay, cifar_flip, ten_crop, normalize, seed, limit_train, limit_test, device, workers, cache_dir,
           threads, progress, force):
    """Train a linear classifier on the frozen features of every conv layer, all in one pass.

    ENCODER is an encoder.pt written by `train`, or random:ARCH (random:cifar, random:alexnet) for the
    seeded random-initialisation baseline. BatchNorm is absorbed into the convolutions; each probe is
    BatchNorm (no affine) + linear on the ReLU output, max-pooled to about 9,600 dimensions on ImageNet-style
    data and kept whole on CIFAR (whose features are computed once and cached).

    \b
    Examples:
      probe linear runs/monogan/encoder.pt --data cifar10:~/data/cifar-10-batches-py --out runs/monogan/probe
      probe linear random:alexnet --data imagefolder:/data/imagenet --out runs/probe-random-imagenet
      probe linear runs/dc-A/encoder.pt --data shards:https://host/shards/imagenet --out runs/dc-A/probe
      probe linear random:cifar --data cifar10-jpg:../shared/data/cifar10-jpg --out /tmp/quick \\
          --epochs 2 --limit-train 2000 --limit-test 500 --layers conv1,conv2
    """
    from probe.datasets import open_data
    from probe.encoders import open_encoder
    from probe.linear import ProbeProtocol, linear_results, run_linear
    from probe.results import layers_markdown
    from probe.transforms import Normalization

    _check_out_dir(out_dir, "linear", force)
    device = _device(device)
    _set_threads(threads)
    protocol = ProbeProtocol(epochs=epochs, lr=lr, milestones=tuple(milestones), lr_divisor=lr_divisor,
                             momentum=momentum, weight_decay=weight_decay, batch_size=batch_size,
                             ten_crop=ten_crop, cifar_flip=cifar_flip, seed=seed)
    net = open_encoder(encoder, seed=seed)
    data = open_data(data_spec, cache_dir)
    norm = Normalization.choose(normalize, net.identity.get("config", {}))
    run = run_linear(net, data, protocol, layers=_layers(layers), normalization=norm, device=device,
                     workers=workers, limit_train=limit_train, limit_test=limit_test, progress=progress)
    results = linear_results(net, run, device, _command_line())
    _write_results(out_dir, results, layers_markdown(results))


@main.command()
@click.argument("encoder")
@click.option("--data", "data_spec", required=True, help=DATA_HELP)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for results.json, results.md and the retrained encoder.pt.")
@click.option("--freeze", default="conv2", show_default=True,
              help="Last layer kept frozen (conv2: Table 4), or none (train everything: Table 5).")
@click.option("--keep", default="conv2", show_default=True,
              help="Last layer taken from ENCODER; deeper ones start from a fresh seeded init (all: all).")
@click.option("--epochs", type=POSITIVE, default=90, show_default=True)
@click.option("--batch-size", type=POSITIVE, default=256, show_default=True)
@click.option("--lr", type=POSITIVE_FLOAT, default=0.01, show_default=True)
@click.option("--milestones", type=MILESTONES, default="30,60,80", show_default=True,
              help="Epochs at which the learning rate is divided by --lr-divisor.")
@click.option("--lr-divisor", type=POSITIVE_FLOAT, default=10.0, show_default=True)
@click.option("--momentum", type=NON_NEGATIVE_FLOAT, default=0.9, show_default=True)
@click.option("--weight-decay", type=NON_NEGATIVE_FLOAT, default=5e-4, show_default=True)
@click.option("--ten-crop/--center-crop", default=True, show_default=True)
@click.option("--normalize", type=click.Choice(["auto", *NORMALIZATIONS]), default="auto",
              show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--limit-train", type=POSITIVE, help="Use a seeded random subset of this many training images.")
@click.option("--limit-test", type=POSITIVE, help="Use a seeded random subset of this many test images.")
@click.option("--device", default="auto", show_default=True)
@click.option("--workers", type=NON_NEGATIVE, default=2, show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--threads", type=POSITIVE, help=THREADS_HELP)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--force", is_flag=True, help=FORCE_HELP)
def finetune(encoder, data_spec, out_dir, freeze, keep, epochs, batch_size, lr, milestones, lr_divisor,
             momentum, weight_decay, ten_crop, normalize, seed, limit_train, limit_test, device, workers,
             cache_dir, threads, progress, force):
    """Retrain a classifier on labels starting from ENCODER's conv1-conv2 (Tables 4 and 5).

    ENCODER is an encoder.pt or random:ARCH. Layers after --keep are freshly initialised, a new classifier
    (AlexNet's fc6-fc8, or one linear layer for the CIFAR encoder) is added, and the network is trained
    with layers up to --freeze frozen. Reports top-1 (10-crop on ImageNet-style data) and writes the
    retrained encoder.pt, which `probe linear` probes for Table 5.

    \b
    Examples:
      probe finetune runs/deepcluster-A/encoder.pt --data imagefolder:/data/imagenet --freeze conv2 --out ft4
      probe finetune runs/deepcluster-A/encoder.pt --data imagefolder:/data/imagenet --freeze none --out ft5
      probe linear ft5/encoder.pt --data imagefolder:/data/imagenet --out ft5/probe
    """
    from probe.datasets import open_data
    from probe.encoders import open_encoder
    from probe.finetune import FinetuneProtocol, run_finetune
    from probe.results import finetune_markdown, new_results
    from probe.transforms import Normalization
    from train.encoder_io import save_encoder

    _check_out_dir(out_dir, "finetune", force, encoder=encoder)
    device = _device(device)
    _set_threads(threads)
    protocol = FinetuneProtocol(freeze=freeze, keep=keep, epochs=epochs, lr=lr,
                                milestones=tuple(milestones), lr_divisor=lr_divisor, momentum=momentum,
                                weight_decay=weight_decay,
                                batch_size=batch_size, ten_crop=ten_crop, seed=seed)
    net = open_encoder(encoder, seed=seed)
    data = open_data(data_spec, cache_dir)
    norm = Normalization.choose(normalize, net.identity.get("config", {}))
    model, fields = run_finetune(net, data, protocol, normalization=norm, device=device, workers=workers,
                                 limit_train=limit_train, limit_test=limit_test, progress=progress)
    described = data.describe() | fields["data_used"]
    results = new_results("finetune", net.identity, described, fields["protocol"], device, _command_line())
    results.update(scores=fields["scores"], timings=fields["timings"], history=fields["history"])
    config = {"probe_finetune": {"from": net.identity, "protocol": fields["protocol"], "data": described},
              "normalize": {"mean": list(norm.mean), "std": list(norm.std)}}
    save_encoder(out_dir / "encoder.pt", model.encoder.cpu(), net.arch, config)
    _write_results(out_dir, results, finetune_markdown(results), also=out_dir / "encoder.pt")


@main.command()
@click.argument("encoder")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), callback=_png_path,
              help="PNG file to write.")
@click.option("--columns", type=POSITIVE, help="Filters per row (default: a landscape grid, 12 for 96 filters).")
@click.option("--scale", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Pixels per filter weight.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of random:ARCH weights.")
def filters(encoder, out, columns, scale, seed):
    """Save ENCODER's first-layer filters as a grid picture (the paper's Figure 2).

    Each filter is scaled into (-1, 1) by its own largest weight and shown with zero as mid-grey.

    \b
    Example:
      probe filters runs/bigan-A/encoder.pt --out runs/bigan-A/conv1.png
    """
    from probe.encoders import open_encoder
    from probe.filters import save_filter_grid

    net = open_encoder(encoder, seed=seed)
    click.echo(f"wrote {save_filter_grid(net.module, out, columns, scale)}")


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Markdown file to write; the plot goes beside it as the same name with .png.")
@click.option("--against", multiple=True,
              help="Paper row to compare with (a part of its label, e.g. 'Random' or '(p)'): once for all "
                   "RESULTS or once per file; 'none' compares with no row. Default: Random for random:ARCH encoders, "
                   "else the method.")
def report(results, out, against):
    """Set RESULTS (results.json files) beside the paper's Tables 1-5, with differences and a plot.

    \b
    Example:
      probe report runs/probe-random/results.json runs/monogan/probe/results.json --out report.md
    """
    from probe.report import build_report, plot_layers

    plot = out.with_suffix(".png")
    markdown, groups = build_report(list(results), list(against), plot_name=plot.name if results else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, markdown)
    if groups:
        plot_layers(groups, plot)
        click.echo(f"wrote {out} and {plot}")
    else:
        click.echo(f"wrote {out} (no results matched a paper table, so no plot)")


def _write_results(out_dir: Path, results: dict, table: str, also: Path | None = None) -> None:
    """results.json and its Markdown table beside it; the table is also printed."""
    from probe.results import write_json

    write_json(out_dir / "results.json", results)
    atomic_write_text(out_dir / "results.md", table)
    click.echo(table)
    extra = f" and {also}" if also else ""
    click.echo(f"wrote {out_dir / 'results.json'}, {out_dir / 'results.md'}{extra}")


main.add_command(init_kmeans)  # its own module: probe/init_kmeans.py


if __name__ == "__main__":
    main()

