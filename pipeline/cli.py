"""The `pipeline` command: render a set of augmented patches into tar shards, verify it, describe it, preview it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from common.cli_group import ErrorReportingGroup
from common.errors import ShardSetError
from common.options import float_range
from pipeline.config import IMAGENET_SIZE, RenderConfig
from pipeline.shard_writer import SetSummary


class _Part(click.ParamType):
    name = "I/N"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            i, n = (int(v) for v in str(value).split("/"))
        except ValueError:
            self.fail(f"{value!r} is not of the form I/N (e.g. 0/4)", param, ctx)
        if n < 1 or not 0 <= i < n:
            self.fail(f"{value!r}: need N >= 1 and 0 <= I < N", param, ctx)
        return i, n


@click.group(cls=ErrorReportingGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """Render the augmented training set of single-image self-supervision (Asano et al., ICLR 2020).

    \b
    Example: 1,281,167 patches of 256 px from one image, then check and look at them:
      pipeline render --n-src 1 --src ameyoko.jpg --out shards/mono-A
      pipeline verify shards/mono-A
      pipeline preview shards/mono-A --out mono-A.png
    """


@main.command()
@click.option("--n-src", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number of source images N to expand.")
@click.option("--src", "sources", multiple=True, type=click.Path(),
              help="Source image files or folders (searched recursively); repeatable. Default: embedded photos.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder of the set.")
@click.option("--n-patches", type=click.IntRange(min=1), default=IMAGENET_SIZE, show_default=True,
              help="Samples d in the set.")
@click.option("--size", type=click.IntRange(min=8), default=256, show_default=True, help="Patch side S in pixels.")
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True,
              help="Seeds the choice of sources and every patch.")
@click.option("--recipe", type=click.Choice(["paper", "released"]), default="paper", show_default=True,
              help="paper: section 3.1 of the paper; released: the authors' released generator.")
@click.option("--no-scale", is_flag=True, help="No random crop/rescale (paper Table 1 ablation).")
@click.option("--no-rotate", is_flag=True, help="No rotation.")
@click.option("--no-jitter", is_flag=True, help="No colour jitter.")
@click.option("--no-flip", is_flag=True, help="No horizontal flip.")
@click.option("--max-angle", type=float_range(0, 90), default=RenderConfig.max_angle, show_default=True,
              help="Paper recipe: rotation uniform in (-A, A) degrees.")
@click.option("--min-area", type=float_range(0, 1, min_open=True), default=RenderConfig.min_area, show_default=True,
              help="Paper recipe: smallest crop, as a fraction beta of the source's area.")
@click.option("--format", "fmt", type=click.Choice(["jpg", "png"]), default=None,
              help="Image format [default: png at S <= 64, else jpg].")
@click.option("--quality", type=click.IntRange(1, 100), default=90, show_default=True, help="JPEG quality.")
@click.option("--shard-size", type=click.IntRange(min=1), default=10_000, show_default=True, help="Samples per shard.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Render processes [default: all cores].")
@click.option("--part", type=_Part(), default="0/1", show_default=True,
              help="Render only shards s with s mod N == I (0-based, so $JOB_COMPLETION_INDEX or "
                   "$SLURM_ARRAY_TASK_ID can be passed as I). Parts may run at once on one folder.")
@click.option("--min-src-side", type=click.IntRange(min=1), default=None,
              help="Reject sources whose short side is below this [default: max(8, S/4)].")
@click.option("--skip-bad", is_flag=True, help="Replace unusable sources with the next ones of the seeded order.")
@click.option("--force", is_flag=True, help="Replace a different set already in --out.")
def render(n_src, sources, out, n_patches, size, seed, recipe, no_scale, no_rotate, no_jitter, no_flip, max_angle,
           min_area, fmt, quality, shard_size, workers, part, min_src_side, skip_bad, force):
    """Render N source images into d augmented patches, as tar shards plus manifest.json.

    Re-running the same command resumes an interrupted render, and is a no-op on a complete set.

    \b
    Examples:
      pipeline render --n-src 1 --src animals.png --size 32 --n-patches 50000 --out shards/cifar-B
      pipeline render --n-src 10 --src /data/imagenet/train --out shards/deka --part 3/8
    """
    from pipeline.render import default_workers, render_set

    try:
        config = RenderConfig(n_patches=n_patches, size=size, seed=seed, recipe=recipe, scale=not no_scale,
                              rotate=not no_rotate, jitter=not no_jitter, flip=not no_flip, max_angle=max_angle,
                              min_area=min_area, format=fmt, quality=quality, shard_size=shard_size)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    summary = render_set(out, config, sources=list(sources) or None, n_src=n_src,
                         workers=workers or default_workers(), part=part, force=force, progress=True,
                         min_src_side=min_src_side, skip_bad=skip_bad, log=_log)
    _report_written(out, summary, part, "rendered")


@main.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder of the set.")
@click.option("--shard-size", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Samples per shard.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Packing processes [default: all cores].")
@click.option("--part", type=_Part(), default="0/1", show_default=True,
              help="Pack only shards s with s mod N == I (0-based). Parts may run at once on one folder.")
@click.option("--force", is_flag=True, help="Replace a different set already in --out.")
def pack(src, out, shard_size, workers, part, force):
    """Pack a labelled ImageFolder split (SRC/<class>/<image>) into shards, for probes to stream.

    Image files are copied unchanged (.jpg, .jpeg, .png; anything else is refused) after a decode check, each
    with KEY.json {index, label, class, path}; files go in (class, path) order, so the set is byte-identical
    whatever --workers and --part. Re-running resumes an interrupted pack, and is a no-op on a complete set.

    \b
    Examples:
      pipeline pack /data/imagenet/train --out /data/shards/imagenet/train
      pipeline pack /data/imagenet/val --out /data/shards/imagenet/val
      probe linear ENCODER --data shards:/data/shards/imagenet --out probe-out
    """
    from pipeline.pack import pack_set
    from pipeline.render import default_workers

    summary = pack_set(src, out, shard_size=shard_size, workers=workers or default_workers(), part=part,
                       force=force, progress=True, log=_log)
    _report_written(out, summary, part, "packed")


def _log(message: str) -> None:
    click.echo(message, err=True)


def _report_written(out: str, summary: SetSummary, part: tuple[int, int], verb: str) -> None:
    """One line for the shards this call wrote (nothing when it found them all written)."""
    if summary.rendered:
        state = "complete" if summary.complete else f"part {part[0]}/{part[1]} done, other parts pending"
        click.echo(f"{out}: {verb} {summary.rendered} shards ({state})")


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--no-decode", is_flag=True, help="Only re-hash; do not decode every sample.")
def verify(folder, no_decode):
    """Re-hash every shard against the manifest and decode every sample; exit 1 on any problem.

    Example: pipeline verify shards/mono-A
    """
    from pipeline.shard_verify import verify_set

    problems = verify_set(folder, decode=not no_decode, progress=True)
    for p in problems:
        click.echo(p, err=True)
    if problems:
        raise ShardSetError(f"{folder}: {len(problems)} problem(s) found")
    click.echo(f"{folder}: OK")


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
def info(folder):
    """Show a set's configuration, sources, sample counts and bytes.

    Example: pipeline info shards/mono-A
    """
    from pipeline.shard_verify import describe_set

    click.echo(describe_set(folder))


def _sheet_path(ctx, param, value: str) -> str:
    from pipeline.preview import SHEET_FORMATS

    if Path(value).suffix.lower() not in SHEET_FORMATS:
        raise click.BadParameter(f"{value!r} must end in {', '.join(SHEET_FORMATS)} (the sheet's format)")
    return value


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, callback=_sheet_path,
              help="Image file to write: .png, .jpg or .jpeg.")
@click.option("--rows", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--cols", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seeds which samples are shown.")
def preview(folder, out, rows, cols, seed):
    """Draw a contact sheet of random samples of a set (rendered, or packed: each image fitted to a tile).

    Example: pipeline preview shards/mono-A --out mono-A.png
    """
    from pipeline.preview import contact_sheet

    click.echo(str(contact_sheet(folder, out, rows=rows, cols=cols, seed=seed)))


if __name__ == "__main__":
    sys.exit(main())
