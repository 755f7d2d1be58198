"""`cifar10:PATH`: CIFAR-10 as the python pickles of its distribution (train.data.cifar_pickle)."""

from __future__ import annotations

from pathlib import Path

from train.data.kinds import register_kind
from train.data.kinds.base import DataKind
from train.data.specs import DataSpec, LabelledData


@register_kind
class Cifar10(DataKind):
    name = "cifar10"
    summary = "CIFAR-10 python pickles: PATH is cifar-10-batches-py/ or the folder holding it"
    probe_help = "python pickles"
    style = "cifar"
    labelled_folder = True  # LabelledSource tells CIFAR-10 from CIFAR-100 pickles by their layout

    @classmethod
    def open(cls, spec: DataSpec, cache_dir: Path | None = None) -> LabelledData:
        from train.data.cifar_pickle import read_cifar
        from train.data.sources import ArrayImages

        # the whole set is a few hundred MB of arrays: the default train_split reads them from here
        train, test, classes = read_cifar(spec.path, cls.name)
        return LabelledData(spec, classes, ArrayImages(train.images, train.labels),
                            ArrayImages(test.images, test.labels), style=cls.style)
