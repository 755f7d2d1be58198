"""The CUDA-only code paths, each forced on the CPU (bf16 autocast, monkeypatched ``torch.cuda``, gloo), and the same
checks on a real GPU where one is present (``cuda`` marker, run by bench/gpu_check.sh)."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from train.data.sources import Batch
from train.methods import RunContext, get_method, list_methods
from train.methods.base import Method
from train.run.loop import amp_autocast

from ..conftest import TORCHRUN, train_config

METHODS = list_methods()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def fixed_batch(n=8, size=32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    imgs = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)
    return Batch(imgs, torch.arange(n), torch.arange(n) % 4).to(torch.device(device))


def build(name, device="cpu", n=8, seed=0, channels_last=False):
    torch.manual_seed(seed)
    cls = get_method(name)
    # MonoGAN's generator steps after the critic every step, so one step runs both players
    options = {**cls.small_options, **({"n_critic": 1} if name == "monogan" else {})}
    m = cls(cls.Options(**options), "cifar", num_samples=n,
            num_classes=4 if cls.data_kind == "labelled" else None, device=device)
    m.to(device)
    if channels_last:
        m.to(memory_format=torch.channels_last)
        m.channels_last = True
    m.configure(RunContext.for_epochs(10, device=device))
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
    owner = SimpleNamespace(optimizers={"main": opt}, _ddp=None)  # a method not wrapped in DDP
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


# ---- 6. random states of the devices the run uses, not of every visible GPU --------------------------------------
class FakeCuda:
    """``torch.cuda``'s random-state functions for ``count`` visible GPUs, each state tagged with its device index;
    like torch's, they raise IndexError for a device that is not visible."""

    def __init__(self, monkeypatch, count: int) -> None:
        self.count, self.restored = count, []
        for name in ("is_available", "is_initialized"):
            monkeypatch.setattr(torch.cuda, name, lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        for name in ("get_rng_state", "set_rng_state", "get_rng_state_all", "set_rng_state_all"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))

    def _index(self, device) -> int:
        index = torch.device(device).index if not isinstance(device, int) else device
        index = 0 if index is None else index
        if index >= self.count:
            raise IndexError(f"CUDA device {index} of {self.count}")
        return index

    def get_rng_state(self, device="cuda"):
        return torch.full((8,), self._index(device), dtype=torch.uint8)

    def set_rng_state(self, state, device="cuda"):
        self.restored.append((self._index(device), int(state[0])))

    def get_rng_state_all(self):
        return [self.get_rng_state(i) for i in range(self.count)]

    def set_rng_state_all(self, states):
        for i, state in enumerate(states):
            self.set_rng_state(state, i)


def test_a_cpu_run_on_a_gpu_machine_resumes_where_fewer_gpus_are_visible(tiny_set, tmp_path, monkeypatch):
    from train.run.loop import train

    def cfg(**kw):
        return train_config("rotnet", tiny_set, tmp_path / "run", **{"epochs": None, "log_every": None,
                                                                    "ckpt_every": None, "shuffle_buffer": None, **kw})

    FakeCuda(monkeypatch, count=2)  # CUDA initialised (say, by a probe in the same process), two GPUs visible
    train(cfg(max_steps=2))
    assert "cuda" not in torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["rng"][0]
    fake = FakeCuda(monkeypatch, count=1)
    assert train(cfg(max_steps=4, resume=True))["step"] == 4
    assert fake.restored == []


def test_a_cuda_run_saves_and_restores_its_own_devices_state_only(monkeypatch):
    from train.run.checkpoint import rng_state, set_rng_state

    FakeCuda(monkeypatch, count=4)
    gen = torch.Generator().manual_seed(0)
    state = rng_state(gen, torch.device("cuda", 3))  # rank 3 of a 4-GPU run
    assert state["cuda"].tolist() == [3] * 8
    fake = FakeCuda(monkeypatch, count=1)  # resumed as a single process on a 1-GPU machine
    set_rng_state(state, gen, torch.device("cuda", 0))
    assert fake.restored == [(0, 3)]
    # a checkpoint of the earlier format (every visible GPU's state): the run's own device's is restored
    fake.restored.clear()
    set_rng_state({**state, "cuda": [torch.full((8,), i, dtype=torch.uint8) for i in range(4)]}, gen,
                   torch.device("cuda", 0))
    assert fake.restored == [(0, 0)]
    fake.restored.clear()
    set_rng_state(state, gen, torch.device("cpu"))  # a CUDA checkpoint resumed on the CPU
    assert fake.restored == []


