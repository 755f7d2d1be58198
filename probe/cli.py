"""The `probe` command line: linear probes, fine-tuning, filter pictures and reports against the paper."""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from pipeline.cli_group import ErrorReportingGroup
from pipeline.errors import DataError, ToolkitError, one_line
from pipeline.fileio import atomic_write_text
from pipeline.options import SEED, click_option
from probe.datasets import LabelledData, open_data
from probe.encoders import Encoder, open_encoder
from probe.finetune import FinetuneProtocol
from probe.fit import ProbeRun
from probe.linear import ProbeProtocol
from probe.transforms import NORMALIZATIONS, Normalization

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
FORCE_HELP = ("Replace what --out holds from another kind of run (and, for finetune, an existing encoder.pt). "
              "ENCODER itself is never replaced.")
# Protocol fields that are no option: the paper's ImageNet-style geometry (resize 256, crop 224), which the encoders'
# input size fixes; results.json records them.
FIXED_SETTINGS = ("resize", "crop")


def protocol_options(protocol: type) -> Callable[[Callable], Callable]:
    """The command-line options of a protocol dataclass, one per field (:func:`pipeline.options.click_option`:
    the range, help and default its ``opt(...)`` declares), in the order of its fields."""

    def decorate(command: Callable) -> Callable:
        for field in reversed(dataclasses.fields(protocol)):  # click lists the last applied first
            if field.name not in FIXED_SETTINGS:
                click_params(command).append(click_option(field, protocol))
        return command

    return decorate


def data_options(out_help: str) -> Callable[[Callable], Callable]:
    """--data and --out, first in every probe command that trains on labelled data."""
    return _options(click.Option(["--data", "data_spec"], required=True, help=DATA_HELP),
                    click.Option(["--out", "out_dir"], required=True, help=out_help,
                                 type=click.Path(file_okay=False, path_type=Path)))


def run_options(min_train: int = 1) -> Callable[[Callable], Callable]:
    """How a run is carried out (no part of its protocol): normalisation, subsets, device, workers, cache, threads,
    progress and --force. `min_train`: the fewest training images the command can train on."""
    at_least = f" (at least {min_train})" if min_train > 1 else ""
    return _options(
        click.Option(["--normalize"], type=click.Choice(["auto", *NORMALIZATIONS]), default="auto",
                     show_default=True,
                     help="Input normalisation; auto: what the encoder's config records, else train's (-1, 1) range."),
        click.Option(["--limit-train"], type=click.IntRange(min=min_train),
                     help=f"Use a seeded random subset of this many training images{at_least}."),
        click.Option(["--limit-test"], type=POSITIVE, help="Use a seeded random subset of this many test images."),
        click.Option(["--device"], default="auto", show_default=True, help="cpu, cuda, cuda:1 ... or auto."),
        click.Option(["--workers"], type=NON_NEGATIVE, default=2, show_default=True,
                     help="Data loading processes (0: in this process)."),
        click.Option(["--cache-dir"], type=click.Path(file_okay=False, path_type=Path),
                     help="Where archives are extracted (default: $XDG_CACHE_HOME or ~/.cache, then "
                          "single-image-ssl/probe)."),
        click.Option(["--threads"], type=POSITIVE, help=THREADS_HELP),
        click.Option(["--progress/--no-progress"], default=True, show_default=True),
        click.Option(["--force"], is_flag=True, help=FORCE_HELP))


def _options(*options: click.Option) -> Callable[[Callable], Callable]:
    def decorate(command: Callable) -> Callable:
        click_params(command).extend(reversed(options))  # click lists the last applied first
        return command

    return decorate


def click_params(command: Callable) -> list[click.Parameter]:
    """The parameters click's decorators collect on a function before it becomes a command."""
    if not hasattr(command, "__click_params__"):
        command.__click_params__ = []  # type: ignore[attr-defined]
    return command.__click_params__  # type: ignore[attr-defined]


@dataclass
class Opened:
    """What a training probe command starts from, opened and checked before any work."""

    encoder: Encoder
    data: LabelledData
    normalization: Normalization
    run: ProbeRun
    out_dir: Path


def open_run(task: str, encoder: str, seed: int, options: dict[str, Any], writes_encoder: bool = False) -> Opened:
    """The shared opening of `probe linear` and `probe finetune`: refuse an --out that would lose something,
    check --device, set --threads, then open ENCODER (random:ARCH seeded with `seed`) and --data.
    `writes_encoder`: the command writes an encoder.pt into --out (finetune), which must not be ENCODER."""
    out_dir = options["out_dir"]
    _check_out_dir(out_dir, task, options["force"], encoder=encoder if writes_encoder else None)
    device = _device(options["device"])
    _set_threads(options["threads"])
    net = open_encoder(encoder, seed=seed)
    data = open_data(options["data_spec"], options["cache_dir"])
    normalization = Normalization.choose(options["normalize"], net.identity.get("config", {}))
    run = ProbeRun(device=device, workers=options["workers"], limit_train=options["limit_train"],
                   limit_test=options["limit_test"], progress=options["progress"])
    return Opened(net, data, normalization, run, out_dir)


def _protocol(protocol: type, options: dict[str, Any]) -> Any:
    """The protocol dataclass from the options parsed from its fields (the rest are run options)."""
    return protocol(**{f.name: options.pop(f.name) for f in dataclasses.fields(protocol) if f.name in options})


@main.command()
@click.argument("encoder")
@data_options("Folder for results.json and results.md.")
@click.option("--layers", help="Comma-separated layers to probe (default: all of them).")
@protocol_options(ProbeProtocol)
@run_options(min_train=2)
def linear(encoder: str, layers: str | None, **options: Any) -> None:
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
    from probe.linear import linear_results, run_linear
    from probe.results import layers_markdown

    protocol = _protocol(ProbeProtocol, options)
    opened = open_run("linear", encoder, protocol.seed, options)
    run = run_linear(opened.encoder, opened.data, protocol, opened.normalization, opened.run, _layers(layers))
    results = linear_results(opened.encoder, run, opened.run.device, _command_line())
    _write_results(opened.out_dir, results, layers_markdown(results))


@main.command()
@click.argument("encoder")
@data_options("Folder for results.json, results.md and the retrained encoder.pt.")
@protocol_options(FinetuneProtocol)
@run_options()
def finetune(encoder: str, **options: Any) -> None:
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
    from probe.finetune import run_finetune
    from probe.results import finetune_markdown, new_results
    from train.encoder_io import save_encoder

    protocol = _protocol(FinetuneProtocol, options)
    opened = open_run("finetune", encoder, protocol.seed, options, writes_encoder=True)
    net, norm, out_dir = opened.encoder, opened.normalization, opened.out_dir
    model, fields = run_finetune(net, opened.data, protocol, norm, opened.run)
    described = opened.data.describe() | fields["data_used"]
    results = new_results("finetune", net.identity, described, fields["protocol"], opened.run.device,
                          _command_line())
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


if __name__ == "__main__":
    main()

