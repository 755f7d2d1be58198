"""Each method's loss falls on a fixed batch; the gradient penalty matches a direct computation."""

import pytest
import torch
from torch import nn

from train.data.sources import Batch
from train.methods import RunContext, get_method, list_methods
from train.methods.monogan import gradient_penalty


def fixed_batch(n=16, size=32, seed=0, labels=False):
    g = torch.Generator().manual_seed(seed)
    # smooth-ish images with structure (a gradient plus noise) so there is something to learn
    ramp = torch.linspace(0, 1, size)
    base = (ramp[None, :, None] * ramp[None, None, :]).expand(3, size, size)
    imgs = ((0.6 * base + 0.4 * torch.rand(n, 3, size, size, generator=g)) * 255).to(torch.uint8)
    y = torch.arange(n) % 4 if labels else None
    return Batch(imgs, torch.arange(n), y)


def build(name, n=16, num_classes=None, **options):
    torch.manual_seed(0)
    cls = get_method(name)
    m = cls(cls.Options(**{**cls.small_options, **options}), "cifar", num_samples=n, num_classes=num_classes)
    m.configure(RunContext.for_epochs(10))
    return m


def test_registry():
    # the package's modules are found without an import line; a plugin adds to them (test_new_method.py)
    assert {"deepcluster", "rotnet", "bigan", "monogan", "supervised", "simclr", "mocov2", "byol", "dino"} <= set(
        list_methods())
    with pytest.raises(ValueError, match="unknown method 'no-such-method'; known: bigan, byol, deepcluster"):
        get_method("no-such-method")


@pytest.mark.parametrize("name", list_methods())
def test_every_method_declares_what_the_project_reads(name):
    from train.methods.base import DATA_KINDS

    cls = get_method(name)
    assert cls.name == name and cls.summary and cls.examples
    assert all(line.startswith(f"train {name} ") for line in cls.examples)
    assert cls.data_kind in DATA_KINDS and cls.schedule_unit in ("epoch", "step")
    cls.Options(**cls.small_options)  # the smoke run's options are valid


@pytest.mark.parametrize("name", ["rotnet", "supervised", "deepcluster"])
def test_classification_losses_fall_on_a_fixed_batch(name):
    # wider heads than the smoke options (and a faster rate for the supervised head) to fall within 25 steps
    m = build(name, num_classes=4 if name == "supervised" else None, head_dim=128,
              **({"lr": 0.05} if name == "supervised" else {}))
    batch = fixed_batch(labels=name == "supervised")
    if name == "deepcluster":
        m.set_labels(torch.arange(16) % 4, epoch=0)  # planted pseudo-labels
    losses = []
    for _ in range(25):
        out = m.training_step(batch, torch.Generator().manual_seed(0))  # same crops every step
        losses.append(out["loss"].item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-5:]) < 0.7 * losses[0], losses


def test_deepcluster_reset_top_layer_clears_momentum():
    m = build("deepcluster")
    m.set_labels(torch.arange(16) % 4, epoch=0)
    m.training_step(fixed_batch(), torch.Generator().manual_seed(0))
    opt = m.optimizers["main"]
    assert m.top_layer.weight in opt.state
    before = m.top_layer.weight.detach().clone()
    m.set_labels(torch.arange(16) % 3, epoch=1)
    assert m.top_layer.weight not in opt.state
    assert not torch.equal(before, m.top_layer.weight)
    assert m.top_layer.bias.abs().max() == 0
    assert m.clustered_epoch == 1
    # uniform-over-clusters weights: cluster 0 has 6 members, 1 and 2 have 5
    torch.testing.assert_close(m.class_weights[:3], torch.tensor([16 / 18, 16 / 15, 16 / 15]))


def test_bigan_players_each_improve_against_a_fixed_opponent():
    m = build("bigan")
    batch = fixed_batch()
    x_enc, x_gan = m.views(batch.images, torch.Generator().manual_seed(0))
    z = m.sample_z(16, torch.Generator().manual_seed(1))
    m.eval()  # no dropout noise: a deterministic objective on a fixed batch
    d_losses = [m.d_step(x_enc, x_gan, z).item() for _ in range(20)]
    assert d_losses[-1] < 0.7 * d_losses[0], d_losses
    eg_losses = [m.eg_step(x_enc, x_gan, z).item() for _ in range(20)]
    assert eg_losses[-1] < 0.7 * eg_losses[0], eg_losses


