"""Which device a process runs on: one rule for `train` and `probe` (``--device auto | cpu | cuda | cuda:N``), and
the precision it trains in by default (bf16 autocast where the hardware computes bf16 natively)."""

from __future__ import annotations

import re

import torch

from common.errors import DeviceError
from train.process import distributed as D

# What --device accepts; anything else would reach torch.device and end in a traceback.
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICE_HELP = "auto | cpu | cuda | cuda:N"


def pick_device(name: str = "auto") -> torch.device:
    """CUDA (this process's local rank under torchrun) when present, else CPU.

    Under torchrun each process trains on the GPU of its LOCAL_RANK: an explicit ``cuda:N`` naming another one
    would put several ranks on one GPU, where NCCL refuses to start, so it is refused here in one line.
    """
    if not DEVICE_NAME.fullmatch(name):
        raise DeviceError(f"--device {name!r}: not a device this trainer runs on ({DEVICE_HELP})")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name} asked for, but no CUDA device is visible")
        _, local_rank, world = D.env_world()
        if world > 1 and dev.index is not None and dev.index != local_rank:
            raise DeviceError(f"--device {name} under torchrun: each process trains on the GPU of its LOCAL_RANK "
                              f"(cuda:{local_rank} for this one); pass --device cuda (or auto)")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        if dev.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {dev}: only {torch.cuda.device_count()} CUDA device(s) visible")
        torch.cuda.set_device(dev)
    return dev


def cpu_bf16_instructions() -> list[str]:
    """The CPU's native bf16 instruction sets, as torch's own checks report them (those oneDNN dispatches on):
    ``avx512_bf16`` and/or ``amx`` (AMX tiles, whose bf16 form every AMX CPU has); empty where bf16 would be
    emulated."""
    found = []
    if torch.cpu._is_avx512_bf16_supported():
        found.append("avx512_bf16")
    if torch.cpu._is_amx_tile_supported():
        found.append("amx")
    return found


def default_amp(device: torch.device) -> tuple[bool, str]:
    """Whether a run on ``device`` trains under bf16 autocast when neither ``--amp`` nor ``--no-amp`` is given, and
    why: on CUDA, and on a CPU with native bf16 (1.3-1.6x faster steps there: bench/results/cpu-bf16.md); fp32 on
    other CPUs, which emulate bf16 and would be slower."""
    if device.type == "cuda":
        return True, "default on CUDA"
    native = cpu_bf16_instructions()
    if native:
        return True, f"default on a CPU with native bf16 ({', '.join(native)})"
    return False, "default on a CPU without native bf16 (AVX512-BF16 or AMX)"