@pytest.mark.cuda
def test_cuda_random_stream_round_trips_through_the_checkpoint_state():
    from train.run.checkpoint import rng_state, set_rng_state

    device = torch.device("cuda", torch.cuda.current_device())
    gen = torch.Generator().manual_seed(0)
    state = rng_state(gen, device)
    first = torch.rand(4, device=device)
    set_rng_state(state, gen, device)
    assert torch.equal(torch.rand(4, device=device), first)


# ---- 8. under torchrun, each rank on the GPU of its LOCAL_RANK ------------------------------------------------------
@pytest.fixture
def two_gpus_under_torchrun(monkeypatch):
    """Rank 1 of 2 launched by torchrun on a machine with two (fake) GPUs; returns the devices set."""
    chosen = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


def test_under_torchrun_each_rank_takes_its_local_rank_gpu_and_a_conflicting_device_is_refused(
        two_gpus_under_torchrun):
    from common.errors import DeviceError
    from train.process.devices import pick_device

    for name in ("auto", "cuda", "cuda:1"):
        assert pick_device(name) == torch.device("cuda", 1)
    assert two_gpus_under_torchrun == [torch.device("cuda", 1)] * 3
    with pytest.raises(DeviceError, match=r"^--device cuda:0 under torchrun: each process trains on the GPU of its "
                                         r"LOCAL_RANK \(cuda:1 for this one\); pass --device cuda \(or auto\)$"):
        pick_device("cuda:0")
    assert pick_device("cpu") == torch.device("cpu")  # gloo on the CPU stays possible


def test_the_cli_refuses_a_conflicting_device_under_torchrun_in_one_line(two_gpus_under_torchrun, tiny_set, tmp_path):
    from click.testing import CliRunner

    from train.cli import main

    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["rotnet", str(tiny_set), "--out", str(out), "--arch", "cifar",
                                  "--device", "cuda:0"])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "LOCAL_RANK" in r.output, r.output
    assert not out.exists()


def test_without_torchrun_any_visible_gpu_may_be_named(monkeypatch):
    from train.process.devices import pick_device

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("cuda") == torch.device("cuda", 0)


# ---- 7. --deterministic -----------------------------------------------------------------------------------------
def _kernel_flags():
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32, "matmul_tf32": torch.backends.cuda.matmul.allow_tf32}


def test_deterministic_sets_the_flags_for_the_run_and_restores_them(tiny_set, tmp_path, monkeypatch):
    import json
    import os

    from train.run.loop import train

    cls = get_method("rotnet")
    real_step, seen = cls.training_step, []

    def recorded(self, batch, gen):
        seen.append({**_kernel_flags(), "cublas_workspace": os.environ.get("CUBLAS_WORKSPACE_CONFIG")})
        return real_step(self, batch, gen)

    monkeypatch.setattr(cls, "training_step", recorded)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = _kernel_flags()
    out = tmp_path / "run"
    train(train_config("rotnet", tiny_set, out, max_steps=2, deterministic=True, epochs=None, log_every=None,
                       ckpt_every=None, shuffle_buffer=None))
    assert seen == [{"deterministic_algorithms": True, "cudnn_benchmark": False, "cudnn_deterministic": True,
                     "cudnn_tf32": False, "matmul_tf32": False, "cublas_workspace": ":4096:8"}] * 2
    assert _kernel_flags() == before
    assert json.loads((out / "config.json").read_text())["deterministic"] is True


