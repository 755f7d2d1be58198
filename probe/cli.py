"""The `probe` command line: linear probes, fine-tuning, filter pictures and reports against the paper."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from common.cli_group import ErrorReportingGroup
from common.errors import DataError, ToolkitError, one_line
from common.fileio import atomic_write_text, folder_lock
from common.options import SEED, click_option, float_range
from probe.cli_init_kmeans import init_kmeans
from probe.protocols import NORMALIZATIONS, FinetuneProtocol, ProbeProtocol, ProbeRun

if TYPE_CHECKING:
    from probe.datasets import LabelledData
    from probe.encoders import Encoder
    from probe.transforms import Normalization

# torch, torchvision and the modules that import them are imported by the commands that run, not with this module,
# so that `probe --help`, `probe report` and every refusal of a bad option start without them


class _DataOption(click.Option):
    """--data, whose help lists the registered data kinds (train.data.kinds.probe_data_help), read when the help is
    shown: reading the registry imports the plugin files, and a broken one must be one line when a command runs,
    not a traceback when this module is imported."""

    @property  # type: ignore[override]
    def help(self) -> str:
        from train.data.kinds import probe_data_help

        return probe_data_help()

    @help.setter
    def help(self, value: str | None) -> None:
        pass  # click.Option.__init__ sets it; the registry's text is read instead


THREADS_HELP = ("CPU threads for torch (default: torch's choice). On a CPU shared with other jobs, 1 can be "
                "several times faster: the probes' small operations gain little from a second thread, and "
                "threads waiting on a busy core stall every step.")


@click.group(cls=ErrorReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Evaluate encoders trained by `train` the way the paper does (section 4.1).

    \b
    probe linear   linear probes on every conv layer (Tables 1-3)
    probe finetune retrain on labels with conv1-conv2 frozen or as initialisation (Tables 4-5)
    probe classify top-1 / top-5 of an encoder's own classifier (supervised, distilled), no training
    probe filters  picture of the conv1 filters (Figure 2)
    probe style    style transfer with an encoder's features (Figure 3)
    probe visualize activation maximisation and top-9 images per unit (Figure 5)
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
    from train.process.devices import pick_device

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
FORCE_HELP = ("Replace what --out holds from another kind of run (and, for finetune, an existing encoder.pt). "
              "ENCODER itself is never replaced.")
# Protocol fields that are no option: the paper's ImageNet-style geometry (resize 256, crop 224), which the encoders'
# input size fixes; results.json records them.
FIXED_SETTINGS = ("resize", "crop")


def protocol_options(protocol: type) -> Callable[[Callable], Callable]:
    """The command-line options of a protocol dataclass, one per field (:func:`common.options.click_option`:
    the range, help and default its ``opt(...)`` declares), in the order of its fields."""

    def decorate(command: Callable) -> Callable:
        for field in reversed(dataclasses.fields(protocol)):  # click lists the last applied first
            if field.name not in FIXED_SETTINGS:
                click_params(command).append(click_option(field, protocol))
        return command

    return decorate


def data_options(out_help: str) -> Callable[[Callable], Callable]:
    """--data and --out, first in every probe command that trains on labelled data."""
    return _options(_DataOption(["--data", "data_spec"], required=True),
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


def run_options_without(*names: str) -> Callable[[Callable], Callable]:
    """:func:`run_options` less the options called `names`, for a command that does not train."""
    collected = click_params(run_options()(lambda: None))
    return _options(*[o for o in reversed(collected) if o.name not in names])


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


def open_run(task: str, encoder: str, seed: int, options: dict[str, Any], held: contextlib.ExitStack,
             writes_encoder: bool = False) -> Opened:
    """The shared opening of `probe linear` and `probe finetune`: refuse an --out that would lose something and
    take its lock (one writer per folder, held until `held` closes), check --device, set --threads, then open
    ENCODER (random:ARCH seeded with `seed`) and --data.
    `writes_encoder`: the command writes an encoder.pt into --out (finetune), which must not be ENCODER."""
    from probe.datasets import open_data
    from probe.encoders import open_encoder
    from probe.transforms import Normalization

    out_dir = options["out_dir"]
    _check_out_dir(out_dir, task, options["force"], encoder=encoder if writes_encoder else None)
    held.enter_context(folder_lock(out_dir, f"probe {task}"))
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
    with contextlib.ExitStack() as held:
        opened = open_run("linear", encoder, protocol.seed, options, held)
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
    protocol = _protocol(FinetuneProtocol, options)
    with contextlib.ExitStack() as held:
        _finetune(open_run("finetune", encoder, protocol.seed, options, held, writes_encoder=True), protocol)


def _finetune(opened: Opened, protocol: FinetuneProtocol) -> None:
    from probe.finetune import run_finetune
    from probe.results import finetune_markdown, new_results
    from train.models.encoder_io import save_encoder

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
@data_options("Folder for results.json and results.md.")
@click.option("--batch-size", type=POSITIVE, default=256, show_default=True, help="Test images per batch.")
@run_options_without("limit_train")  # nothing is trained
def classify(encoder: str, batch_size: int, **options: Any) -> None:
    """Top-1 and top-5 of ENCODER's own classifier on the test split of --data, with no training.

    ENCODER is an encoder.pt that carries a classifier: a `train supervised` run's (a teacher) or a `train
    distill` run's (a student). CIFAR-style data is tested at 32 px, ImageNet-style data on the centre 224 px crop
    of the image resized to 256. The classifier's classes must be the data's, in the data's order.

    \b
    Examples:
      probe classify runs/sup-cifar/encoder.pt --data cifar10:~/data/cifar-10-batches-py --out runs/sup-cifar/classify
      probe classify runs/distill-B/encoder.pt --data cifar10-jpg:../shared/data/cifar10-jpg --out runs/distill-B/cls
    """
    from probe.classify import open_classifier, run_classify
    from probe.datasets import open_data
    from probe.protocols import ProbeRun
    from probe.results import classify_markdown, new_results
    from probe.transforms import Normalization

    out_dir = options["out_dir"]
    _check_out_dir(out_dir, "classify", options["force"])
    with folder_lock(out_dir, "probe classify"):
        device = _device(options["device"])
        _set_threads(options["threads"])
        model, identity = open_classifier(encoder)
        data = open_data(options["data_spec"], options["cache_dir"])
        normalization = Normalization.choose(options["normalize"], identity.get("config", {}))
        run = ProbeRun(device=device, workers=options["workers"], limit_test=options["limit_test"],
                       progress=options["progress"])
        fields = run_classify(model, identity, data, normalization, run, batch_size)
        results = new_results("classify", identity, data.describe() | fields["data_used"], fields["protocol"],
                              device, _command_line())
        results.update(scores=fields["scores"], timings=fields["timings"])
        _write_results(out_dir, results, classify_markdown(results))


@main.command()
@click.argument("encoders", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), callback=_png_path,
              help="PNG file to write.")
@click.option("--labels", help="Comma-separated panel names, one per ENCODER in order (default: each encoder's run "
                               "folder name, or random:ARCH).")
@click.option("--results", "results_files", multiple=True,
              help="A `probe linear` results.json of an ENCODER whose first-tap (conv1) top-1 goes under its panel: "
                   "once per ENCODER, in their order; '-' for an encoder drawn without one. Default: the results "
                   "found beside each encoder (RUN/*/results.json, and the probes/NAME folders next to RUN or one "
                   "level up, as `make demo` and the reproduce targets lay them out). A file is used only if it "
                   "measured that very encoder (its recorded hash; random:ARCH: spec and seed).")
@click.option("--columns", type=POSITIVE,
              help="Filters per row (default: a landscape grid, 12 for 96 filters, 8 for 96 Sobel filters).")
@click.option("--scale", type=click.IntRange(1, 64),
              help="Pixels per filter weight (default: the smallest that makes a grid at least 600 px wide).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of random:ARCH weights.")
def filters(encoders, out, labels, results_files, columns, scale, seed):
    """Save ENCODERS' first-layer filters as grid pictures on one sheet (the paper's Figure 2).

    Each filter is scaled into (-1, 1) by its own largest weight and shown with zero as mid-grey. Under each
    encoder's panel: its measured first-tap (conv1) linear-probe top-1, read from a `probe linear` results.json
    of that encoder (see --results), or "no result found". One ENCODER gives one titled grid, the accuracy on the
    line under the title. A Sobel encoder's tiles have two grey halves, the x- and y-gradient weights; the sheet
    says so.

    \b
    Examples:
      probe filters runs/bigan-A/encoder.pt --out runs/bigan-A/conv1.png
      probe filters runs/rotnet/encoder.pt runs/monogan/encoder.pt random:cifar --labels RotNet,MonoGAN,random \\
          --results runs/rotnet/probe/results.json --results runs/monogan/probe/results.json \\
          --results runs/probe-random/results.json --out figure2.png
    """
    from probe.encoders import open_encoder
    from probe.filter_sheet import accuracies, filter_panel, panel_labels, save_filter_sheet
    from probe.filters import save_filter_grid
    from probe.results import encoder_label

    nets = [open_encoder(encoder, seed=seed) for encoder in encoders]
    names = panel_labels(nets, _layers(labels) if labels is not None else None,
                         [encoder_label(net.source) for net in nets])
    measured = accuracies(nets, list(results_files))
    for net, accuracy in zip(nets, measured, strict=True):
        found = f"{accuracy.caption.replace(chr(10), ' ')} from {accuracy.results}" if accuracy else "no probe result"
        click.echo(f"{net.source}: {found}")
    if len(nets) == 1:
        net, accuracy = nets[0], measured[0]
        title = f"{names[0]} ({net.arch}): {net.taps[0]} filters"
        written = save_filter_grid(net.module, out, columns, scale, title,
                                   [accuracy.caption.replace("\n", " ")] if accuracy else [])
    else:
        panels = [filter_panel(net, name, accuracy, columns, scale)
                  for net, name, accuracy in zip(nets, names, measured, strict=True)]
        written = save_filter_sheet(panels, out, nets[0].taps[0])
    click.echo(f"wrote {written}")


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
    markdown, groups = build_report(list(results), list(against), plot_name=plot.name if results else None,
                                    base=out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, markdown)
    if groups:
        plot_layers(groups, plot)
        click.echo(f"wrote {out} and {plot}")
    else:
        click.echo(f"wrote {out} (no results matched a paper table, so no plot)")


@main.command()
@click.argument("encoder")
@click.option("--content", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Image whose content is kept.")
@click.option("--style", "style_image", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Image whose style (Gram matrices of the style taps) is transferred.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), callback=_png_path,
              help="PNG to write: the stylised image, or with --compare the side-by-side sheet.")
@click.option("--compare", multiple=True,
              help="Another encoder (encoder.pt or random:ARCH) to stylise with; repeatable. The sheet shows "
                   "content, style and each encoder's result, titled with the encoders' names (Figure 3).")
@click.option("--size", type=click.IntRange(8, 4096), default=256, show_default=True,
              help="Longer side of the content and style images, px.")
@click.option("--content-tap", help="Tap of the content loss (default: the middle tap).")
@click.option("--style-taps", help="Comma-separated taps of the style losses (default: all).")
@click.option("--steps", type=POSITIVE, default=300, show_default=True, help="Loss evaluations.")
@click.option("--optimizer", type=click.Choice(["lbfgs", "adam"]), default="lbfgs", show_default=True)
@click.option("--lr", type=POSITIVE_FLOAT, help="Step size (default: 1 for L-BFGS, 0.02 for Adam).")
@click.option("--style-weight", type=POSITIVE_FLOAT, default=1e3, show_default=True,
              help="Weight of the style loss; both losses are relative squared errors, so one weight suits any "
                   "encoder.")
@click.option("--content-weight", type=NON_NEGATIVE_FLOAT, default=1.0, show_default=True)
@click.option("--init", type=click.Choice(["content", "noise"]), default="content", show_default=True,
              help="Start from the content image (the tutorial's choice) or from seeded noise.")
@click.option("--normalize", type=click.Choice(["auto", *NORMALIZATIONS]), default="auto", show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seeds random:ARCH weights and noise.")
@click.option("--threads", type=POSITIVE, help=THREADS_HELP)
@click.option("--progress/--no-progress", default=True, show_default=True)
def style(encoder, content, style_image, out, compare, size, content_tap, style_taps, steps, optimizer, lr,
          style_weight, content_weight, init, normalize, seed, threads, progress):
    """Neural style transfer with ENCODER's features (Gatys et al. 2016; the paper's Figure 3).

    A content loss on one tap and Gram-matrix style losses on several taps, optimised on the image (L-BFGS, or
    Adam) for a fixed number of steps; deterministic from --seed on the CPU. Works with any encoder's taps.

    \b
    Examples:
      probe style runs/monogan/encoder.pt --content photo.jpg --style painting.png --out styled.png
      probe style runs/bigan-A/encoder.pt --compare runs/sup/encoder.pt --content photo.jpg \\
          --style painting.png --out figure3.png --size 128 --steps 200
    """
    from probe.encoders import open_encoder
    from probe.results import encoder_label
    from probe.sheets import load_image
    from probe.style import StyleSettings, save_style_sheet, stylize
    from probe.transforms import Normalization

    _set_threads(threads)
    settings = StyleSettings(content_tap=content_tap, style_taps=tuple(_layers(style_taps) or ()) or None,
                             steps=steps, optimizer=optimizer, lr=lr, style_weight=style_weight,
                             content_weight=content_weight, init=init, seed=seed)
    nets = [open_encoder(spec, seed=seed) for spec in (encoder, *compare)]
    content_pixels, style_pixels = load_image(content, size), load_image(style_image, size)
    results = []
    for net in nets:
        norm = Normalization.choose(normalize, net.identity.get("config", {}))
        result = stylize(net, content_pixels, style_pixels, settings, norm, progress=progress)
        first, last = result.history[0], result.history[-1]
        click.echo(f"{net.source}: content loss ({result.content_tap}) {first['content']:.3g} -> "
                   f"{last['content']:.3g}, style loss ({','.join(result.style_taps)}) {first['style']:.3g} -> "
                   f"{last['style']:.3g} in {len(result.history)} steps")
        results.append((encoder_label(net.source), result))
    click.echo(f"wrote {save_style_sheet(content_pixels, style_pixels, results, out)}")


def _unit(value: str) -> tuple[str, int]:
    tap, sep, index = value.rpartition(":")
    if not sep or not tap or not index.isdigit():
        raise click.BadParameter(f"{value!r}: expected TAP:INDEX, e.g. conv2:7", param_hint="'--unit'")
    return tap, int(index)


@main.command()
@click.argument("encoder")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), callback=_png_path,
              help="PNG sheet to write: a row per tap, each unit's maximising image (and top images).")
@click.option("--layers", help="Comma-separated taps (default: all), each with --units seeded-random units.")
@click.option("--units", type=POSITIVE, default=4, show_default=True,
              help="Units drawn at random (from --seed) per tap, as the paper's 'non-cherry-picked' ones.")
@click.option("--unit", "chosen", multiple=True,
              help="A chosen unit as TAP:INDEX (repeatable); replaces the random draw.")
@click.option("--size", type=click.IntRange(8, 1024),
              help="Side of the optimised images, px (default: 64 for 32 px encoders, 128 for larger ones).")
@click.option("--steps", type=POSITIVE, default=256, show_default=True)
@click.option("--lr", type=POSITIVE_FLOAT, default=0.05, show_default=True, help="Adam step size.")
@click.option("--retrieve", "retrieve_spec",
              help="Also find, for each unit, the images of this data set (KIND:PATH as for probe linear --data, "
                   "shards over http included) that excite it most, streamed once.")
@click.option("--top", type=POSITIVE, default=9, show_default=True, help="Images retrieved per unit.")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--batch-size", type=POSITIVE, default=128, show_default=True)
@click.option("--workers", type=NON_NEGATIVE, default=0, show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--normalize", type=click.Choice(["auto", *NORMALIZATIONS]), default="auto", show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seeds random:ARCH weights, the units drawn, the images' initialisation and transforms.")
@click.option("--device", default="cpu", show_default=True, help="Device of the retrieval pass.")
@click.option("--threads", type=POSITIVE, help=THREADS_HELP)
@click.option("--progress/--no-progress", default=True, show_default=True)
def visualize(encoder, out, layers, units, chosen, size, steps, lr, retrieve_spec, top, split, batch_size, workers,
              cache_dir, normalize, seed, device, threads, progress):
    """What units of ENCODER's taps respond to (the paper's Figure 5).

    Regularised activation maximisation as in Lucid: a Fourier-space, colour-decorrelated image optimised with
    random jitter, scale and rotation at every step to raise one unit's mean activation. With --retrieve, the
    --top images of a data set that excite each unit most (largest activation anywhere in the image).

    \b
    Examples:
      probe visualize runs/bigan-A/encoder.pt --out fig5.png --retrieve imagefolder:/data/imagenet
      probe visualize random:cifar --out units.png --unit conv1:3 --unit conv3:17 --steps 128 \\
          --retrieve cifar10-jpg:../shared/data/cifar10-jpg --top 9
    """
    from probe.encoders import open_encoder
    from probe.results import data_label, encoder_label
    from probe.transforms import Normalization
    from probe.visualize import MaximizeSettings, maximize_units, random_units, save_visualization_sheet

    _set_threads(threads)
    net = open_encoder(encoder, seed=seed)
    side = size or (64 if net.input_size < 128 else 128)
    norm = Normalization.choose(normalize, net.identity.get("config", {}))
    targets = [_unit(v) for v in chosen] or random_units(net, _layers(layers) or list(net.taps), units, seed, side)
    data = None
    if retrieve_spec:  # opened before the optimisation, so a wrong path fails at once
        from probe.datasets import open_data

        data = open_data(retrieve_spec, cache_dir)
    maximized = maximize_units(net, targets, MaximizeSettings(size=side, steps=steps, lr=lr, seed=seed), norm,
                               progress=progress)
    for unit in maximized:
        dead = " (still zero: no image the optimisation reached opens its ReLU; try more --steps or another --seed)" \
            if unit.start == unit.end == 0 else ""
        click.echo(f"{unit.tap}:{unit.unit} mean activation {unit.start:.3g} -> {unit.end:.3g}{dead}")
    retrieved = None
    if data is not None:
        from probe.retrieval import retrieve_top

        retrieved = retrieve_top(net, data, targets, top, norm, split=split, batch_size=batch_size,
                                 workers=workers, device=_device(device), progress=progress)
    title = f"{encoder_label(net.source)}: activation maximisation" + (
        f" and top {top} of {data_label(retrieve_spec)} ({split})" if retrieved else "")
    click.echo(f"wrote {save_visualization_sheet(title, maximized, out, retrieved)}")


def _write_results(out_dir: Path, results: dict, table: str, also: Path | None = None) -> None:
    """results.json and its Markdown table beside it; the table is also printed."""
    from probe.results import portable, write_json

    write_json(out_dir / "results.json", results)
    table = portable(table, out_dir)  # its paths as results.json records them: relative to the folder
    atomic_write_text(out_dir / "results.md", table)
    click.echo(table)
    extra = f" and {also}" if also else ""
    click.echo(f"wrote {out_dir / 'results.json'}, {out_dir / 'results.md'}{extra}")


main.add_command(init_kmeans)  # its own command-line module: probe/cli_init_kmeans.py


if __name__ == "__main__":
    main()

