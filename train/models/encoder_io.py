"""The ``encoder.pt`` file: the contract between ``train`` and ``probe``.

A plain dict of builtins and tensors (loadable with ``torch.load(weights_only=True)``)::

    {'format': 'single-image-ssl/encoder', 'version': 1, 'arch': 'alexnet', 'arch_kwargs': {...},
     'state_dict': {name: tensor}, 'config': {...},
     'classifier': {'layers': [{'type': 'flatten'}, {'type': 'linear', 'in': 4096, 'out': 10, 'bias': True}, ...],
                    'state_dict': {name: tensor}}}   # optional

It holds no training-code objects: ``load_encoder`` rebuilds the network from the registry by name.

``classifier`` (optional; files written before it existed, and encoders of methods without a classifier, lack it)
is the head that turns the encoder's ``forward`` output into class scores: an ``nn.Sequential`` described layer by
layer from a small vocabulary (:data:`CLASSIFIER_LAYERS`), so that it too is rebuilt without unpickling code. A
method exports its head by :func:`attach_classifier` on its encoder (``train supervised``, ``train distill``);
:func:`load_classifier` rebuilds encoder and head for ``train distill``'s teacher and ``probe classify``.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from common.errors import EncoderFileError
from common.fileio import atomic_file
from train.models import ENCODERS, build_encoder, output_shape
from train.models.heads import GlobalPool

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
    """``torch.save`` through ``common.fileio.atomic_file``: a reader (or a killed writer) never sees a
    half-written file under the final name, and a failed write (a full disk) is an OSError naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        torch.save(obj, f)


# ---- the classifier an encoder may carry ------------------------------------------------------------------------
CLASSIFIER_ATTRIBUTE = "exported_classifier"
# type -> (module class, the description's fields beyond 'type', how a module gives them, how they build one)
CLASSIFIER_LAYERS: dict[str, tuple[type[nn.Module], Any, Any]] = {
    "flatten": (nn.Flatten, lambda m: {}, lambda d: nn.Flatten()),
    "pool": (GlobalPool, lambda m: {}, lambda d: GlobalPool()),
    "linear": (nn.Linear, lambda m: {"in": m.in_features, "out": m.out_features, "bias": m.bias is not None},
               lambda d: nn.Linear(int(d["in"]), int(d["out"]), bias=bool(d["bias"]))),
    "relu": (nn.ReLU, lambda m: {}, lambda d: nn.ReLU()),
    "dropout": (nn.Dropout, lambda m: {"p": float(m.p)}, lambda d: nn.Dropout(float(d["p"]))),
    "batchnorm1d": (nn.BatchNorm1d, lambda m: {"features": m.num_features, "affine": m.affine},
                    lambda d: nn.BatchNorm1d(int(d["features"]), affine=bool(d["affine"]))),
}


def attach_classifier(encoder: nn.Module, head: nn.Sequential, about: dict[str, Any] | None = None) -> None:
    """Have ``encoder.pt`` carry ``head`` (what ``save_encoder`` writes as 'classifier', with ``about``, e.g. the
    teacher it was distilled from, as its 'about'). Held as a plain attribute, not a submodule: the encoder's own
    state_dict, which probes and checkpoints read, stays the encoder's."""
    describe_classifier(head)  # refuse a head that could not be rebuilt, now rather than at the first save
    object.__setattr__(encoder, CLASSIFIER_ATTRIBUTE, (head, plain(about or {})))


def describe_classifier(head: nn.Sequential) -> list[dict[str, Any]]:
    """The layer list of ``head`` in the file's vocabulary; a ValueError for a layer it cannot hold."""
    if not isinstance(head, nn.Sequential):
        raise ValueError(f"a classifier to export must be an nn.Sequential, not {type(head).__name__}")
    layers = []
    for module in head:
        kind = next((k for k, (cls, _, _) in CLASSIFIER_LAYERS.items() if type(module) is cls), None)
        if kind is None:
            raise ValueError(f"a classifier layer {type(module).__name__} cannot be exported "
                             f"(known: {', '.join(CLASSIFIER_LAYERS)})")
        layers.append({"type": kind, **CLASSIFIER_LAYERS[kind][1](module)})
    return layers


def build_classifier(layers: list[dict[str, Any]]) -> nn.Sequential:
    """The ``nn.Sequential`` a layer list describes (freshly initialised); a ValueError for a malformed list."""
    modules = []
    for i, layer in enumerate(layers):
        kind = layer.get("type") if isinstance(layer, dict) else None
        if kind not in CLASSIFIER_LAYERS:
            raise ValueError(f"classifier layer {i} is {kind!r}, not one of {', '.join(CLASSIFIER_LAYERS)}")
        try:
            modules.append(CLASSIFIER_LAYERS[kind][2](layer))
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"classifier layer {i} ({kind}) is malformed ({_first_line(e)})") from None
    return nn.Sequential(*modules)


