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

from pipeline.cli_group import ErrorReportingGroup, ReportedError
from pipeline.errors import ToolkitError
from pipeline.options import CheckedInt, click_option
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
        from train.devices import DEVICE_HELP, DEVICE_NAME

        if not DEVICE_NAME.fullmatch(str(value)):
            self.fail(f"{value!r} is not a device this trainer runs on ({DEVICE_HELP})", param, ctx)
        return str(value)


def _setting(name: str) -> CheckedInt:
    from train.settings import SETTING_BOUNDS

    return CheckedInt(SETTING_BOUNDS[name])


def _common_options(method: type[Method]) -> list[click.Parameter]:
    from train.devices import DEVICE_HELP
    from train.models import list_encoders
    from train.settings import DEFAULT_CKPT_EVERY, DEFAULT_LOG_EVERY, DEFAULT_SEED, DEFAULT_SHUFFLE_BUFFER

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
        click.Option(["--arch"], type=click.Choice(list_encoders()), default=method.default_arch,
                     show_default=True, help="encoder architecture"),
        click.Option(["--epochs"], type=_setting("epochs"), default=method.default_epochs, show_default=True),
        click.Option(["--max-steps"], type=_setting("max_steps"), default=None,
                     help="stop after this many optimisation steps (overall, not per epoch)"),
        click.Option(["--batch-size"], type=_setting("batch_size"), default=method.default_batch_size,
                     show_default=True, help="per-process batch size"),
        click.Option(["--workers"], type=_setting("workers"), default=None,
                     help="data-loader worker processes per process  [default: its share of the CPUs it may use, "
                          "split between torchrun's processes on the node, less one]"),
        click.Option(["--seed"], type=_setting("seed"), default=DEFAULT_SEED, show_default=True),
        click.Option(["--ckpt-every"], type=_setting("ckpt_every"), default=DEFAULT_CKPT_EVERY, show_default=True,
                     help="checkpoint every N steps (and always at each epoch end); 0: epoch ends only"),
        click.Option(["--log-every"], type=_setting("log_every"), default=DEFAULT_LOG_EVERY, show_default=True,
                     help="metrics.jsonl / progress-bar interval in steps"),
        click.Option(["--shuffle-buffer"], type=_setting("shuffle_buffer"), default=DEFAULT_SHUFFLE_BUFFER,
                     show_default=True, help="samples in the streaming shuffle buffer"),
        click.Option(["--resume"], is_flag=True,
                     help="continue the run in --out exactly where it stopped, with the settings it recorded "
                          "for every option not given"),
        click.Option(["--device"], type=_DeviceName(), default="auto", show_default=True, help=DEVICE_HELP),
        click.Option(["--amp/--no-amp"], default=None,
                     help="bf16 autocast; default: on CUDA and on a CPU with native bf16 (AVX512-BF16 or AMX, "
                          "detected at run time; 1.3-1.6x faster steps), fp32 on other CPUs, which emulate bf16. "
                          "--no-amp trains in fp32 (bit-exact fingerprints); config.json records which and why"),
        click.Option(["--deterministic"], is_flag=True,
                     help="bit-reproducible GPU training and exact --resume on a GPU (same GPU model, driver and "
                          "torch; pass it again on --resume): deterministic algorithms, no cuDNN autotuning, no TF32; "
                          "slower"),
        click.Option(["--progress/--no-progress"], default=True, show_default=True, help="progress bar"),
        *_watching_options(),
    ]


