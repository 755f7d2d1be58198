"""Errors the trainers raise for a user's mistake: one line, shown by the CLI without a traceback."""

from __future__ import annotations

import click


class TrainError(click.ClickException):
    """Base class: a one-line, user-facing message (click prints ``Error: <message>``)."""

    def __str__(self) -> str:
        return self.message


class EncoderFileError(TrainError, ValueError):
    """An ``encoder.pt`` that is unreadable, not an encoder, or does not match its architecture."""


class CheckpointError(TrainError, ValueError):
    """A checkpoint that cannot be resumed from (missing, other method/architecture, corrupt)."""


class DataError(TrainError):
    """An input set that is empty, unverified or otherwise unusable."""


class NonFiniteLossError(TrainError):
    """The loss became NaN/inf; training stopped and the last good checkpoint was kept."""


class OptionError(TrainError, ValueError):
    """An option value outside what the method or the loop can use: a usage error (exit status 2), raised before
    any work, worded as click words its own range errors."""

    exit_code = 2
