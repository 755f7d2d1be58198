"""Number ranges declared once and enforced twice: by click when a command line is parsed (a usage error, exit
status 2, before any work) and by the dataclasses the Python API builds (``Bounds.problem``).

Shared by the three command lines (``pipeline``, ``train``, ``probe``); ``pipeline`` imports neither of the others,
so the types live here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import click


@dataclass(frozen=True)
class Bounds:
    """The legal values of a numeric option: a range (open or closed at either end, unbounded where None), and
    optionally one value outside it that means "chosen automatically" (``auto``, e.g. 0 for DeepCluster's k)."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    auto: float | None = None

    def describe(self) -> str:
        if self.min is None and self.max is None:
            text = "any finite number"
        elif self.min is None:
            text = f"x{'<' if self.max_open else '<='}{self.max}"
        elif self.max is None:
            text = f"x{'>' if self.min_open else '>='}{self.min}"
        else:
            text = f"{self.min}{'<' if self.min_open else '<='}x{'<' if self.max_open else '<='}{self.max}"
        return text if self.auto is None else f"{self.auto} (automatic) or {text}"

    def contains(self, value: float) -> bool:
        if self.auto is not None and value == self.auto:
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.min is not None and (value <= self.min if self.min_open else value < self.min):
            return False
        return not (self.max is not None and (value >= self.max if self.max_open else value > self.max))

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused (click's wording), or None when it is legal."""
        return None if self.contains(value) else f"{value!r} is not in the range {self.describe()}."


class _BoundsMixin:
    """A click number range that also admits the ``auto`` value and refuses nan and inf (click's own ranges compare
    nan as inside any range)."""

    bounds: Bounds

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = self._number.convert(value, param, ctx)  # type: ignore[attr-defined]
        if not self.bounds.contains(number):
            self.fail(f"{number} is not in the range {self.bounds.describe()}.", param, ctx)  # type: ignore[attr-defined]
        return number

    def _describe_range(self) -> str:
        return self.bounds.describe()


class CheckedInt(_BoundsMixin, click.IntRange):
    _number = click.INT

    def __init__(self, bounds: Bounds) -> None:
        super().__init__(bounds.min, bounds.max, bounds.min_open, bounds.max_open)
        self.bounds = bounds
        self.auto = bounds.auto


class CheckedFloat(_BoundsMixin, click.FloatRange):
    _number = click.FLOAT

    def __init__(self, bounds: Bounds) -> None:
        super().__init__(bounds.min, bounds.max, bounds.min_open, bounds.max_open)
        self.bounds = bounds
        self.auto = bounds.auto


def int_range(min: int | None = None, max: int | None = None, auto: int | None = None) -> CheckedInt:
    return CheckedInt(Bounds(min, max, auto=auto))


def float_range(min: float | None = None, max: float | None = None, *, min_open: bool = False,
                max_open: bool = False) -> CheckedFloat:
    return CheckedFloat(Bounds(min, max, min_open, max_open))


class IntList(click.ParamType):
    """Comma-separated integers, each within ``bounds`` and, with ``increasing``, strictly increasing."""

    name = "INT,INT,..."

    def __init__(self, bounds: Bounds, increasing: bool = False) -> None:
        self.bounds, self.increasing = bounds, increasing

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        if isinstance(value, (list, tuple)):
            return list(value)
        try:
            items = [int(v) for v in str(value).split(",") if v.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        bad = [v for v in items if not self.bounds.contains(v)]
        if bad:
            where = f" (in {value})" if len(items) > 1 else ""
            self.fail(f"{bad[0]}{where} is not in the range {self.bounds.describe()}.", param, ctx)
        if self.increasing and any(b <= a for a, b in zip(items, items[1:], strict=False)):
            self.fail(f"{value} is not strictly increasing.", param, ctx)
        return items


# Seeds of train and probe: torch generators take 64-bit seeds, and the trainers derive per-epoch streams from
# seed * 1,000,003; 32 bits keep every derived seed in range (faiss, whose seed is a C int, gets it modulo 2**31).
SEED = int_range(0, 2**32 - 1)
