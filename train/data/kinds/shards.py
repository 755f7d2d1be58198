"""`shards:PATH`: labelled splits packed by `pipeline pack`, streamed (train.data.packed_sets)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from train.data.kinds import register_kind
from train.data.kinds.base import DataKind
from train.data.specs import DataSpec, LabelledData

if TYPE_CHECKING:
    from train.data.real_sets import RealSplit


@register_kind
class Shards(DataKind):
    name = "shards"
    summary = ("ImageNet-style splits packed by `pipeline pack`, streamed: PATH (a folder or an http(s) URL) holds "
               "train/ and val/ (or test/) sets, or PATH is 'train=SPLIT;val=SPLIT', each SPLIT a folder, an http(s) "
               "URL or a webdataset URL pattern (brace range, pipe: command) followed by ';train-manifest=M' / "
               "';val-manifest=M'")
    probe_help = ("PATH/train and PATH/val packed by `pipeline pack`, PATH a folder or an http(s) URL, streamed; or "
                  "each split on its own: 'shards:train=SPLIT;val=SPLIT', SPLIT a folder, URL, or URL pattern with "
                  "';train-manifest=M' / ';val-manifest=M'")

    @classmethod
    def parse_path(cls, path: str) -> Path | str:
        # a split list names URL patterns and commands, which a Path would mangle (`//` folded, `~` expanded)
        from train.data.packed_sets import is_split_list

        return path if is_split_list(path) else super().parse_path(path)

    @classmethod
    def open(cls, spec: DataSpec, cache_dir: Path | None = None) -> LabelledData:
        from train.data.packed_sets import open_shard_splits

        classes, train, test = open_shard_splits(str(spec.path))
        return LabelledData(spec, classes, train, test, style=cls.style,
                            notes={"streamed": True, "train_location": train.location,
                                   "test_location": test.location})

    @classmethod
    def train_split(cls, spec: DataSpec, load_size: int) -> RealSplit:
        """The train split's shards, streamed and decoded in the loader workers; counts and classes from its
        manifest."""
        from train.data.real_sets import shard_split

        return shard_split(str(spec.path))
