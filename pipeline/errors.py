"""Errors that carry a one-line, user-facing message naming the file and the problem."""

import click


class PipelineError(click.ClickException):
    """Base class: the CLI prints `Error: <message>` and exits with status 1."""


class SourceImageError(PipelineError):
    """A source image that cannot be used (corrupt, truncated, too small, a decompression bomb...)."""


class ShardSetError(PipelineError):
    """A rendered set that is missing, incomplete, altered, or holds a different configuration."""
