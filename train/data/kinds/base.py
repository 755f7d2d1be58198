"""The contract of a data kind: what one `KIND:PATH` prefix means to `probe` and `train`.

A kind declares its prefix (``name``), one line saying what PATH is (``summary``), its entry in `probe --data`'s
help (``probe_help``) and the evaluation style `probe` uses on it (``style``), and opens a set: ``open`` gives the
train and test splits as map-style datasets of (PIL RGB image, class index), or streamed ones, with the class names
(:class:`train.data.specs.LabelledData`). That is all a new kind must write: the self-supervised methods' reader
(``train_split``) and `train supervised`'s (``labelled_source``) default to reading the train split ``open`` gives.
A kind whose sets are large overrides them with a reader of its own (file lists decoded in the workers, a stream).

This module and the kinds' modules import no reader at module level: `probe --help` lists the kinds from the
registry, and must start without torch (tests/train/test_new_method.py); the readers are imported by the methods that
read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from common.errors import DataError

if TYPE_CHECKING:
    from train.data.real_sets import RealSplit
    from train.data.sources import Source
    from train.data.specs import DataSpec, LabelledData


class DataKind:
    """One kind of data set named `KIND:PATH`. Subclasses set the class attributes and implement :meth:`open`;
    ``@register_kind`` (:mod:`train.data.kinds`) makes the prefix known to `train` and `probe`."""

    name: ClassVar[str] = ""  # the KIND of KIND:PATH
    summary: ClassVar[str] = ""  # what PATH is, one line (train.data.specs.KINDS, docs)
    # its entry in `probe --data`'s help, after the name; kinds listed one after the other with the same text share
    # one entry ("cifar10 / cifar100 (python pickles)"). Empty: the summary.
    probe_help: ClassVar[str] = ""
    # how `probe` evaluates on it: "cifar" (native 32x32 images, no augmentation, no dimensionality reduction) or
    # "imagenet" (shorter side to 256, random 224 crops and flips to train, 10 crops to test)
    style: ClassVar[Literal["cifar", "imagenet"]] = "imagenet"
    # PATH names a folder that train.data.sources.LabelledSource reads (CIFAR pickles or class folders, told apart by
    # their layout), found by labelled_root: the k-NN monitor's --knn-data takes KIND:PATH for these kinds
    labelled_folder: ClassVar[bool] = False

    @classmethod
    def parse_path(cls, path: str) -> Path | str:
        """PATH as the reader takes it: a local path with `~` expanded, or the text itself for an http(s) URL
        (which a Path would mangle)."""
        return path if "://" in path else Path(path).expanduser()

    @classmethod
    def open(cls, spec: DataSpec, cache_dir: Path | None = None) -> LabelledData:
        """The train and test splits of the set `spec` names, its layout checked up front (a one-line DataError
        naming the file and the problem). `cache_dir`: where archives are extracted (None: the default)."""
        raise NotImplementedError

    @classmethod
    def train_split(cls, spec: DataSpec, load_size: int) -> RealSplit:
        """The train split as the self-supervised methods read it (train.data.real_sets.RealImageSource), each image
        brought to `load_size` px. By default the train split of :meth:`open`."""
        from train.data.real_sets import dataset_split

        data = cls.open(spec)
        return dataset_split(str(spec), data.train, data.classes, load_size)

    @classmethod
    def labelled_root(cls, path: Path) -> Path:
        """For a ``labelled_folder`` kind, the folder LabelledSource reads for PATH (an archive extracted first)."""
        return path

    @classmethod
    def labelled_source(cls, spec: DataSpec, load_size: int) -> Source:
        """The train split as `train supervised` reads it (`train supervised KIND:PATH`), each image brought to
        `load_size` px: the folder LabelledSource reads, or by default the train split of :meth:`open`."""
        from torch.utils.data import IterableDataset

        from train.data.sources import LabelledSource

        if cls.labelled_folder:
            return LabelledSource(cls.labelled_root(Path(spec.path)), load_size)
        data = cls.open(spec)
        if isinstance(data.train, IterableDataset):
            raise DataError(f"{spec}: a streamed set; `train supervised` reads a set by index (a folder or arrays)")
        return LabelledSource.from_dataset(data.train, data.classes, load_size, name=str(spec), kind=cls.name)
