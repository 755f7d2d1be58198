"""Materialization pipeline: render N source images into a full-size augmented training set of tar shards.

The shard format (see DESIGN.md) is the contract with `train/` and `probe/`; `pipeline.shards` is the reader they use.
"""

FORMAT_VERSION = 1
