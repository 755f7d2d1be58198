"""The losses (train/losses/) against direct, loop-by-loop computations of their papers' formulas on tiny batches."""

from __future__ import annotations

import math

import pytest
import torch

from train.losses import byol_loss, dino_loss, enqueue, infonce_loss, nt_xent_loss, update_center


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def test_nt_xent_equals_the_papers_sum_over_both_orders_of_every_pair():
    z1, z2, t = _randn(5, 7, seed=1), _randn(5, 7, seed=2), 0.3
    z = torch.cat([z1, z2])
    n2, total = z.shape[0], 0.0
    for i in range(n2):  # SimCLR eq. 1: l(i, j) = -log exp(s_ij/t) / sum_{k != i} exp(s_ik/t)
        j = (i + 5) % n2
        denominator = sum(math.exp(_cos(z[i], z[k]) / t) for k in range(n2) if k != i)
        total += -math.log(math.exp(_cos(z[i], z[j]) / t) / denominator)
    assert nt_xent_loss(z1, z2, t).item() == pytest.approx(total / n2, rel=1e-10)
    # symmetric in the two views, and low when the views agree
    assert nt_xent_loss(z2, z1, t).item() == pytest.approx(total / n2, rel=1e-10)
    assert nt_xent_loss(z1, z1 * 2, 0.1) < nt_xent_loss(z1, z2, 0.1)
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(z1, z2[:4])


def test_infonce_equals_a_loop_over_queries_and_takes_no_gradient_through_keys():
    q, k, queue, t = _randn(4, 6, seed=3), _randn(4, 6, seed=4), _randn(9, 6, seed=5), 0.2
    expected = 0.0
    for i in range(4):
        positive = math.exp(_cos(q[i], k[i]) / t)
        negatives = sum(math.exp(_cos(q[i], queue[j]) / t) for j in range(9))
        expected += -math.log(positive / (positive + negatives))
    q.requires_grad_(True)
    k.requires_grad_(True)
    loss = infonce_loss(q, k, queue, t)
    assert loss.item() == pytest.approx(expected / 4, rel=1e-10)
    loss.backward()
    assert q.grad is not None and k.grad is None


def test_enqueue_replaces_the_oldest_keys_and_wraps_around():
    queue = torch.zeros(5, 3, dtype=torch.float64)
    keys = _randn(3, 3, seed=6)
    pointer = enqueue(queue, 0, keys)
    assert pointer == 3
    torch.testing.assert_close(queue[:3], keys / keys.norm(dim=1, keepdim=True))
    pointer = enqueue(queue, pointer, keys * 2)  # rows 3, 4, then 0
    assert pointer == 1
    unit = keys / keys.norm(dim=1, keepdim=True)
    torch.testing.assert_close(queue[[3, 4, 0]], unit)
    torch.testing.assert_close(queue[1:3], unit[1:3])
    with pytest.raises(ValueError, match="does not fit"):
        enqueue(queue, 0, _randn(6, 3))


def test_byol_loss_is_the_mse_of_the_normalised_vectors():
    p, z = _randn(6, 8, seed=7), _randn(6, 8, seed=8)
    direct = sum(float(((p[i] / p[i].norm() - z[i] / z[i].norm()) ** 2).sum()) for i in range(6)) / 6
    assert byol_loss(p, z).item() == pytest.approx(direct, rel=1e-10)
    assert byol_loss(p, 3 * p).item() == pytest.approx(0.0, abs=1e-12)
    assert byol_loss(p, -p).item() == pytest.approx(4.0)
    z.requires_grad_(True)
    byol_loss(p.requires_grad_(True), z).backward()
    assert z.grad is None and p.grad is not None


def test_dino_loss_equals_a_loop_with_centring_and_sharpening():
    views, globals_, n, k = 4, 2, 3, 5
    student, teacher, center = _randn(views, n, k, seed=9), _randn(globals_, n, k, seed=10), _randn(k, seed=11)
    ts, tt = 0.1, 0.04
    total, pairs = 0.0, 0
    for g in range(globals_):  # DINO's Algorithm 1: H(t, s) = -sum softmax((t - C)/tt) log softmax(s/ts)
        for v in range(views):
            if v == g:
                continue
            for i in range(n):
                target = torch.softmax((teacher[g, i] - center) / tt, dim=0)
                total += float(-(target * torch.log_softmax(student[v, i] / ts, dim=0)).sum())
            pairs += 1
    assert dino_loss(student, teacher, center, ts, tt).item() == pytest.approx(total / (n * pairs), rel=1e-10)
    # the centre matters: a different centre changes the teacher's targets
    assert dino_loss(student, teacher, center * 0, ts, tt).item() != pytest.approx(total / (n * pairs))
    teacher.requires_grad_(True)
    dino_loss(student.requires_grad_(True), teacher, center).backward()
    assert teacher.grad is None and student.grad is not None
    with pytest.raises(ValueError, match="G <= V"):
        dino_loss(student[:1], teacher, center)


def test_update_center_is_an_ema_of_the_batch_mean():
    center, teacher = _randn(1, 5, seed=12), _randn(2, 3, 5, seed=13)
    new = update_center(center, teacher, momentum=0.9)
    torch.testing.assert_close(new, 0.9 * center + 0.1 * teacher.reshape(6, 5).mean(0, keepdim=True))
    assert new.shape == center.shape
    torch.testing.assert_close(update_center(center.reshape(5), teacher, 0.0), teacher.reshape(6, 5).mean(0))
