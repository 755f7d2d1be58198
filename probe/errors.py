"""The errors `probe` reports to its user as one line: what file, what went wrong."""

from __future__ import annotations

from pipeline.errors import one_line

__all__ = ["DataError", "EncoderError", "ProbeError", "one_line"]


class ProbeError(Exception):
    """A problem with the user's input (data, encoder, arguments), reported without a traceback."""


class DataError(ProbeError):
    """A data set that is missing, incomplete or unreadable."""


class EncoderError(ProbeError):
    """An encoder that cannot be loaded or does not fit the requested evaluation."""
