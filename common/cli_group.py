"""The boundary of the three command lines (`pipeline`, `train`, `probe`): where the toolkit's errors become one line.

Library code raises the plain exceptions of `common.errors`; the command groups are built with
:class:`ErrorReportingGroup`, which prints each as one line and exits with its status, without a traceback.
"""

from __future__ import annotations

from typing import IO, Any

import click

from common.errors import Interrupted, ToolkitError, one_line


class ReportedError(click.ClickException):
    """A toolkit error as click shows it: ``Error: <message>`` (``Stopped: <message>`` for an interrupted run) and
    the error's exit status."""

    def __init__(self, error: ToolkitError) -> None:
        super().__init__(one_line(error))
        self.exit_code = error.exit_code
        self.label = "Stopped" if isinstance(error, Interrupted) else "Error"

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"{self.label}: {self.format_message()}", file=file, err=True)


class ErrorReportingGroup(click.Group):
    """A command group that reports the toolkit's errors, and a file-system error naming a path (a read-only or full
    disk, an --out below a regular file), as one line: ``Error: PATH: reason`` with exit status 1, an option error
    with 2, an interrupted run as ``Stopped: ...`` with 130. Errors naming no path are bugs, and keep their
    traceback. An error raised in a DataLoader worker (which arrives with the worker's traceback folded into its
    message) is one line too."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            if exc.filename is None:
                raise
            raise click.ClickException(f"{exc.filename}: {exc.strerror or exc}") from None
        except ToolkitError as exc:
            raise ReportedError(exc) from None
