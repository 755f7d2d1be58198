"""CIFAR-10 and CIFAR-100 in their python pickle layout (`cifar-10-batches-py`, `cifar-100-python`).

These are the files torchvision reads; they are read here directly (no download, and no md5 check: users' copies,
re-pickled or subsetted, are legitimate) into uint8 arrays. `train supervised` and `probe` both use this reader.
Unlike torchvision's plain `pickle.load`, a restricted unpickler admits only what the format holds (dicts, lists,
strings, bytes, numbers, and numpy arrays rebuilt by numpy's own reconstruction functions): a file naming any other
global (`os.system`, ...) is refused before anything is called, so reading a crafted folder never runs its code.
"""

from __future__ import annotations

import _codecs
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import DataError

IMAGE_SIDE = 32
_PIXELS = 3 * IMAGE_SIDE * IMAGE_SIDE


@dataclass(frozen=True)
class CifarLayout:
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    names_key: str
    labels_key: str


LAYOUTS = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        names_key="label_names",
        labels_key="labels",
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        names_key="fine_label_names",
        labels_key="fine_labels",
    ),
}


@dataclass(frozen=True)
class CifarSplit:
    images: np.ndarray  # (N, 32, 32, 3) uint8, RGB
    labels: np.ndarray  # (N,) int64


def read_cifar(path: Path, variant: str) -> tuple[CifarSplit, CifarSplit, list[str]]:
    """Train split, test split and class names of the CIFAR pickles at `path`.

    `path` is the pickle folder itself (`cifar-10-batches-py`) or the folder that holds it.
    """
    layout = LAYOUTS[variant]
    folder = _find_folder(Path(path), layout)
    classes = [_text(name) for name in _field(_unpickle(folder / layout.meta_file), layout.names_key,
                                               folder / layout.meta_file)]
    train = _concat([_read_batch(folder / name, layout, len(classes)) for name in layout.train_files])
    test = _read_batch(folder / layout.test_file, layout, len(classes))
    return train, test, classes


def _find_folder(path: Path, layout: CifarLayout) -> Path:
    for candidate in (path, path / layout.folder):
        if (candidate / layout.meta_file).is_file():
            return candidate
    if not path.exists():
        raise DataError(f"{path}: no such folder")
    expected = ", ".join((*layout.train_files, layout.test_file, layout.meta_file))
    raise DataError(f"{path}: not a CIFAR pickle folder (expected {layout.folder}/ holding {expected})")


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global that the CIFAR format never holds."""


def _no_object_dtype(*args) -> np.dtype:
    """numpy.dtype, minus object dtypes: an object array would hold whatever the pickle builds (here only more
    admitted values, but a CIFAR file never needs one)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise RefusedGlobal(f"an object dtype ({dtype})")
    return dtype


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """_codecs.encode as protocol 0-2 pickles use it for bytes (`encode(text, 'latin1')`), and for nothing else:
    another codec name would make the codec registry import a module of that name."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise RefusedGlobal(f"_codecs.encode with {encoding!r}")
    return _codecs.encode(text, "latin1")


def _numpy_globals() -> dict[tuple[str, str], Callable]:
    """What numpy's array and scalar pickles name, under numpy 1's module names (`numpy.core`, the original CIFAR
    files) and numpy 2's (`numpy._core`), mapped to this numpy's functions."""
    core = getattr(np, "_core", None) or np.core
    admitted = {("multiarray", "_reconstruct"): core.multiarray._reconstruct,
                ("multiarray", "scalar"): core.multiarray.scalar,
                # protocol 5 pickles of contiguous arrays; it refuses object dtypes itself
                ("numeric", "_frombuffer"): core.numeric._frombuffer}
    names = {(f"{package}.{module}", name): function for (module, name), function in admitted.items()
             for package in ("numpy.core", "numpy._core")}
    return {**names, ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _no_object_dtype,
            ("_codecs", "encode"): _latin1_encode}


class _CifarUnpickler(pickle.Unpickler):
    """Resolves only the globals of `_numpy_globals`; any other is refused before it is looked up, so no code
    named by the file is imported or called."""

    _admitted = _numpy_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._admitted[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def _plain(value, depth: int = 0) -> bool:
    """Whether `value` holds only what a CIFAR pickle holds (a final check on what the unpickler built)."""
    if depth > 8:
        return False
    if isinstance(value, dict):
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, np.ndarray | np.generic):
        return not value.dtype.hasobject
    return value is None or isinstance(value, str | bytes | int | float)


def _unpickle(file: Path) -> dict:
    if not file.is_file():
        raise DataError(f"{file}: missing CIFAR pickle")
    try:
        with open(file, "rb") as f:
            # latin1 maps the byte strings of the original python 2 pickles one to one
            entry = _CifarUnpickler(f, encoding="latin1").load()
    except RefusedGlobal as exc:
        raise DataError(f"{file}: refused, the pickle names {exc}, which a CIFAR file never holds (a crafted "
                        f"file?); nothing in it was run") from None
    except Exception as exc:  # a truncated or foreign file can fail in many ways
        raise DataError(f"{file}: unreadable CIFAR pickle ({type(exc).__name__}: {exc})") from None
    if not _plain(entry):
        raise DataError(f"{file}: unreadable CIFAR pickle (holds values other than dicts, lists, strings, "
                        f"numbers and arrays)")
    if not isinstance(entry, dict):
        raise DataError(f"{file}: unreadable CIFAR pickle (holds a {type(entry).__name__}, not a dict)")
    return {_text(key): value for key, value in entry.items()}


def _field(entry: dict, key: str, file: Path):
    if key not in entry:
        raise DataError(f"{file}: CIFAR pickle lacks the field {key!r}")
    return entry[key]


def _read_batch(file: Path, layout: CifarLayout, num_classes: int) -> CifarSplit:
    entry = _unpickle(file)
    data = np.asarray(_field(entry, "data", file))
    labels = np.asarray(_field(entry, layout.labels_key, file), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise DataError(f"{file}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, {_PIXELS})")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{file}: {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{file}: labels outside 0..{num_classes - 1}")
    # rows are channel-major (1024 red, 1024 green, 1024 blue); images are wanted as HWC
    images = data.reshape(-1, 3, IMAGE_SIDE, IMAGE_SIDE).transpose(0, 2, 3, 1)
    return CifarSplit(np.ascontiguousarray(images), labels)


def _concat(splits: list[CifarSplit]) -> CifarSplit:
    return CifarSplit(np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits]))


def _text(value) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)
