"""`make demo` (`python experiments/demo.py [...]`): experiments/make_demo.py, run as a script."""

import sys
from pathlib import Path

if __name__ == "__main__":
    # a script's own folder heads the path: the package is imported from the repository root instead, and none of
    # its modules under a top-level name
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from experiments.make_demo import main  # noqa: E402 (after the path is set)

__all__ = ["main"]

if __name__ == "__main__":
    main()
