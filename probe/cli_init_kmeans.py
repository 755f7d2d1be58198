"""`probe init-kmeans`: the k-means initialisation baseline (Table 2 row d) as an ``encoder.pt``.

It lives in `probe` because it reads `probe`'s data specifications (`KIND:PATH`, probe.datasets) and writes an
encoder for `probe linear`; the algorithm is train/models/kmeans_init.py (no data loading there, so `train` does
not depend on `probe`). The images are a seeded random subset of the training split, as the probes will see them:
CIFAR-style data at 32 px, ImageNet-style data as the 224 px centre crop of the shorter side resized to 256,
normalised as `train` feeds its encoders (pixels to (-1, 1), recorded as the encoder's "normalize").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from common.errors import DataError, EncoderError
from common.options import SEED

if TYPE_CHECKING:
    import torch  # imported when the command runs: `probe --help` starts without it

EXAMPLE = """\b
Examples:
  probe init-kmeans cifar --data cifar10-jpg:../shared/data/cifar10-jpg --out runs/kmeans-cifar
  probe linear runs/kmeans-cifar/encoder.pt --data cifar10-jpg:../shared/data/cifar10-jpg --out runs/kmeans-cifar/probe
  probe init-kmeans alexnet --data imagefolder:/data/imagenet --filters random --out runs/random-rescaled
"""


def load_images(data_spec: str, count: int, seed: int, input_size: int, cache_dir: Path | None,
                normalize: str) -> torch.Tensor:
    """`count` training images of `data_spec` (a seeded subset), as the probes would feed them."""
    import torch

    from probe.datasets import open_data, subset, transformed
    from probe.transforms import Normalization, cifar_transform, imagenet_test_transform

    data = open_data(data_spec, cache_dir)
    norm = Normalization.named(normalize)
    size = 32 if data.style == "cifar" else 224
    if size != input_size:
        raise EncoderError(f"{data_spec}: {data.style}-style data is read at {size} px but the architecture takes "
                           f"{input_size} px")
    if len(data.train) < count:
        raise DataError(f"{data_spec}: the training split has {len(data.train)} images, fewer than "
                        f"--n-images {count}")
    transform = cifar_transform(norm) if data.style == "cifar" else imagenet_test_transform(norm, ten_crop=False)
    chosen = transformed(subset(data.train, count, seed), transform)
    images = [chosen[i][0] for i in range(len(chosen))]
    return torch.stack([img.reshape(3, size, size) for img in images])


@click.command("init-kmeans", epilog=None)
@click.argument("arch")
@click.option("--data", "data_spec", required=True, help="The images to initialise from, as KIND:PATH (as `probe "
              "linear --data`); a seeded subset of its training split.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for encoder.pt.")
@click.option("--n-images", type=click.IntRange(min=2), default=160, show_default=True,
              help="Unlabelled images to initialise from (the paper's row: about 160).")
@click.option("--filters", type=click.Choice(["kmeans", "random"]), default="kmeans", show_default=True,
              help="kmeans: filters from k-means on whitened patches; random: keep the seeded random filters "
                   "(Krähenbühl et al.'s 'random + data-dependent scaling').")
@click.option("--between-layer-iterations", type=click.IntRange(min=0), default=10, show_default=True,
              help="Iterations of the between-layer scaling (0: within-layer scaling only).")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seeds the image subset, the random filters, the patch samples, k-means and the scaling.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where archives are extracted (as probe linear).")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads for torch and faiss (default: their choice; 1 on a CPU shared with other jobs, "
                   "where waiting threads stall every step).")
@click.option("--force", is_flag=True, help="Replace an existing OUT/encoder.pt.")
def init_kmeans(arch, data_spec, out_dir, n_images, filters, between_layer_iterations, seed, cache_dir, threads,
                force):
    """Initialise ARCH from unlabelled images as Krähenbühl et al. (ICLR 2016) and save it as OUT/encoder.pt.

    Each layer's filters are k-means centroids of whitened patches of the previous layer's responses, rescaled
    so every channel has zero mean and unit variance on the images, then the layers are rescaled to learn at
    equal rates. ARCH is one of the paper's convolutional encoders (alexnet, alexnet-small, cifar).
    """
    import torch

    from train.models import ENCODERS, build_encoder
    from train.models.encoder_io import save_encoder
    from train.models.kmeans_init import data_dependent_init

    if threads:
        import faiss

        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
    target = out_dir / "encoder.pt"
    if arch not in ENCODERS:
        raise EncoderError(f"{arch}: unknown architecture (known: {', '.join(sorted(ENCODERS))})")
    if target.exists() and not force:
        raise EncoderError(f"{target}: exists; use --force to replace it")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = build_encoder(arch)
    images = load_images(data_spec, n_images, seed, int(encoder.input_size), cache_dir, "half")
    try:
        provenance = data_dependent_init(encoder, images, filters=filters, seed=seed,
                                         between_layer_iterations=between_layer_iterations)
    except ValueError as exc:
        raise EncoderError(f"{arch}: {exc}") from None
    config = {"method": "kmeans-init" if filters == "kmeans" else "random-rescaled", "normalize": "half",
              "data": data_spec, "n_images": n_images, "init": provenance.to_dict()}
    save_encoder(target, encoder, arch, config)
    click.echo(f"wrote {target} ({config['method']} from {n_images} images of {data_spec}, seed {seed})")


init_kmeans.help = f"{init_kmeans.help}\n\n{EXAMPLE}"
