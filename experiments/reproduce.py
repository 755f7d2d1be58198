"""`python experiments/reproduce.py TARGET [...]` is `python -m experiments TARGET [...]` (experiments/cli.py says
what each target reproduces), kept as a script for the Makefile's targets and the notes that name it."""

import sys
from pathlib import Path

if __name__ == "__main__":
    # a script's own folder heads the path: the package is imported from the repository root instead, and none of
    # its modules under a top-level name
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from experiments.cli import main, run  # noqa: E402 (after the path is set)

__all__ = ["main", "run"]

if __name__ == "__main__":
    run()
