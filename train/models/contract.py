"""The encoder contract: an encoder is any ``nn.Module`` with named feature taps.

``probe`` (linear probes, fine-tuning, filter pictures) and ``train`` (the heads the methods put on an encoder) use
only what :class:`TapEncoder` declares, so an AlexNet's conv1..conv5, a ResNet's stages or a ViT's blocks are
probed alike. A new encoder implements it (subclassing is not needed: it is a structural ``Protocol``) and is
registered with :func:`train.models.registry.register_encoder`; docs/architecture.md ("How to add an encoder")
walks through one.

Rules every encoder keeps (``tests/train/test_models.py`` checks each registered encoder against them):

- ``taps``: the names of its feature taps, in network order (non-empty, unique).
- ``input_size`` / ``input_channels``: the square input it was designed for, and the channels of the images it
  takes (3, RGB, also when a fixed front end such as DeepCluster's Sobel filter turns them into something else).
- ``forward_taps(x, names)``: the outputs of the requested taps (all when ``names`` is None), after their
  activation, keyed in network order; it runs the network only as deep as the deepest tap requested. A tap is a
  (B, C, H, W) map or a (B, D) vector. An unknown name raises ``KeyError``.
- ``forward(x)``: the final representation a classifier head sits on ((B, ...), flattened by the head).
- ``first_layer_weight()``: the first layer's filters as trained, (out, in, k, k), for filter pictures; None for
  an encoder without learnt first-layer filters.
- ``tap_module(name)``: the module holding the parameters that produce tap ``name`` beyond the previous tap (for
  freezing, or copying layers up to a tap). Over all taps these modules partition the encoder's parameters: every
  parameter belongs to exactly one tap's module (parameters before the first tap belong to the first one,
  anything ``forward`` applies after the last tap to the last one).
- ``for_probing()``: an eval-mode copy to take frozen features from, with normalisation folded into the layers
  where that applies (BatchNorm into the preceding convolution, see :func:`train.models.folding.fold_batchnorm`),
  else a plain eval-mode copy (``copy.deepcopy(self).eval()``); its ``forward_taps`` equals the original's in eval
  mode, and the original is left as it was.
- It is rebuilt from its registered name and keyword arguments and its ``state_dict`` (``encoder.pt``), so every
  tensor it needs is a parameter or a buffer, and every registered factory builds with no arguments.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@runtime_checkable
class TapEncoder(Protocol):
    """What probes, fine-tuning and pictures may use of an encoder (see the module's rules)."""

    taps: tuple[str, ...]
    input_size: int
    input_channels: int

    def forward_taps(self, x: Tensor, names: Sequence[str] | None = None) -> dict[str, Tensor]: ...

    def forward(self, x: Tensor) -> Tensor: ...

    def first_layer_weight(self) -> Tensor | None: ...

    def tap_module(self, name: str) -> nn.Module: ...

    def for_probing(self) -> TapEncoder: ...


CONTRACT_MEMBERS = ("taps", "input_size", "input_channels", "forward_taps", "forward", "first_layer_weight",
                    "tap_module", "for_probing")


def check_encoder(module: object, name: str) -> None:
    """Raise ``TypeError`` naming what ``module`` (registered as ``name``) lacks of the contract."""
    missing = [member for member in CONTRACT_MEMBERS if not hasattr(module, member)]
    if not isinstance(module, nn.Module):
        missing.insert(0, "nn.Module base class")
    if missing:
        raise TypeError(f"encoder {name!r} ({type(module).__name__}) does not implement the encoder contract "
                        f"(train/models/contract.py): missing {', '.join(missing)}")
    taps = module.taps
    if not isinstance(taps, tuple) or not taps or not all(isinstance(t, str) for t in taps) \
            or len(set(taps)) != len(taps):
        raise TypeError(f"encoder {name!r}: taps must be a non-empty tuple of unique names, got {taps!r}")
    for attribute in ("input_size", "input_channels"):
        value = getattr(module, attribute)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TypeError(f"encoder {name!r}: {attribute} must be a positive int, got {value!r}")


def select_taps(taps: Sequence[str], names: Sequence[str] | None) -> list[str]:
    """The requested tap names (all when None), checked against ``taps``; ``KeyError`` for unknown ones.

    A helper for ``forward_taps`` implementations: the caller runs up to ``taps.index`` of the deepest one.
    """
    wanted = list(taps) if names is None else list(names)
    unknown = [n for n in wanted if n not in taps]
    if unknown:
        raise KeyError(f"unknown tap(s) {unknown}; this encoder has {list(taps)}")
    return wanted


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """`module` in eval mode for the block; afterwards each of its submodules in the mode it had. Restored one by
    one, not with ``module.train(was)``: a module may hold submodules in another mode than itself (MonoGAN's critic
    keeps its BatchNorm layers, which belong to the shared encoder, in eval mode while training)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, was_training in modes:
            m.training = was_training


@torch.no_grad()
def output_shape(encoder: TapEncoder, input_size: int | None = None) -> tuple[int, ...]:
    """The shape of ``forward``'s output for one square input (default: the encoder's design size), in eval mode
    (the encoder's mode is restored), on the encoder's device and dtype."""
    size = input_size or encoder.input_size
    reference = next(iter(encoder.parameters()), None) if isinstance(encoder, nn.Module) else None
    device, dtype = (reference.device, reference.dtype) if reference is not None else (None, None)
    with evaluating(encoder):
        y = encoder(torch.zeros(1, encoder.input_channels, size, size, device=device, dtype=dtype))
    return tuple(y.shape[1:])


@torch.no_grad()
def tap_shapes(encoder: TapEncoder, names: Sequence[str], input_size: int | None = None) -> dict[str, tuple]:
    """The shape (without the batch dimension) of each named tap for one square input, in eval mode."""
    size = input_size or encoder.input_size
    with evaluating(encoder):
        taps = encoder.forward_taps(torch.zeros(1, encoder.input_channels, size, size), list(names))
    return {name: tuple(value.shape[1:]) for name, value in taps.items()}
