"""The k-means initialisation baseline (paper Table 2 row d): Krähenbühl, Doersch, Donahue, Darrell, "Data-dependent
initializations of convolutional neural networks" (ICLR 2016).

From a few unlabelled images (the paper's row: about 160), layer by layer in network order:

1. filters (``filters="kmeans"``): patches of the layer's input (the previous block's output after its ReLU and
   pool; the image, or its Sobel gradients, for conv1), one per output position, up to ``max_patches`` sampled
   from the seed, are whitened (PCA whitening with a regulariser of 1% of the mean patch variance, our choice)
   and clustered by k-means (``train.models.clustering.kmeans``: faiss on the CPU) into as many clusters as the layer
   has filters. A centroid ``c`` in whitened space is the filter ``P c`` on raw patches (``P`` the whitening
   projection), with bias ``-P c . mean``: its response is the dot product of ``c`` with the whitened patch.
   ``filters="random"`` keeps the seeded random init instead (the paper's "random + data-dependent scaling").
2. within-layer scaling: each output channel's weights and bias are set so that its pre-activation (the
   convolution's output, before BatchNorm, which stays at identity) has mean 0 and standard deviation 1 over the
   images and positions.

Then the between-layer scaling (their Algorithm 2): ``iterations`` times, the rate of change of each layer, ``E
||dL/dW_k||^2 / ||W_k||^2``, is estimated on a seeded batch of the images with a random linear function of the
encoder's output as the loss L (no labels exist; a random direction per image, so the gradients of different images
are uncorrelated and the batch estimate is unbiased); layer k's weights are multiplied by ``(rate_k / geometric mean
of the rates) ** (damping / 2)`` (damping 0.25; relative to the others, a layer's rate falls as the fourth power of
its own weights' scale, so each iteration about halves the spread of the log rates) and its bias by the product of
these factors up to k (so the layers above see their input scaled and nothing else). ReLU and max-pooling commute
with positive scales, so each tap only changes scale: the documented result (checked by the tests) is that layer k's
pre-activation has mean 0 and standard deviation ``scale_k`` on the images, ``scale_k`` recorded in the provenance.

Works on :class:`train.models.encoders.ConvEncoder` architectures (``alexnet``, ``alexnet-small``, ``cifar``):
blocks of conv, BN, ReLU and pool. Deterministic from the seed. The result is a normal encoder (saved with
``train.models.encoder_io.save_encoder``); ``probe init-kmeans`` builds one from a data specification.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from train.models.clustering import fit_pca, kmeans
from train.models.encoders import ConvEncoder

FILTERS = ("kmeans", "random")
WHITENING_REGULARISER = 0.01  # of the mean patch variance, added to every eigenvalue before whitening
DAMPING = 0.25
BATCH = 32  # images per forward pass, and per rate estimate of the between-layer scaling


@dataclass
class InitProvenance:
    """What an initialisation did, for the encoder's config: per layer, the k-means inputs and the scales."""

    filters: str
    seed: int
    images: int
    patches: dict[str, int] = field(default_factory=dict)
    between_layer_scales: dict[str, float] = field(default_factory=dict)
    between_layer_iterations: int = 0

    def to_dict(self) -> dict:
        return {"filters": self.filters, "seed": self.seed, "images": self.images, "patches": self.patches,
                "between_layer_scales": self.between_layer_scales,
                "between_layer_iterations": self.between_layer_iterations,
                "whitening_regulariser": WHITENING_REGULARISER, "damping": DAMPING}


def _blocks(encoder: ConvEncoder) -> list[tuple[str, nn.Sequential]]:
    return [(name, encoder.tap_module(name)) for name in encoder.taps]


@torch.no_grad()
def _forward_in_batches(fn, x: Tensor) -> Tensor:
    return torch.cat([fn(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])


def _block_output(block: nn.Sequential, x: Tensor) -> Tensor:
    """The input of the next block: ReLU(BN(conv x)), pooled where the block pools (BN in eval mode)."""
    return block(x)


def _sample_patches(inputs: Tensor, conv: nn.Conv2d, max_patches: int, generator: torch.Generator) -> Tensor:
    """(n, in * k * k) patches at the convolution's output positions, a seeded sample of at most `max_patches`."""
    rows = []
    for i in range(0, len(inputs), BATCH):
        cols = nn.functional.unfold(inputs[i:i + BATCH], conv.kernel_size, conv.dilation, conv.padding,
                                    conv.stride)  # (b, D, positions)
        rows.append(cols.transpose(1, 2).reshape(-1, cols.shape[1]))
    patches = torch.cat(rows)
    if len(patches) > max_patches:
        patches = patches[torch.randperm(len(patches), generator=generator)[:max_patches].sort().values]
    return patches


def _kmeans_filters(conv: nn.Conv2d, patches: Tensor, seed: int, name: str) -> None:
    """Set `conv`'s weights and bias from k-means centroids of the whitened patches."""
    k = conv.out_channels
    if len(patches) < k:
        raise ValueError(f"k-means init: {name} has {k} filters but the images give only {len(patches)} patches "
                         "of its input; use more images")
    regulariser = WHITENING_REGULARISER * patches.double().var(0).mean().item()
    pca = fit_pca(patches, patches.shape[1], whiten=True, eps=max(regulariser, 1e-12))
    _, centroids = kmeans(pca(patches), k, niter=20, seed=seed, backend="faiss")
    weight = centroids.float() @ pca.proj.T  # (k, D): the response c . ((x - mean) P) as a filter on x
    conv.weight.copy_(weight.reshape(conv.weight.shape))
    conv.bias.copy_(-(weight @ pca.mean))


def _normalise_channels(conv: nn.Conv2d, inputs: Tensor) -> None:
    """Within-layer scaling: pre-activations of mean 0 and standard deviation 1 per channel on `inputs`."""
    out = _forward_in_batches(conv, inputs).transpose(0, 1).flatten(1).double()  # (channels, samples)
    mean, std = out.mean(1), out.std(1)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))  # a dead channel (constant) is only centred
    conv.weight.div_(std.float().reshape(-1, 1, 1, 1))
    conv.bias.copy_(((conv.bias.double() - mean) / std).float())


