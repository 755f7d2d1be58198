"""Errors that carry a one-line, user-facing message naming the file and the problem."""

import click


class PipelineError(click.ClickException):
    """Base class: the CLI prints `Error: <message>` and exits with status 1."""


class FileErrorGroup(click.Group):
    """A command group that reports a file-system error naming a path (a read-only or full disk, an --out below a
    regular file) as one 'Error: PATH: reason' line with exit status 1, as the tools' own errors are reported,
    instead of a traceback. Errors naming no path are bugs, and keep their traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OSError as exc:
            if exc.filename is None:
                raise
            raise click.ClickException(f"{exc.filename}: {exc.strerror or exc}") from None


class SourceImageError(PipelineError):
    """A source image that cannot be used (corrupt, truncated, too small, a decompression bomb...)."""


class ShardSetError(PipelineError):
    """A rendered set that is missing, incomplete, altered, or holds a different configuration."""
