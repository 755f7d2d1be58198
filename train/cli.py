"""The ``train`` command: one subcommand per registered method, options generated from its Options dataclass.

    train deepcluster shards/mono-a --out runs/dc-mono-a
    torchrun --nproc-per-node 8 --no-python train rotnet shards/kilo --out runs/rot-kilo
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from common.cli_group import ErrorReportingGroup, ReportedError
from common.errors import ToolkitError
from common.options import CheckedFloat, CheckedInt, click_option, flag
from train.methods import METHODS, method_summaries, summary_line

if TYPE_CHECKING:
    from train.methods import Method

# torch and the modules that import it (devices, loop, models, settings) are imported when a method's command is
# built or run, not with this module: `train --help` lists the methods from their source and starts in a fraction
# of a second (bench/results/test-suite.md)


class _DeviceName(click.ParamType):
    """Checked when the command line is parsed, so a typo is a usage error rather than a torch traceback."""

    name = "DEVICE"

    def convert(self, value: Any, param, ctx) -> str:
        from train.process.devices import DEVICE_HELP, DEVICE_NAME

        if not DEVICE_NAME.fullmatch(str(value)):
            self.fail(f"{value!r} is not a device this trainer runs on ({DEVICE_HELP})", param, ctx)
        return str(value)


def _setting_option(f: dataclasses.Field, method: type[Method]) -> click.Option:
    """The option of one field of :class:`train.run.settings.RunSettings`, from its declaration: type and range (or
    choices), default (its own or the method's), help. Its value reaches TrainConfig only when given."""
    from train.run.settings import setting_default, setting_kind

    kind, name, meta = setting_kind(f), f.name, f.metadata
    default, show = setting_default(f, method), meta["show_default"]
    names, help_text = [flag(name), name], meta["help"]
    if "{labelled_kinds}" in help_text:  # the data kinds --knn-data takes: the registry's, read as the command is built
        from train.data.kinds import labelled_folder_listing

        help_text = help_text.replace("{labelled_kinds}", labelled_folder_listing())
    if kind is bool:  # a flag pair whose unset value (None) means: recorded, else the default
        return click.Option([f"{flag(name)}/--no-{flag(name)[2:]}", name], default=None, help=help_text)
    if name == "arch":  # its choices are the registry's, read when the command is built
        from train.models import list_encoders

        type_: click.ParamType = click.Choice(list_encoders())
    elif kind is int:
        type_ = CheckedInt(meta["bounds"])
    elif kind is float:
        type_ = CheckedFloat(meta["bounds"])
    else:
        type_ = click.STRING
    return click.Option(names, type=type_, default=default, show_default=show and default is not None,
                        help=help_text or None, metavar=meta["metavar"])


def _common_options(method: type[Method]) -> list[click.Parameter]:
    from train.process.devices import DEVICE_HELP
    from train.run.settings import setting_fields

    settings = [_setting_option(f, method) for f in setting_fields()]
    settings_before_run = [f.name for f in setting_fields()].index("amp")  # the options' order in --help
    # --manifest names a rendered set's manifest: only methods that read rendered sets have it
    manifest = [] if method.data_kind != "rendered" else [
        click.Option(["--manifest"], type=str, default=None,
                     help="the set's manifest.json (path or URL) when DATA is a webdataset URL pattern, e.g. "
                          "'pipe:aws s3 cp s3://b/set/patches-{000000..000127}.tar -'")]
    return [
        click.Argument(["data"], type=click.Path(), metavar="DATA"),
        *manifest,
        click.Option(["--out", "-o"], type=click.Path(), default=None,
                     help=f"run folder (default runs/{method.name}); holds checkpoint.pt, encoder.pt, "
                          "metrics.jsonl, config.json"),
        *settings[:settings_before_run],
        click.Option(["--resume"], is_flag=True,
                     help="continue the run in --out exactly where it stopped, with the settings it recorded "
                          "for every option not given"),
        click.Option(["--device"], type=_DeviceName(), default="auto", show_default=True, help=DEVICE_HELP),
        settings[settings_before_run],  # --amp, beside --device as before
        click.Option(["--deterministic"], is_flag=True,
                     help="bit-reproducible GPU training and exact --resume on a GPU (same GPU model, driver and "
                          "torch; pass it again on --resume): deterministic algorithms, no cuDNN autotuning, no TF32; "
                          "slower"),
        click.Option(["--progress/--no-progress"], default=True, show_default=True, help="progress bar"),
        *settings[settings_before_run + 1:],  # the monitors
        click.Option(["--tensorboard/--no-tensorboard"], default=True, show_default=True,
                     help="TensorBoard event files in OUT/tensorboard/: every metrics.jsonl scalar, and pictures of "
                          "the augmented views at each epoch's start"),
    ]


# the command's own parameters (not recorded settings), besides every RunSettings field
RUN_PARAMETERS = {"data", "out", "manifest", "resume", "device", "deterministic", "progress", "tensorboard"}


def _given_on_command_line(kw: dict[str, Any]) -> dict[str, Any]:
    """The parameters the user set. Those left at their defaults reach TrainConfig as None (or are left out of the
    options), which means the method's default on a fresh run and the checkpointed run's value on --resume."""
    ctx = click.get_current_context()
    return {name: value for name, value in kw.items()
            if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT}


def _make_command(method: type[Method]) -> click.Command:
    opt_fields = dataclasses.fields(method.Options)

    def callback(**kw: Any) -> None:
        from train.run.loop import train
        from train.run.settings import TrainConfig, setting_fields

        given = _given_on_command_line(kw)
        options = {f.name: given[f.name] for f in opt_fields if f.name in given}
        cfg = TrainConfig(
            method=method.name, data=kw["data"], out=kw["out"] or f"runs/{method.name}",
            manifest=kw.get("manifest"), resume=kw["resume"], device=kw["device"],
            deterministic=kw["deterministic"], progress=kw["progress"], tensorboard=kw["tensorboard"],
            options=options, **{f.name: given.get(f.name) for f in setting_fields()},
        )
        summary = train(cfg)
        from train.process import distributed as D

        if D.is_main():
            click.echo(f"done: {summary['step']} steps, {summary['epoch']} epochs, "
                       f"{summary['images_per_s']:.1f} images/s; encoder: {cfg.out}/encoder.pt")

    first = summary_line(method)
    examples = "\n".join("  " + line for line in method.examples)
    help_text = f"{first}\n\n{method.data_help()}" + (f"\n\n\b\nExample:\n{examples}" if examples else "")
    common = _common_options(method)
    taken = {p.name for p in common}
    params = common + [click_option(f, method.Options) for f in opt_fields if f.name not in taken]
    return click.Command(method.name, callback=callback, params=params, help=help_text,
                         short_help=_short_help(first),
                         context_settings={"max_content_width": 110})


def _short_help(first: str) -> str:
    return first.split(":")[0][:80]


class MethodCommands(ErrorReportingGroup):
    """One subcommand per registered method, built when asked for: reading the registry imports the plugins, so a
    plugin that fails to import is one line (``Error: FILE: the plugin failed to import (...)``, exit 1) when the
    command runs, not a traceback when this module is imported."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(method_summaries())

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # the listing of `train --help` from the methods' source (method_summaries): no method is imported for it
        rows = [(name, _short_help(first)) for name, first in method_summaries().items()]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return _make_command(METHODS[name]) if name in METHODS else None

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except ToolkitError as exc:  # raised while parsing, before invoke: listing the commands for --help
            error = ReportedError(exc)
            error.show()
            sys.exit(error.exit_code)


@click.group(cls=MethodCommands,
             context_settings={"max_content_width": 110, "help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def main(verbose: bool) -> None:
    """Train an encoder on a rendered set (streaming its shards), or the supervised baseline on labels.

    Each run writes RUN/checkpoint.pt (resumable), RUN/encoder.pt (what `probe` reads), RUN/metrics.jsonl
    and RUN/config.json. Uses CUDA when present (bf16), else the CPU, with channels_last on both; under torchrun, one
    process per GPU (or CPU process with gloo) with the shards split across ranks.

    \b
    Examples:
      train deepcluster shards/mono-a --out runs/dc-mono-a
      train rotnet shards/mono-a --out runs/rot --max-steps 1000 --batch-size 128
      train monogan shards/cifar-b --out runs/monogan-b
      train rotnet shards/mono-a --out runs/rot --resume
      torchrun --nproc-per-node 8 --no-python train deepcluster shards/kilo --out runs/dc-kilo
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")
    if not verbose:  # faiss narrates its CPU-feature probing at INFO (six lines per run)
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)


if __name__ == "__main__":
    main()