def _watching_options() -> list[click.Parameter]:
    """The k-NN monitor, the online probe and TensorBoard: they watch the run and do not change it."""
    from train.settings import DEFAULT_KNN_EVERY, DEFAULT_KNN_K, DEFAULT_KNN_TEST_SIZE, DEFAULT_KNN_TRAIN_SIZE

    return [
        click.Option(["--knn-data"], type=str, default=None, metavar="[KIND:]PATH",
                     help="k-NN monitor: a labelled set (a CIFAR-10/100 folder or an ImageFolder tree; KIND cifar10, "
                          "cifar100 or imagefolder as for `probe --data`); weighted k-NN top-1 of --knn-tap on it "
                          "is logged in metrics.jsonl every --knn-every epochs and at the run's end"),
        click.Option(["--knn-every"], type=_setting("knn_every"), default=DEFAULT_KNN_EVERY, show_default=True,
                     help="epochs between k-NN evaluations"),
        click.Option(["--knn-tap"], type=str, default=None,
                     help="the encoder tap the k-NN monitor reads (map taps averaged over space)  "
                          "[default: the encoder's last tap]"),
        click.Option(["--knn-k"], type=_setting("knn_k"), default=DEFAULT_KNN_K, show_default=True,
                     help="neighbours that vote"),
        click.Option(["--knn-train-size"], type=_setting("knn_train_size"), default=DEFAULT_KNN_TRAIN_SIZE,
                     show_default=True, help="training images of --knn-data that vote (a seeded subset)"),
        click.Option(["--knn-test-size"], type=_setting("knn_test_size"), default=DEFAULT_KNN_TEST_SIZE,
                     show_default=True, help="test images of --knn-data scored (a seeded subset)"),
        click.Option(["--online-probe/--no-online-probe"], default=None,
                     help="train a linear classifier on detached features of --online-probe-tap from each training "
                          "batch's labels (a labelled training set only); its top-1 goes into metrics.jsonl  "
                          "[default: off]"),
        click.Option(["--online-probe-tap"], type=str, default=None,
                     help="the tap the online probe reads  [default: the encoder's last tap]"),
        click.Option(["--tensorboard/--no-tensorboard"], default=True, show_default=True,
                     help="TensorBoard event files in OUT/tensorboard/: every metrics.jsonl scalar, and pictures of "
                          "the augmented views at each epoch's start"),
    ]


WATCHING = {"knn_data", "knn_every", "knn_tap", "knn_k", "knn_train_size", "knn_test_size", "online_probe",
            "online_probe_tap"}
COMMON = {"data", "out", "arch", "epochs", "max_steps", "batch_size", "workers", "seed", "ckpt_every",
          "log_every", "shuffle_buffer", "resume", "device", "amp", "deterministic", "progress", "tensorboard",
          *WATCHING}


def _given_on_command_line(kw: dict[str, Any]) -> dict[str, Any]:
    """The parameters the user set. Those left at their defaults reach TrainConfig as None (or are left out of the
    options), which means the method's default on a fresh run and the checkpointed run's value on --resume."""
    ctx = click.get_current_context()
    return {name: value for name, value in kw.items()
            if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT}


def _make_command(method: type[Method]) -> click.Command:
    opt_fields = dataclasses.fields(method.Options)

    def callback(**kw: Any) -> None:
        from train.loop import train
        from train.settings import TrainConfig

        given = _given_on_command_line(kw)
        options = {f.name: given[f.name] for f in opt_fields if f.name in given}
        cfg = TrainConfig(
            method=method.name, data=kw["data"], out=kw["out"] or f"runs/{method.name}", arch=given.get("arch"),
            epochs=given.get("epochs"), max_steps=given.get("max_steps"), batch_size=given.get("batch_size"),
            workers=given.get("workers"),
            seed=given.get("seed"), ckpt_every=given.get("ckpt_every"), log_every=given.get("log_every"),
            shuffle_buffer=given.get("shuffle_buffer"), manifest=kw.get("manifest"), resume=kw["resume"],
            device=kw["device"], amp=given.get("amp"), deterministic=kw["deterministic"],
            progress=kw["progress"], tensorboard=kw["tensorboard"], options=options,
            **{name: given.get(name) for name in WATCHING},
        )
        summary = train(cfg)
        from train import distributed as D

        if D.is_main():
            click.echo(f"done: {summary['step']} steps, {summary['epoch']} epochs, "
                       f"{summary['images_per_s']:.1f} images/s; encoder: {cfg.out}/encoder.pt")

    first = summary_line(method)
    examples = "\n".join("  " + line for line in method.examples)
    help_text = f"{first}\n\n{method.data_help()}" + (f"\n\n\b\nExample:\n{examples}" if examples else "")
    params = _common_options(method) + [click_option(f, method.Options) for f in opt_fields
                                        if f.name not in COMMON]
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
