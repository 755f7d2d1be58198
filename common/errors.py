"""The toolkit's errors: one hierarchy of plain exceptions, each carrying a one-line message that names the file
(or option) and the problem.

Library code in `pipeline`, `train` and `probe` raises these and nothing CLI-specific; each command line turns
them into one line at its boundary (`common.cli_group.ErrorReportingGroup`): ``Error: <message>`` with exit
status ``exit_code`` (1; 2 for an option error, as for click's own usage errors), or ``Stopped: <message>`` with
130 for an interrupted run.

    ToolkitError
    |-- DataError               an input that is missing, incomplete, unreadable or unusable
    |   |-- SourceImageError    an image that cannot be used (corrupt, truncated, a decompression bomb...)
    |   `-- ShardSetError       a set of shards that is missing, incomplete, altered or another configuration
    |       `-- RemoteReadError a set's file that could not be read over http(s) (status, timeout, too slow...)
    |-- EncoderError            an encoder that cannot be built, or does not fit the evaluation asked for
    |   `-- EncoderFileError    an encoder.pt that is unreadable, not an encoder, or not its architecture
    |-- CheckpointError         a checkpoint that cannot be resumed from
    |-- OptionError             an option value outside what can be used (exit status 2)
    |-- DeviceError             a device that is not there, or not this process's
    |-- NonFiniteLossError      the loss became NaN or infinite
    `-- Interrupted             stopped on a signal after saving (exit status 130)
"""

from __future__ import annotations

from typing import ClassVar


class ToolkitError(Exception):
    """Base class: a problem with the user's input or environment, reported as one line without a traceback."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class DataError(ToolkitError):
    """An input (data set, image, results file) that is missing, incomplete, unreadable or otherwise unusable."""


class SourceImageError(DataError):
    """An image that cannot be used (corrupt, truncated, too small, a decompression bomb...)."""


class ShardSetError(DataError):
    """A set of shards that is missing, incomplete, altered, or holds a different configuration."""


class RemoteReadError(ShardSetError):
    """A manifest or shard that could not be read over http(s): an HTTP error status, a timeout, a transfer too
    slow, a refused redirect; the message names the URL and the attempts made."""


class EncoderError(ToolkitError):
    """An encoder that cannot be built or loaded, or does not fit the requested evaluation."""


class EncoderFileError(EncoderError, ValueError):
    """An ``encoder.pt`` that is unreadable, not an encoder, or does not match its architecture."""


class CheckpointError(ToolkitError, ValueError):
    """A checkpoint that cannot be resumed from (missing, other method/architecture, corrupt)."""


class OptionError(ToolkitError, ValueError):
    """An option value outside what the method or the loop can use: a usage error (exit status 2), raised before
    any work, worded as click words its own range errors."""

    exit_code = 2


class FolderInUseError(ToolkitError):
    """An output folder another process is writing (its lock names the holder): a second writer would interleave
    or replace its files."""


class DeviceError(ToolkitError):
    """A device that is malformed, not visible, or (under torchrun) not this process's."""


class NonFiniteLossError(ToolkitError):
    """The loss became NaN/inf; training stopped and the last good checkpoint was kept."""


class PluginError(ToolkitError):
    """A plugin named in SINGLE_IMAGE_SSL_PLUGINS that is missing, not a .py file, or fails to import."""


class Interrupted(ToolkitError):
    """The run stopped on a signal after saving a checkpoint; ``--resume`` continues it. Not a failure: the command
    lines report it as ``Stopped: <message>``."""

    exit_code = 130  # the shell's convention for a process ended by SIGINT


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
