"""Materialization pipeline: render N source images into a full-size augmented training set of tar shards.

The shard format (`pipeline.shard_format`, described in docs/architecture.md) is the contract with `train/` and
`probe/`; `pipeline.shard_reader` is the reader they use.
"""