def test_cuda_defaults_are_autotuning_and_tf32_and_deterministic_turns_them_off():
    from train.run.loop import backend_settings

    before = _kernel_flags()
    with backend_settings(torch.device("cuda", 0)):
        assert _kernel_flags() == {**before, "cudnn_benchmark": True, "cudnn_tf32": True, "matmul_tf32": True}
    with backend_settings(torch.device("cuda", 0), deterministic=True):
        assert _kernel_flags() == {"deterministic_algorithms": True, "cudnn_benchmark": False,
                                   "cudnn_deterministic": True, "cudnn_tf32": False, "matmul_tf32": False}
    with backend_settings(torch.device("cpu")):
        assert _kernel_flags() == before
    assert _kernel_flags() == before


def test_the_cli_passes_deterministic(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import train.cli
    import train.run.loop

    configs = []  # the command imports the loop's train() when it runs
    monkeypatch.setattr(train.run.loop, "train", lambda cfg: configs.append(cfg) or {"step": 0, "epoch": 0,
                                                                                 "images_per_s": 0.0})
    for extra in ([], ["--deterministic"]):
        r = CliRunner().invoke(train.cli.main, ["rotnet", str(tmp_path), "--out", str(tmp_path / "o"), *extra])
        assert r.exit_code == 0, r.output
    assert [c.deterministic for c in configs] == [False, True]


# ---- 9. every method on a GPU: bf16, channels_last, and an exact resume with --deterministic ----------------------
@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory):
    """A 4-class ImageFolder of 64 random 32 px PNGs, for the supervised baseline."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    for c in range(4):
        (root / f"class{c}").mkdir()
        for i in range(16):
            pixels = (rng.random((32, 32, 3)) * 64 + c * 48).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.cuda
@pytest.mark.parametrize("name", METHODS)
def test_each_method_trains_on_cuda_in_bf16_and_resumes_exactly_when_deterministic(name, tiny_set, labelled_folder,
                                                                                 tmp_path):
    import json

    from train.run.loop import train

    options = get_method(name).small_options

    def cfg(out, **kw):
        labelled = get_method(name).data_kind == "labelled"
        return train_config(name, labelled_folder if labelled else tiny_set, tmp_path / out, device="cuda",
                            epochs=None, ckpt_every=1000, deterministic=True, options=dict(options), **kw)

    summary = train(cfg("ref", max_steps=24))  # deepcluster: 16 steps an epoch, so a second clustering
    assert torch.isfinite(torch.tensor(summary["loss"]))
    recorded = json.loads((tmp_path / "ref" / "config.json").read_text())
    assert recorded["device"].startswith("cuda") and recorded["amp"] is True and recorded["channels_last"] is True
    train(cfg("run", max_steps=10))
    train(cfg("run", max_steps=24, resume=True))
    a = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 24
    moved = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not moved, f"resumed run differs in {len(moved)} tensors, e.g. {moved[:3]}"


# ---- 5. the clustering pass in fp32 on every device ---------------------------------------------------------------
def test_the_clustering_pass_runs_in_fp32_without_autocast_or_tf32(monkeypatch):
    """Even when the epoch context's autocast is bf16 and TF32 is on (the loop's CUDA settings): features, PCA and
    k-means see float32 data with autocast off and TF32 off; the settings are restored after."""
    from train.data.sources import TensorSource
    from train.methods.base import EpochContext
    from train.models import clustering

    seen = []

    def recording(name, fn, tensor_arg):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            data = out if name == "features" else args[tensor_arg]
            seen.append((name, data.dtype, torch.is_autocast_enabled("cpu"),
                         torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
            return out
        return wrapped

    cls = get_method("deepcluster")
    monkeypatch.setattr(cls, "features", recording("features", cls.features, 0))
    monkeypatch.setattr(clustering, "fit_pca", recording("fit_pca", clustering.fit_pca, 0))
    monkeypatch.setattr(clustering, "kmeans", recording("kmeans", clustering.kmeans, 0))
    m = build("deepcluster", n=32)
    images = (torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    ctx = EpochContext(source=TensorSource(images), epoch=1, batch_size=8, seed=0, workers=0, pin_memory=False,
                       autocast=lambda: amp_autocast("cpu", True))
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        m.on_epoch_start(ctx)  # 8 samples per cluster: a one-line log note, not a warning
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert {name for name, *_ in seen} == {"features", "fit_pca", "kmeans"}
    assert all(rec[1:] == (torch.float32, False, False, False) for rec in seen), seen


# ---- 3, 4. two ranks (torchrun, gloo): the PCA sees every rank's sample, dropout differs per rank ------------------
DDP_SCRIPT = '''
import hashlib, json, os, sys
import torch
from train.models import clustering
from train.run.loop import TrainConfig, train
from train.methods import get_method

out, data = sys.argv[1], sys.argv[2]
record = {"pca_rows": [], "first_step": None}
real_fit, cls = clustering.fit_pca, get_method("deepcluster")
real_step = cls.training_step

def fit(x, dim, **kw):
    record["pca_rows"].append(int(x.shape[0]))
    return real_fit(x, dim, **kw)

def digest(tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

def step(self, batch, gen):
    if record["first_step"] is None:
        record["first_step"] = {"weights": digest(self.parameters()), "global_rng": digest([torch.get_rng_state()])}
    return real_step(self, batch, gen)

clustering.fit_pca, cls.training_step = fit, step
train(TrainConfig(method="deepcluster", data=data, out=os.path.join(out, "run"), arch="cifar", batch_size=16,
                  max_steps=2, device="cpu", workers=0, progress=False, shuffle_buffer=64,
                  options={"head_dim": 64, "k": 4, "pca_dim": 16, "pca_samples": 64}))
with open(os.path.join(out, f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump(record, f)
'''


@pytest.fixture(scope="module")
def two_ranks(tiny_set, tmp_path_factory):
    """What each of two gloo ranks saw in a 2-step DeepCluster run under torchrun."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path_factory.mktemp("ddp")
    (out / "script.py").write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(out / "script.py"), str(out), str(tiny_set)],
                       env=env, cwd=repo, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@TORCHRUN
