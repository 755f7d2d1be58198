"""bf16 autocast by default where the CPU computes bf16 natively, fp32 elsewhere and under --no-amp (issue 30).

The CPU's capability is faked both ways (train.process.devices.cpu_bf16_instructions, or torch's own checks beneath it),
so that these hold on any machine."""

import json

import pytest
import torch

from train.methods import get_method
from train.process import devices
from train.run.loop import train

from ..conftest import train_config as cfg


def test_native_bf16_is_read_from_torchs_cpu_checks(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert devices.cpu_bf16_instructions() == []
    assert devices.default_amp(torch.device("cpu"))[0] is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert devices.cpu_bf16_instructions() == ["amx"]
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert devices.default_amp(torch.device("cpu")) == (True, "default on a CPU with native bf16 (avx512_bf16, amx)")
    assert devices.default_amp(torch.device("cuda"))[0] is True


def _run(tiny_set, out, monkeypatch, native: list[str], **changes) -> tuple[list, dict, dict]:
    """A 2-step RotNet run on a CPU faked to have ``native`` bf16 instructions: the autocast state of each step,
    config.json and the weights."""
    monkeypatch.setattr(devices, "cpu_bf16_instructions", lambda: native)
    cls = get_method("rotnet")
    real_step, seen = cls.training_step, []

    def recorded(self, batch, gen):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return real_step(self, batch, gen)

    monkeypatch.setattr(cls, "training_step", recorded)
    train(cfg("rotnet", tiny_set, out, **{"max_steps": 2, **changes}))
    monkeypatch.setattr(cls, "training_step", real_step)
    weights = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    return seen, json.loads((out / "config.json").read_text()), weights


@pytest.mark.parametrize("native", [["avx512_bf16"], ["amx"], []])
def test_bf16_is_the_default_only_on_a_cpu_with_native_bf16(native, tiny_set, tmp_path, monkeypatch):
    seen, config, _ = _run(tiny_set, tmp_path / "run", monkeypatch, native)
    assert seen == [bool(native)] * 2
    assert config["amp"] is bool(native)
    assert config["amp_reason"].startswith("default on a CPU " + ("with" if native else "without") + " native bf16")


def test_no_amp_trains_in_fp32_exactly_as_a_cpu_without_bf16(tiny_set, tmp_path, monkeypatch):
    seen, config, no_amp = _run(tiny_set, tmp_path / "no-amp", monkeypatch, ["avx512_bf16"], amp=False)
    assert seen == [False, False] and (config["amp"], config["amp_reason"]) == (False, "--no-amp")
    _, _, fp32 = _run(tiny_set, tmp_path / "fp32", monkeypatch, [])
    _, _, bf16 = _run(tiny_set, tmp_path / "bf16", monkeypatch, ["avx512_bf16"])
    assert all(torch.equal(no_amp[k], fp32[k]) for k in fp32)  # bit for bit: the fp32 fingerprints hold
    assert not all(torch.equal(bf16[k], fp32[k]) for k in fp32)


def test_a_resumed_run_keeps_the_precision_it_recorded(tiny_set, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _run(tiny_set, out, monkeypatch, [], amp=True)  # --amp on a CPU without native bf16 (a user's choice)
    seen, config, _ = _run(tiny_set, out, monkeypatch, [], max_steps=4, resume=True)
    assert seen == [True, True]
    assert (config["amp"], config["amp_reason"]) == (True, "as the resumed run recorded")