def classifier_classes(layers: list[dict[str, Any]]) -> int | None:
    """The class count: the output width of the last linear layer (None: no linear layer)."""
    widths = [int(layer["out"]) for layer in layers if layer.get("type") == "linear"]
    return widths[-1] if widths else None


def classifier_payload(head: nn.Sequential, about: dict[str, Any] | None = None) -> dict[str, Any]:
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in head.state_dict().items()}
    return {"layers": describe_classifier(head), "state_dict": state, **({"about": about} if about else {})}


class EncoderClassifier(nn.Module):
    """An encoder and the classifier it carries: class scores of images in the encoder's input range."""

    def __init__(self, encoder: nn.Module, head: nn.Sequential) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))

    @property
    def input_size(self) -> int:
        return int(self.encoder.input_size)

    @property
    def num_classes(self) -> int:
        return int(classifier_classes(describe_classifier(self.head)) or 0)


def encoder_payload(encoder: nn.Module, arch: str, config: dict | None = None) -> dict[str, Any]:
    encoder = unwrap(encoder)
    if arch not in ENCODERS:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ENCODERS)}")
    built_as = getattr(encoder, "arch", None)
    if built_as is not None and built_as != arch:
        raise ValueError(f"encoder was built as {built_as!r} but is being saved as {arch!r}")
    # Plain contiguous CPU tensors: no channels_last strides, no CUDA device baked into the file.
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in encoder.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "arch_kwargs": plain(getattr(encoder, "arch_kwargs", {})),
        "state_dict": state,
        "config": plain(config or {}),
    }
    carried = getattr(encoder, CLASSIFIER_ATTRIBUTE, None)
    if carried is not None:
        payload["classifier"] = classifier_payload(*carried)
    return payload


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
    classifier = payload.get("classifier")
    if classifier is not None and not (isinstance(classifier, dict) and isinstance(classifier.get("layers"), list)
                                       and isinstance(classifier.get("state_dict"), dict)):
        raise EncoderFileError(f"{path}: malformed encoder file ('classifier' is not a dict of 'layers' and "
                               "'state_dict')")
    return payload


def load_encoder(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an encoder from ``encoder.pt``; returns ``(encoder in eval mode, info)``.

    ``info`` holds ``arch``, ``arch_kwargs``, ``config`` (the training configuration), ``format`` and
    ``version``.
    Raises :class:`~common.errors.EncoderFileError` (one line naming the file and the problem) for a file that
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


def load_classifier(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[EncoderClassifier, dict[str, Any]]:
    """Rebuild an encoder and the classifier its ``encoder.pt`` carries; returns ``(model in eval mode, info)``.

    ``info`` is :func:`load_encoder`'s plus ``classifier_layers`` and ``num_classes``. An encoder file without a
    classifier (a self-supervised run's, or one written before classifiers were exported) is an
    :class:`~common.errors.EncoderFileError` saying so, as is a classifier whose weights do not fit its layers.
    """
    encoder, info = load_encoder(path, map_location=map_location)
    described = read_encoder_file(path, map_location=map_location).get("classifier")
    if described is None:
        raise EncoderFileError(f"{path}: carries no classifier (encoder.pt files of `train supervised` and "
                               f"`train distill` do; a {info['config'].get('method', 'self-supervised')!s} "
                               "encoder has none)")
    try:
        head = build_classifier(described["layers"])
    except ValueError as e:
        raise EncoderFileError(f"{path}: malformed classifier ({e})") from None
    classes = classifier_classes(described["layers"])
    if not classes or classes < 2:
        raise EncoderFileError(f"{path}: its classifier has {classes or 'no'} output classes (at least 2 needed)")
    problem = _mismatch_summary(head, described["state_dict"])
    if problem:
        raise EncoderFileError(f"{path}: classifier weights do not match its layers: {problem}")
    head.load_state_dict(described["state_dict"], strict=True)
    model = EncoderClassifier(encoder, head)
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model.to(map_location)
    model.eval()  # before the check below: a BatchNorm in training mode would fold zeros into its statistics
    try:  # the layers must chain: the encoder's output into the first linear layer, and so on
        with torch.no_grad():
            model.head(torch.zeros(2, *output_shape(encoder)))
    except RuntimeError as e:
        raise EncoderFileError(f"{path}: its classifier does not fit the {info['arch']!r} encoder's output "
                               f"({_first_line(e)})") from None
    return model, {**info, "classifier_layers": described["layers"], "num_classes": classes,
                   "classifier_about": described.get("about", {})}