def test_under_ddp_the_pca_is_fitted_on_every_ranks_sample(two_ranks):
    # pca_samples 64 over 2 ranks: each keeps its first feature batch of 32 rows; rank 0 fits on both
    assert two_ranks[0]["pca_rows"] == [64] and two_ranks[1]["pca_rows"] == []


@TORCHRUN
def test_under_ddp_ranks_start_equal_but_draw_their_own_dropout_masks(two_ranks):
    first = [r["first_step"] for r in two_ranks]
    assert first[0]["weights"] == first[1]["weights"]  # the broadcast still makes every rank start alike
    assert first[0]["global_rng"] != first[1]["global_rng"]  # the generator dropout draws from differs


def test_rank_seed_keeps_rank_zero_on_the_single_process_stream():
    from train.run.loop import rank_seed

    assert rank_seed(5, 0) == 5
    assert len({rank_seed(5, r) for r in range(64)} | {rank_seed(6, r) for r in range(64)}) == 128


# ---- 10. pinned batches -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels", [True, False])
def test_the_loaders_pin_memory_step_pins_every_tensor_of_a_batch(monkeypatch, labels):
    """The DataLoader's pin_memory=True path (torch.utils.data._utils.pin_memory) pins a Batch's tensors. Pinning
    needs a GPU driver, so here Tensor.pin_memory is replaced by a copy that records what it returned."""
    from torch.utils.data._utils.pin_memory import pin_memory

    pinned = []

    def fake_pin(self, *args):
        copy = self.clone()
        pinned.append(copy)
        return copy

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    batch = fixed_batch()
    if not labels:
        batch.labels = None
    out = pin_memory(batch)
    assert isinstance(out, Batch)
    expected = [out.images, out.index] + ([out.labels] if labels else [])
    assert len(pinned) == len(expected) and all(a is b for a, b in zip(pinned, expected, strict=True))
    assert torch.equal(out.images, batch.images) and (out.labels is None) == (not labels)


