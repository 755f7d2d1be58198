"""The CUDA-only code paths, each forced on the CPU (bf16 autocast, monkeypatched ``torch.cuda``, gloo), and the same
checks on a real GPU where one is present (``cuda`` marker, run by bench/gpu_check.sh)."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from train.data import Batch
from train.loop import amp_autocast
from train.methods import get_method
from train.methods.base import Method

SMALL = {
    "rotnet": {"head_dim": 64},
    "deepcluster": {"head_dim": 64, "k": 4, "pca_dim": 16},
    "supervised": {"head_dim": 64},
    "bigan": {"g_width": 16, "d_width": 16, "d_hidden": 64, "z_dim": 32},
    "monogan": {"g_width": 16, "z_dim": 32, "n_critic": 1},  # the generator steps after the critic every step
}
METHODS = ["rotnet", "deepcluster", "supervised", "bigan", "monogan"]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def fixed_batch(n=8, size=32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    imgs = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)
    return Batch(imgs, torch.arange(n), torch.arange(n) % 4).to(torch.device(device))


def build(name, device="cpu", n=8, seed=0, channels_last=False):
    torch.manual_seed(seed)
    cls = get_method(name)
    m = cls(cls.Options(**SMALL[name]), "cifar", num_samples=n, num_classes=4 if cls.needs_labels else None,
            device=device)
    m.total_epochs = 10
    m.to(device)
    if channels_last:
        m.to(memory_format=torch.channels_last)
        m.channels_last = True
    m.configure()
    if name == "deepcluster":
        m.set_labels(torch.arange(n) % 4, epoch=0)
    return m


# ---- 1. a second optimiser step inside one autocast region must see the first one's update ---------------------
@pytest.mark.parametrize("device", DEVICES)
def test_a_forward_after_an_optimizer_step_sees_the_update_under_the_loops_autocast(device):
    torch.manual_seed(0)
    lin = nn.Linear(16, 16).to(device)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    x = torch.randn(4, 16, device=device)
    with torch.autocast(device, torch.bfloat16):  # the premise: autocast caches bf16 weight copies per region
        stale = lin(x)
        opt.zero_grad()
        stale.float().square().mean().backward()
        opt.step()
        assert torch.equal(lin(x), stale)
    owner = SimpleNamespace(optimizers={"main": opt})
    with amp_autocast(device, True):
        before = lin(x)
        Method.optimizer_step(owner, "main", before.float().square().mean())
        after = lin(x)
    with torch.autocast(device, torch.bfloat16, cache_enabled=False):
        fresh = lin(x)
    assert not torch.equal(after, before)
    assert torch.equal(after, fresh)


def _players_in_separate_regions(m, batch, gen, region):
    """The reference: each player's step in an autocast region of its own, so no bf16 weight copy can outlive an
    update (the same random draws, in the same order, as ``training_step``)."""
    if m.name == "monogan":
        with region():
            m.critic_step(m.real_view(batch.images, gen), gen)
        m.steps_done += 1
        with region():
            m.generator_step(len(batch), gen)
    else:
        with region():
            x_enc, x_gan = m.views(batch.images, gen)
            z = m.sample_z(len(batch), gen)
            m.d_step(x_enc, x_gan, z)
        with region():
            m.eg_step(x_enc, x_gan, z)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["monogan", "bigan"])
def test_two_player_steps_in_one_autocast_region_equal_one_region_per_player(name, device):
    """MonoGAN (critic, then generator through the critic) and BiGAN (D, then E/G through D): the second player's
    forward must use the first player's updated weights, as it does when each player has its own region."""
    batch = fixed_batch(n=2, device=device)  # bf16 convolutions are slow on CPUs without bf16 instructions
    region = lambda: amp_autocast(device, True)  # noqa: E731
    one = build(name, device, channels_last=True)
    with region():
        one.training_step(batch, torch.Generator().manual_seed(0))
    per_player = build(name, device, channels_last=True)  # built after: both draw the same dropout masks
    _players_in_separate_regions(per_player, batch, torch.Generator().manual_seed(0), region)
    a, b = one.state_dict(), per_player.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