def test_monogan_critic_and_generator_each_improve():
    m = build("monogan")
    real = m.real_view(fixed_batch().images, torch.Generator().manual_seed(0))
    crit = []
    for _ in range(15):
        out = m.critic_step(real, torch.Generator().manual_seed(5))  # same fakes, same eps
        crit.append(out["loss_critic"].item())
    assert crit[-1] < crit[0] - 0.5, crit
    g = [m.generator_step(16, torch.Generator().manual_seed(6)).item() for _ in range(15)]
    assert g[-1] < g[0], g


def test_monogan_generator_update_every_n_critic_steps():
    m = build("monogan")
    batch = fixed_batch()
    outs = [m.training_step(batch, torch.Generator().manual_seed(i)) for i in range(10)]
    assert [("loss_g" in o) for o in outs] == [False, False, False, False, True] * 2


def test_gradient_penalty_matches_direct_computation():
    torch.manual_seed(0)
    # 1) a linear critic has gradient w everywhere: the penalty is (||w|| - 1)^2 exactly
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 1))
    real, fake = torch.randn(5, 3, 8, 8), torch.randn(5, 3, 8, 8)
    eps = torch.rand(5)
    gp = gradient_penalty(lambda x: lin(x).squeeze(1), real, fake, eps)
    expected = (lin[1].weight.norm() - 1) ** 2
    torch.testing.assert_close(gp, expected)

    # 2) a nonlinear critic (the MonoGAN critic in eval mode, so samples do not interact): compare with a
    #    per-sample gradient computed one sample at a time
    m = build("monogan")
    critic = m.critic.eval()
    real, fake = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    eps = torch.rand(4)
    gp = gradient_penalty(critic, real, fake, eps)
    direct = []
    for i in range(4):
        xi = (eps[i] * real[i] + (1 - eps[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        (g,) = torch.autograd.grad(critic(xi).sum(), xi)
        direct.append((g.norm() - 1) ** 2)
    torch.testing.assert_close(gp, torch.stack(direct).mean(), rtol=1e-4, atol=1e-6)

    # 3) the penalty is differentiable w.r.t. the critic's parameters (create_graph)
    gp.backward()
    assert critic.fc.weight.grad is not None and critic.fc.weight.grad.abs().sum() > 0


def test_monogan_critic_batchnorm_never_uses_batch_statistics():
    """WGAN-GP's per-sample penalty is only valid if each critic output depends on its own input alone."""
    import torch

    from train.methods.monogan import MonoGAN, MonoGANOptions

    m = MonoGAN(MonoGANOptions(), "cifar", 100)
    m.configure(RunContext.for_epochs(10))
    m.train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        m.critic_step(torch.rand(8, 3, 32, 32) * 2 - 1, gen)
    bns = [b for b in m.critic.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    assert bns and not any(b.training for b in bns)
    assert all(torch.equal(b.running_mean, torch.zeros_like(b.running_mean)) for b in bns)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    alone = m.critic(x[:1])
    together = m.critic(x)[:1]
    assert torch.allclose(alone, together, atol=1e-5)  # no cross-sample dependence


def test_monogan_batch_statistics_critic_is_opt_in():
    """--critic-bn batch gives the plain AlexNet-BN critic (for comparison runs); anything else is refused."""
    import pytest
    import torch

    from train.methods.monogan import MonoGAN, MonoGANOptions

    m = MonoGAN(MonoGANOptions(critic_bn="batch"), "cifar", 100)
    m.configure(RunContext.for_epochs(10))
    m.train()
    m.critic_step(torch.rand(8, 3, 32, 32) * 2 - 1, torch.Generator().manual_seed(0))
    bns = [b for b in m.critic.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    assert all(b.training for b in bns)
    assert any(not torch.equal(b.running_mean, torch.zeros_like(b.running_mean)) for b in bns)
    with pytest.raises(ValueError, match="critic-bn"):
        MonoGAN(MonoGANOptions(critic_bn="layer"), "cifar", 100)


def test_deepcluster_with_too_few_samples_per_cluster_says_so_in_one_line(caplog, recwarn):
    cls = get_method("deepcluster")
    cls(cls.Options(head_dim=32, pca_dim=8), "cifar", num_samples=60)  # automatic k: 2 clusters of 30
    cls(cls.Options(head_dim=32, pca_dim=8, k=10), "cifar", num_samples=60)
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == 2 and not any("\n" in line for line in lines)
    assert lines[0].startswith("deepcluster: k = 2 clusters, chosen automatically") and "smaller --k" not in lines[0]
    assert lines[1].startswith("deepcluster: --k 10 for 60 samples is 6.0 per cluster")
    assert "no k >= 2 keeps that many" in lines[1] and "(--k 0 would choose 2)" in lines[1]
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