@torch.no_grad()
def within_layer_init(encoder: ConvEncoder, images: Tensor, filters: str, seed: int, max_patches: int,
                      provenance: InitProvenance) -> None:
    """Steps 1 and 2 for every block in order (each block sees the already initialised ones before it)."""
    x = encoder.sobel(images) if encoder.sobel is not None else images
    for index, (name, block) in enumerate(_blocks(encoder)):
        if filters == "kmeans":
            generator = torch.Generator().manual_seed(seed * 1000 + index)
            patches = _sample_patches(x, block.conv, max_patches, generator)
            provenance.patches[name] = len(patches)
            _kmeans_filters(block.conv, patches, seed * 1000 + index, name)
        _normalise_channels(block.conv, x)
        x = _forward_in_batches(lambda b, blk=block: _block_output(blk, b), x)


def _change_rates(encoder: ConvEncoder, images: Tensor, generator: torch.Generator) -> Tensor:
    """E ||dL/dW_k||^2 / ||W_k||^2 per block, L a random linear function of the output (one direction per image)."""
    convs = [block.conv for _, block in _blocks(encoder)]
    encoder.zero_grad(set_to_none=True)
    pick = torch.randperm(len(images), generator=generator)[:BATCH]
    out = encoder(images[pick]).flatten(1)
    direction = torch.randn(out.shape, generator=generator)
    (out * direction).sum().backward()
    rates = torch.stack([conv.weight.grad.double().square().sum() / len(pick) /
                         conv.weight.double().square().sum() for conv in convs])
    encoder.zero_grad(set_to_none=True)
    return rates


def between_layer_scaling(encoder: ConvEncoder, images: Tensor, seed: int, iterations: int,
                          provenance: InitProvenance) -> None:
    """Equalise the layers' rates of change (Algorithm 2); records each layer's total scale."""
    convs = [block.conv for _, block in _blocks(encoder)]
    totals = torch.ones(len(convs), dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(iterations):
        with torch.enable_grad():
            rates = _change_rates(encoder, images, generator)
        if not torch.isfinite(rates).all() or (rates <= 0).any():
            raise ValueError(f"k-means init: a layer's rate of change is {rates.tolist()} (dead network?)")
        # scaling one layer's weights by s divides its rate by s^2 and multiplies every other layer's by s^2
        # (ReLU nets are homogeneous): relative to the others, s^-4. Grow the fast layers, by a damped step.
        own = (rates / rates.log().mean().exp()) ** (DAMPING / 2)
        scales = own.cumprod(0)  # the scale of each layer's output: its own times those of the layers below
        with torch.no_grad():
            for conv, weight_scale, output_scale in zip(convs, own.tolist(), scales.tolist(), strict=True):
                conv.weight.mul_(weight_scale)
                conv.bias.mul_(output_scale)
        totals *= scales.detach()
    provenance.between_layer_iterations = iterations
    provenance.between_layer_scales = {name: float(t) for (name, _), t in zip(_blocks(encoder), totals,
                                                                               strict=True)}


def data_dependent_init(encoder: nn.Module, images: Tensor, *, filters: str = "kmeans", seed: int = 0,
                        between_layer_iterations: int = 10, max_patches: int = 20_000) -> InitProvenance:
    """Initialise `encoder` in place from `images` (N, C, H, W, normalised as the probes will feed it)."""
    if not isinstance(encoder, ConvEncoder):
        raise ValueError(f"k-means init works on the paper's convolutional encoders (alexnet, alexnet-small, "
                         f"cifar), not {getattr(encoder, 'arch', type(encoder).__name__)!r}")
    if filters not in FILTERS:
        raise ValueError(f"k-means init: filters {filters!r} is not one of {', '.join(FILTERS)}")
    if len(images) < 2:
        raise ValueError("k-means init needs at least 2 images")
    was_training = encoder.training
    encoder.eval()  # BatchNorm at identity (its running statistics), as the probes read the network
    provenance = InitProvenance(filters, seed, len(images))
    within_layer_init(encoder, images, filters, seed, max_patches, provenance)
    if between_layer_iterations:
        between_layer_scaling(encoder, images, seed, between_layer_iterations, provenance)
    else:
        provenance.between_layer_scales = {name: 1.0 for name in encoder.taps}
    encoder.train(was_training)
    return provenance


def pre_activation_stats(encoder: ConvEncoder, images: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """Per tap, the (mean, std) per channel of the convolution's output on `images` (what the init sets)."""
    stats = {}
    with torch.no_grad():
        x = encoder.sobel(images) if encoder.sobel is not None else images
        for name, block in _blocks(encoder):
            out = _forward_in_batches(block.conv, x).transpose(0, 1).flatten(1).double()
            stats[name] = (out.mean(1), out.std(1))
            x = _forward_in_batches(lambda b, blk=block: _block_output(blk, b), x)
    return stats


__all__ = ["FILTERS", "InitProvenance", "data_dependent_init", "pre_activation_stats"]