@pytest.mark.cuda
def test_a_shard_loader_with_pin_memory_returns_pinned_batches(tiny_set):
    from train.data.sources import ShardSource

    batch = next(iter(ShardSource(tiny_set).loader(0, 16, workers=1, pin_memory=True)))
    assert batch.images.is_pinned() and batch.index.is_pinned()


# ---- 11. no host syncs in a training step -------------------------------------------------------------------------
def _project_code(frame_depth: int = 2) -> bool:
    import sys
    from pathlib import Path

    import train

    return sys._getframe(frame_depth).f_code.co_filename.startswith(str(Path(train.__file__).parent))


def _guard_host_syncs(monkeypatch) -> None:
    """Make the project's own code raise where, on a GPU, it would wait for the device: a Python truth value or
    number of a tensor, .item()/.tolist()/.nonzero(), and a .to(device) without non_blocking (from pageable memory a
    plain copy synchronises the stream). torch's own code (say, Adam's CPU step counter) is left alone."""

    def guarded(name, real):
        def check(self, *args, **kwargs):
            if _project_code():
                to_device = name == "to" and not kwargs.get("non_blocking") and any(
                    isinstance(a, (torch.device, str)) for a in (*args, kwargs.get("device")))
                if name != "to" or to_device:
                    raise AssertionError(f"host sync in a training step: Tensor.{name} ({args}, {kwargs})")
            return real(self, *args, **kwargs)
        return check

    for name in ("__bool__", "__int__", "__float__", "__index__", "item", "tolist", "nonzero", "to"):
        monkeypatch.setattr(torch.Tensor, name, guarded(name, getattr(torch.Tensor, name)))


@pytest.mark.parametrize("name", METHODS)
def test_a_training_step_never_waits_for_the_device(name, monkeypatch):
    m = build(name, channels_last=True)
    batch = fixed_batch()
    real_step = type(m).training_step
    for i in range(2):
        with monkeypatch.context() as patch:
            _guard_host_syncs(patch)
            out = real_step(m, batch, torch.Generator().manual_seed(i))
        assert torch.isfinite(out["loss"])


@pytest.mark.cuda
@pytest.mark.parametrize("name", METHODS)
def test_a_cuda_training_step_under_sync_debug_mode_error(name):
    m = build(name, "cuda", channels_last=True)
    batch = fixed_batch(device="cuda")
    for i in range(3):  # the first step allocates (cuDNN autotuning may synchronise)
        if i > 0:
            torch.cuda.set_sync_debug_mode("error")
        try:
            with amp_autocast("cuda", True):
                out = m.training_step(batch, torch.Generator().manual_seed(i))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out["loss"]).item()


# ---- 12. loader workers: this rank's share of the CPUs it may use ------------------------------------------------
@pytest.mark.parametrize("cpus,ranks_here,expected", [(16, None, 15), (16, "8", 1), (64, "8", 7), (2, None, 1),
                                                      (1, None, 1)])
def test_default_workers_are_this_ranks_share_of_the_usable_cpus(monkeypatch, cpus, ranks_here, expected):
    import os

    from train.data.sources import default_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    monkeypatch.setattr(os, "cpu_count", lambda: 128)  # the host's, not what the process may use
    if ranks_here is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", ranks_here)
    assert default_workers() == expected


def test_a_run_without_workers_uses_and_records_the_default(tiny_set, tmp_path, monkeypatch):
    import json
    import os

    from train.run.loop import train

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cls = get_method("rotnet")
    real_start, seen = cls.on_epoch_start, []
    monkeypatch.setattr(cls, "on_epoch_start", lambda self, ctx: seen.append(ctx.workers) or real_start(self, ctx))
    out = tmp_path / "run"
    train(train_config("rotnet", tiny_set, out, max_steps=1, workers=None, epochs=None, log_every=None,
                       ckpt_every=None))  # workers left to the default: what is tested
    assert seen == [2] and json.loads((out / "config.json").read_text())["workers"] == 2
