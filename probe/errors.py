"""The errors `probe` reports to its user as one line: what file, what went wrong."""

from __future__ import annotations


class ProbeError(Exception):
    """A problem with the user's input (data, encoder, arguments), reported without a traceback."""


class DataError(ProbeError):
    """A data set that is missing, incomplete or unreadable."""


class EncoderError(ProbeError):
    """An encoder that cannot be loaded or does not fit the requested evaluation."""


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
