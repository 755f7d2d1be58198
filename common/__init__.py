"""The toolkit's shared kernel, below every other package: its errors (`common.errors`), typed options that become
command-line flags (`common.options`), crash-safe file writing and run-folder locks (`common.fileio`), content
hashing (`common.hashing`) and the click group that turns errors into one-line messages (`common.cli_group`).

It imports nothing of `pipeline`, `train` or `probe` (tests/test_layering.py), so each of them may use it.
"""
