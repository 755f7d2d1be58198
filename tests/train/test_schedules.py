"""The per-iteration schedules (train/methods/schedules.py) against DINO's reference numpy schedules and BYOL's
formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

from train.methods.schedules import cosine_schedule, ema_momentum, teacher_temperature


def _dino_cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0.0):
    """DINO's utils.cosine_scheduler (facebookresearch/dino), verbatim but for names."""
    warmup_iters = warmup_epochs * niter_per_ep
    warmup = np.linspace(start_warmup_value, base, warmup_iters) if warmup_iters > 0 else np.array([])
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup, schedule))


@pytest.mark.parametrize(("base", "final", "epochs", "per_epoch", "warmup", "start"), [
    (0.3, 1e-6, 10, 7, 2, 0.0), (0.0005, 1e-6, 5, 3, 0, 0.0), (0.996, 1.0, 4, 5, 0, 0.0), (1.0, 0.1, 3, 4, 1, 0.2)])
def test_cosine_schedule_equals_dinos_scheduler_at_every_step(base, final, epochs, per_epoch, warmup, start):
    reference = _dino_cosine_scheduler(base, final, epochs, per_epoch, warmup, start)
    total = epochs * per_epoch
    ours = [cosine_schedule(s, total, base, final, warmup * per_epoch, start) for s in range(total)]
    np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-15)
    assert cosine_schedule(total + 5, total, base, final, warmup * per_epoch, start) == final


def test_ema_momentum_is_byols_formula():
    total = 50
    for k in range(total):
        expected = 1 - (1 - 0.99) * (math.cos(math.pi * k / total) + 1) / 2
        assert ema_momentum(k, total, 0.99) == pytest.approx(expected, abs=1e-15)
    assert ema_momentum(0, total) == 0.996 and ema_momentum(total, total) == 1.0


def test_teacher_temperature_warms_up_linearly_then_stays():
    reference = np.concatenate((np.linspace(0.04, 0.07, 30), np.ones(70) * 0.07))  # DINO's, per epoch there
    np.testing.assert_allclose([teacher_temperature(s, 30, 0.04, 0.07) for s in range(100)], reference, rtol=1e-12)
    assert teacher_temperature(5, 0, 0.04, 0.07) == 0.07


def test_bad_schedule_arguments_are_refused():
    with pytest.raises(ValueError, match="warmup_steps"):
        cosine_schedule(0, 10, 0.1, warmup_steps=11)
    with pytest.raises(ValueError, match="step"):
        cosine_schedule(-1, 10, 0.1)
    with pytest.raises(ValueError):
        teacher_temperature(-1, 3)
