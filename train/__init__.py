"""Training: encoder architectures, self-supervised methods, the training loop and the ``train`` CLI.

Import direction: ``train`` may use ``pipeline`` (the shard reader), never ``probe``.

The names below are imported (with torch) on first use, not with the package, so that ``train --help`` and the
light modules start without torch.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"load_encoder": "train.models.encoder_io", "save_encoder": "train.models.encoder_io",
         "ENCODERS": "train.models", "build_encoder": "train.models"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ENCODERS", "build_encoder", "load_encoder", "save_encoder"]
