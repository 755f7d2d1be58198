"""Per-iteration schedules of the modern methods, as pure functions of the step (so a resumed run recomputes them
exactly from its step counter; nothing to checkpoint).

- :func:`cosine_schedule`: linear warm-up then cosine decay, the learning-rate schedule of SimCLR, MoCo v2
  (without warm-up), BYOL and DINO, and (from ``base`` to 1, no warm-up) the EMA momentum of BYOL's target and
  DINO's teacher. It equals DINO's ``utils.cosine_scheduler`` at every step (tested).
- :func:`ema_momentum`: BYOL's ``tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2`` (Grill et al., 2020, sec. 3.2).
- :func:`teacher_temperature`: DINO's teacher temperature, a linear warm-up then constant (Caron et al., 2021,
  sec. 4 / appendix: 0.04 -> 0.07 over 30 epochs for ViT-S), here per iteration rather than per epoch.
"""

from __future__ import annotations

import math


def _check(step: int, total_steps: int, warmup_steps: int) -> None:
    if step < 0 or total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"schedule needs 0 <= step, 1 <= total_steps and 0 <= warmup_steps <= total_steps; got "
                         f"step={step}, total_steps={total_steps}, warmup_steps={warmup_steps}")


def cosine_schedule(step: int, total_steps: int, base: float, final: float = 0.0, warmup_steps: int = 0,
                    warmup_start: float = 0.0) -> float:
    """The value at ``step`` (0-based) of ``total_steps``: ``warmup_steps`` steps evenly spaced from
    ``warmup_start`` to ``base`` (both ends included), then a half cosine from ``base`` towards ``final``;
    ``final`` from ``total_steps`` on."""
    _check(step, total_steps, warmup_steps)
    if step < warmup_steps:
        if warmup_steps == 1:
            return warmup_start
        return warmup_start + (base - warmup_start) * step / (warmup_steps - 1)
    if step >= total_steps:
        return final
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * progress))


def ema_momentum(step: int, total_steps: int, base: float = 0.996) -> float:
    """The target / teacher EMA momentum at ``step``: from ``base`` (BYOL's and DINO's 0.996) up to 1 by a
    half cosine."""
    return cosine_schedule(step, total_steps, base, final=1.0)


def teacher_temperature(step: int, warmup_steps: int, start: float = 0.04, end: float = 0.04) -> float:
    """DINO's teacher temperature at ``step``: evenly from ``start`` to ``end`` over ``warmup_steps`` steps (both
    ends included), then ``end``."""
    if step < 0 or warmup_steps < 0:
        raise ValueError(f"teacher_temperature needs step >= 0 and warmup_steps >= 0, got {step}, {warmup_steps}")
    if step >= warmup_steps:
        return end
    if warmup_steps == 1:
        return start
    return start + (end - start) * step / (warmup_steps - 1)
