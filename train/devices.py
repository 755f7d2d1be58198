"""Which device a process runs on: one rule for `train` and `probe` (``--device auto | cpu | cuda | cuda:N``)."""

from __future__ import annotations

import re

import torch

from pipeline.errors import DeviceError
from train import distributed as D

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
