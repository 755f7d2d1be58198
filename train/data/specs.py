"""Data sets named on the command line as `KIND:PATH`: the one parser of `train` and `probe` (`--data`).

`DataSpec.parse` reads the name; `open_data` opens the train and test splits of a labelled set, checking its layout
up front. What each KIND means is one file of `train/data/kinds/` (or a plugin file): its reader, its train and test
splits and the evaluation style `probe` uses on it (`cifar`: native 32x32 images, no augmentation, no
dimensionality reduction; `imagenet`: shorter side to 256, random 224 crops and flips to train, 10 crops to test).
`train` reads the train split of the same specification (`train.data.real_sets`). Splits are map-style datasets,
except packed shards (`shards:`), which are streamed. `KINDS` is the registry of kinds (prefix -> kind class).

This module imports no reader (nor torch): `probe --help` imports it through the kinds' help.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import DataError
from train.data.kinds import KINDS, DataKind

if TYPE_CHECKING:
    from torch.utils.data import Dataset


@dataclass(frozen=True)
class DataSpec:
    kind: str
    path: Path | str  # a str for an http(s) URL or a shards split list, which a Path would mangle
    given: str = field(default="", compare=False)  # PATH as the user wrote it (`~` unexpanded), for artefacts

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        kind, sep, path = text.partition(":")
        if not sep or not path:
            raise DataError(f"{text}: expected KIND:PATH with KIND one of {', '.join(KINDS)}")
        if kind not in KINDS:
            raise DataError(f"{text}: unknown data set kind {kind!r}; choose one of {', '.join(KINDS)}")
        return cls(kind, KINDS[kind].parse_path(path), path)

    @property
    def data_kind(self) -> type[DataKind]:
        """The registered kind that reads this set (train.data.kinds)."""
        return KINDS[self.kind]

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}"


@dataclass
class LabelledData:
    """Train and test splits yielding (PIL RGB image, class index), with the class names they share."""

    spec: DataSpec
    classes: list[str]
    train: Dataset
    test: Dataset
    style: str  # "cifar" or "imagenet"
    notes: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What results.json records of the data. The cifar10-jpg extraction is named by its folder in the cache
        (its archives' digest), not by this machine's absolute path (issue 32); `notes` keep the path in memory."""
        notes = dict(self.notes)
        if "extracted_to" in notes:
            notes["extracted_to"] = Path(notes["extracted_to"]).name
        return {
            "kind": self.spec.kind,
            "path": self.spec.given or str(self.spec.path),
            "style": self.style,
            "num_classes": len(self.classes),
            "train_size": len(self.train),
            "test_size": len(self.test),
            **notes,
        }


def open_data(spec: DataSpec | str, cache_dir: Path | None = None) -> LabelledData:
    """Open the data set named by `spec`, checking its layout up front (its kind's reader: train.data.kinds)."""
    spec = DataSpec.parse(spec) if isinstance(spec, str) else spec
    return spec.data_kind.open(spec, cache_dir)


def is_data_spec(text: str) -> bool:
    """Whether `text` names a data set as `KIND:PATH` with a known KIND (else, for `train`, a rendered set)."""
    kind, sep, _ = str(text).partition(":")
    return bool(sep) and kind in KINDS


def labelled_set_spec(data: str | Path) -> DataSpec | None:
    """`train supervised DATA`: the specification `data` names when it is `KIND:PATH` of a registered kind, read by
    its kind; None for a folder (an existing path is never read as a specification), which LabelledSource reads by
    its layout as before."""
    text = str(data)
    if not is_data_spec(text) or Path(text).expanduser().exists():
        return None
    return DataSpec.parse(text)
