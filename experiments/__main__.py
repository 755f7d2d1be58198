"""``python -m experiments TARGET [...]``: the reproduction driver (experiments/cli.py)."""

from experiments.cli import run

run(prog="python -m experiments")
