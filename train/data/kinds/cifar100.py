"""`cifar100:PATH`: CIFAR-100 as the python pickles of its distribution, read as CIFAR-10's with the 100 fine labels."""

from __future__ import annotations

from train.data.kinds import register_kind
from train.data.kinds.cifar10 import Cifar10


@register_kind
class Cifar100(Cifar10):
    name = "cifar100"
    summary = "CIFAR-100 python pickles: PATH is cifar-100-python/ or the folder holding it"
