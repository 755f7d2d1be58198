"""Errors that carry a one-line, user-facing message naming the file and the problem."""

import click


class PipelineError(click.ClickException):
    """Base class: the CLI prints `Error: <message>` and exits with status 1."""


def one_line(error: BaseException) -> str:
    """The message of `error` as a single line.

    DataLoader workers re-raise a worker's exception with the worker's traceback folded into the message; the
    original message is then its last line, prefixed by the exception's qualified name.
    """
    lines = [line for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    last = lines[-1].strip()
    prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
    return last.removeprefix(prefix)


class FileErrorGroup(click.Group):
    """A command group that reports a file-system error naming a path (a read-only or full disk, an --out below a
    regular file) as one 'Error: PATH: reason' line with exit status 1, as the tools' own errors are reported,
    instead of a traceback. Errors naming no path are bugs, and keep their traceback. A tool's own error raised
    in a DataLoader worker (which arrives with the worker's traceback folded into its message) is one line too."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OSError as exc:
            if exc.filename is None:
                raise
            raise click.ClickException(f"{exc.filename}: {exc.strerror or exc}") from None
        except click.ClickException as exc:
            if "\n" in exc.message:
                exc.message = one_line(exc)
            raise


class SourceImageError(PipelineError):
    """A source image that cannot be used (corrupt, truncated, too small, a decompression bomb...)."""


class ShardSetError(PipelineError):
    """A rendered set that is missing, incomplete, altered, or holds a different configuration."""
