"""The ``encoder.pt`` file: the contract between ``train`` and ``probe``.

A plain dict of builtins and tensors (loadable with ``torch.load(weights_only=True)``)::

    {'format': 'single-image-ssl/encoder', 'version': 1, 'arch': 'alexnet', 'arch_kwargs': {...},
     'state_dict': {name: tensor}, 'config': {...}}

It holds no training-code objects: ``load_encoder`` rebuilds the network from the registry by name.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.fileio import atomic_file
from train.errors import EncoderFileError
from train.models import ENCODERS, build_encoder

FORMAT = "single-image-ssl/encoder"
VERSION = 1


def plain(obj: Any) -> Any:
    """Reduce a config to what ``weights_only`` unpickling accepts: dict/list/str/int/float/bool/None."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalars
        return obj.item()
    return str(obj)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through ``pipeline.fileio.atomic_file``: a reader (or a killed writer) never sees a
    half-written file under the final name, and a failed write (a full disk) is an OSError naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        torch.save(obj, f)


def encoder_payload(encoder: nn.Module, arch: str, config: dict | None = None) -> dict[str, Any]:
    encoder = unwrap(encoder)
    if arch not in ENCODERS:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ENCODERS)}")
    built_as = getattr(encoder, "arch", None)
    if built_as is not None and built_as != arch:
        raise ValueError(f"encoder was built as {built_as!r} but is being saved as {arch!r}")
    # Plain contiguous CPU tensors: no channels_last strides, no CUDA device baked into the file.
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in encoder.state_dict().items()}
    return {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "arch_kwargs": plain(getattr(encoder, "arch_kwargs", {})),
        "state_dict": state,
        "config": plain(config or {}),
    }


def save_encoder(path: str | os.PathLike, encoder: nn.Module, arch: str, config: dict | None = None) -> None:
    """Write ``encoder.pt`` atomically: weights, architecture name and kwargs, and the training config."""
    atomic_torch_save(encoder_payload(encoder, arch, config), path)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _mismatch_summary(model: nn.Module, state: dict[str, Any]) -> str | None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        parts.append(f"{len(shapes)} of another shape (e.g. {shapes[0]}, file vs architecture)")
    return "; ".join(parts) or None


_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_TORCH_DETAIL = re.compile(r"WeightsUnpickler error:\s*([^\n]*\S)|(PytorchStreamReader failed [^.:]*)")


def load_torch_file(path: str | os.PathLike, what: str, error: type[Exception], map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, every failure one line naming the file, raised as ``error``.

    ``weights_only`` admits tensors and plain containers only, so a file naming any other global (``os.system``,
    a class) is refused before anything it names is imported or called; the message says so. torch's own message
    for such files advises retrying with ``weights_only=False``, which would run the file's code: it is never
    relayed, only the reason (the global refused, the opcode or archive record that failed).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": a second line for a refused file
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as e:
        if e.filename is not None:  # opening the file failed (permissions, a folder, an I/O error)
            raise error(f"{path}: cannot read the {what} ({e.strerror or type(e).__name__})") from None
        # else torch's reader choked on the content (a damaged zip record seeks outside the file: EINVAL)
        raise error(f"{path}: not a readable {what} (not a torch file, or truncated or corrupt: "
                    f"{e.strerror or type(e).__name__})") from None
    except Exception as e:  # torch raises many kinds for a non-torch, truncated or crafted file
        text = str(e)
        blocked = _BLOCKED_GLOBAL.search(text) if isinstance(e, pickle.UnpicklingError) else None
        if blocked:
            raise error(f"{path}: refused, the file names {blocked.group(1)}, which no {what} holds (a "
                        f"crafted file?); nothing in it was run") from None
        found = _TORCH_DETAIL.search(text)
        detail = (found.group(1) or found.group(2)).strip() if found else type(e).__name__
        raise error(f"{path}: not a readable {what} (not a torch file, or truncated or corrupt: {detail})") \
            from None


def read_encoder_file(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The validated payload dict of an ``encoder.pt`` (no model built)."""
    path = Path(path)
    if not path.is_file():
        raise EncoderFileError(f"{path}: no such encoder file")
    payload = load_torch_file(path, "encoder file", EncoderFileError, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = f"format {payload.get('format')!r}" if isinstance(payload, dict) else type(payload).__name__
        hint = " (a training checkpoint? use the run's encoder.pt)" if isinstance(payload, dict) and (
            "model" in payload or "method" in payload) else ""
        raise EncoderFileError(f"{path}: not an encoder file (expected format {FORMAT!r}, "
                               f"found {what}){hint}")
    if payload.get("version") != VERSION:
        raise EncoderFileError(f"{path}: encoder file version {payload.get('version')!r} is not supported "
                               f"(this code reads version {VERSION})")
    for key, kind in (("arch", str), ("arch_kwargs", dict), ("state_dict", dict), ("config", dict)):
        if not isinstance(payload.get(key), kind):
            raise EncoderFileError(
                f"{path}: malformed encoder file ({key!r} missing or not a {kind.__name__})")
    if payload["arch"] not in ENCODERS:
        raise EncoderFileError(
            f"{path}: unknown architecture {payload['arch']!r} (known: {sorted(ENCODERS)})")
    return payload


def load_encoder(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an encoder from ``encoder.pt``; returns ``(encoder in eval mode, info)``.

    ``info`` holds ``arch``, ``arch_kwargs``, ``config`` (the training configuration), ``format`` and
    ``version``.
    Raises :class:`~train.errors.EncoderFileError` (one line naming the file and the problem) for a file that
    is not an encoder or whose weights do not match its architecture.
    """
    payload = read_encoder_file(path, map_location=map_location)
    try:
        model = build_encoder(payload["arch"], **payload["arch_kwargs"])
    except (TypeError, ValueError) as e:
        raise EncoderFileError(f"{path}: cannot build {payload['arch']!r} with {payload['arch_kwargs']} "
                               f"({_first_line(e)})") from None
    problem = _mismatch_summary(model, payload["state_dict"])
    if problem:
        raise EncoderFileError(f"{path}: weights do not match architecture {payload['arch']!r}: {problem}")
    model.load_state_dict(payload["state_dict"], strict=True)
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model.to(map_location)
    model.eval()
    info = {k: payload[k] for k in ("format", "version", "arch", "arch_kwargs", "config")}
    return model, info
