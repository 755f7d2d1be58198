"""Options declared once, as dataclass fields, and enforced twice: by click when a command line is parsed (a usage
error, exit status 2, before any work) and by the dataclasses the Python API builds.

A field made with :func:`opt` carries its help text and its legal values (a number range, a list of choices, an
increasing list of integers); :func:`check_fields` refuses what they do not allow, with click's wording, and
:func:`click_option` makes the field's command-line option. Shared by the three command lines (``pipeline``,
``train``, ``probe``); ``pipeline`` imports neither of the others, so the helpers live here.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

import click

from common.errors import OptionError


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

    def __init__(self, bounds: Bounds) -> None:
        super().__init__(bounds.min, bounds.max, bounds.min_open, bounds.max_open)  # type: ignore[call-arg]
        self.bounds = bounds
        self.auto = bounds.auto

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = self._number.convert(value, param, ctx)  # type: ignore[attr-defined]
        if not self.bounds.contains(number):
            self.fail(f"{number} is not in the range {self.bounds.describe()}.", param, ctx)  # type: ignore[attr-defined]
        return number

    def _describe_range(self) -> str:
        return self.bounds.describe()


class CheckedInt(_BoundsMixin, click.IntRange):
    _number = click.INT


class CheckedFloat(_BoundsMixin, click.FloatRange):
    _number = click.FLOAT


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
        problem = int_list_problem(items, self.bounds, self.increasing, shown=str(value))
        if problem:
            self.fail(problem, param, ctx)
        return items


def int_list_problem(items: list[int], bounds: Bounds, increasing: bool, shown: str | None = None) -> str | None:
    """Why the integers `items` are refused (click's wording; `shown` is how the list was written), or None."""
    shown = ",".join(map(str, items)) if shown is None else shown
    for item in items:
        if not bounds.contains(item):
            where = f" (in {shown})" if len(items) > 1 else ""
            return f"{item}{where} is not in the range {bounds.describe()}."
    if increasing and any(b <= a for a, b in zip(items, items[1:], strict=False)):
        return f"{shown} is not strictly increasing."
    return None


# Seeds of train and probe: torch generators take 64-bit seeds, and the trainers derive per-epoch streams from
# seed * 1,000,003; 32 bits keep every derived seed in range (faiss, whose seed is a C int, gets it modulo 2**31).
SEED = int_range(0, 2**32 - 1)


def opt(default: Any, help: str, *, min: float | None = None, max: float | None = None, min_open: bool = False,
        max_open: bool = False, auto: float | None = None, choices: tuple[str, ...] | None = None,
        increasing: bool = False, negative: str | None = None) -> Any:
    """A dataclass field with command-line help text and its legal values, declared once: the command line gets a
    click range or choice from them (:func:`click_option`) and :func:`check_fields` refuses the same values from
    the Python API.

    Numbers: ``min``/``max`` (open with ``min_open``/``max_open``) and ``auto``, a value outside the range that
    means "chosen automatically". Lists (or tuples) of integers: every item within ``min``/``max``, and with
    ``increasing`` strictly increasing. Text: one of ``choices``; text without choices is free (a layer name, checked
    where it is used). On/off: ``negative`` names the flag that turns it off (default ``--no-NAME``).
    """
    bounds = Bounds(min, max, min_open, max_open, auto)
    meta = {"help": help, "bounds": bounds, "choices": tuple(choices) if choices else None,
            "increasing": increasing, "negative": negative}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag(name: str) -> str:
    """The command-line flag of a field: ``--`` and the name with dashes."""
    return "--" + name.replace("_", "-")


def _is_int_list(kind: Any) -> bool:
    return kind in (list, tuple) or typing.get_origin(kind) in (list, tuple)


def value_problem(f: dataclasses.Field, kind: Any, value: Any) -> str | None:
    """Why ``value`` is not legal for the option field ``f`` of type ``kind`` (None when it is)."""
    bounds: Bounds = f.metadata.get("bounds", Bounds())
    if kind is bool:
        return None if isinstance(value, bool) else f"{value!r} is not a boolean."
    if kind is str:
        choices = f.metadata.get("choices")
        if not isinstance(value, str) or (choices and value not in choices):
            return f"{value!r} is not one of {', '.join(map(repr, choices or ()))}."
        return None
    if _is_int_list(kind):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                           for v in value):
            return f"{value!r} is not a list of integers."
        return int_list_problem(list(value), bounds, f.metadata.get("increasing", False))
    numeric = (int,) if kind is int else (int, float)
    if not isinstance(value, numeric) or isinstance(value, bool):
        return f"{value!r} is not {'an integer' if kind is int else 'a number'}."
    return bounds.problem(value)


def check_fields(options: Any) -> None:
    """Refuse the first field of the dataclass instance `options` whose value its :func:`opt` does not allow: an
    :class:`OptionError` worded as the command line's usage error."""
    hints = typing.get_type_hints(type(options))
    for f in dataclasses.fields(options):
        problem = value_problem(f, hints.get(f.name, str), getattr(options, f.name))
        if problem:
            raise OptionError(f"Invalid value for '{flag(f.name)}': {problem}")


def click_option(f: dataclasses.Field, owner: type) -> click.Option:
    """The command-line option of a field of the dataclass `owner`, with the range or choices its ``opt(...)``
    declares (a bool is an on/off flag pair, a list of integers is comma-separated, text without choices is free)."""
    kind = typing.get_type_hints(owner).get(f.name, str)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    help_ = f.metadata.get("help", "")
    bounds: Bounds = f.metadata.get("bounds", Bounds())
    if kind is bool:
        negative = f.metadata.get("negative") or f"no-{flag(f.name)[2:]}"
        return click.Option([f"{flag(f.name)}/--{negative}", f.name], default=default, show_default=True, help=help_)
    if _is_int_list(kind):
        return click.Option([flag(f.name), f.name], type=IntList(bounds, f.metadata.get("increasing", False)),
                            default=",".join(map(str, default)), show_default=True, help=help_)
    if kind is str and f.metadata.get("choices"):
        type_: click.ParamType = click.Choice(f.metadata["choices"])
    elif kind is int:
        type_ = CheckedInt(bounds)
    elif kind is float:
        type_ = CheckedFloat(bounds)
    elif kind is str:
        type_ = click.STRING
    else:
        raise TypeError(f"{owner.__name__}.{f.name}: no command-line type for {kind!r}; declare choices or a range")
    return click.Option([flag(f.name), f.name], type=type_, default=default, show_default=True, help=help_)
