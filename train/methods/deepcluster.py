"""DeepCluster (Caron et al., 2018): alternate k-means on the network's features and learning to predict the
cluster ids.

Each epoch starts with a clustering pass over the whole set, in fp32 on every device: fc7 features (before the
last ReLU, dropout off) of a centre view, PCA-whitened to 256 dimensions, L2-normalised, k-means (k = 10,000 at
ImageNet scale). The pseudo-labels are a tensor indexed by the sample's global index, looked up while streaming; the
top layer is re-initialised (and its momentum cleared) after each reassignment, since its old rows mean
nothing for the new clusters.

Memory stays bounded: only the first ``pca_samples`` raw fc7 vectors are kept (to fit the PCA); every later
batch is projected to 256 dimensions on the fly, so 1.28M samples take 1.28M x 256 floats, not 1.28M x 4096.

Under torchrun every rank featurises its share of the set; the PCA is fitted on rank 0 to the first rows of every
rank (``pca_samples`` in all), the features are gathered on rank 0, which clusters and broadcasts the labels.

Native augmentation: random resized crops (area 0.08-1, aspect 3/4-4/3) and horizontal flips; optimiser SGD lr
0.05, momentum 0.9, weight decay 1e-5, batch 256, constant rate. Optional Sobel input (``--sobel``).

On a real image set (``KIND:PATH``) the loader workers resize each image's shorter side to 256 and keep the centre
256 px square (``real_input_scale``); the random-resized crop to 224 and the flip then run on the device. The
DeepCluster loader (github.com/facebookresearch/deepcluster, main.py: ``RandomResizedCrop(224)``,
``RandomHorizontalFlip``) cropped from the full-size image; taking the crops from the 256 px image, as the ImageNet
loaders of the linear probes do, keeps the decode small (JPEG DCT scaling) and the crops' content the same up to
the long side's margins. The clustering pass sees the centre 224 of the 256 square, as on rendered patches.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from common.options import opt
from pipeline.memory import check_sample_buffers
from train.augment import views
from train.data.sources import Batch
from train.methods import register_method
from train.methods.base import EpochContext, Method, MethodOptions, RunContext, constant_schedule, sgd
from train.models import clustering, output_shape
from train.models.heads import classifier_head
from train.process import distributed as D

log = logging.getLogger(__name__)


def weighted_cross_entropy(logits: Tensor, labels: Tensor, class_weights: Tensor) -> Tensor:
    """Mean over the batch of w[y] * CE: the uniform-over-clusters loss in expectation (see
    :func:`train.models.clustering.cluster_weights`)."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    return (ce * class_weights[labels]).mean()


def _in_full_fp32(method: Callable) -> Callable:
    """Run a step of the clustering pass in plain fp32 on every device (:func:`train.models.clustering.full_fp32`):
    features (no bf16 autocast), PCA, projection and k-means distances (no TF32). The price is an fp32 forward pass over
    the set once an epoch, where training steps run in bf16."""

    @functools.wraps(method)
    def in_fp32(self: DeepCluster, *args: Any, **kwargs: Any) -> Any:
        with clustering.full_fp32(self.device.type):
            return method(self, *args, **kwargs)

    return in_fp32


@dataclass
class DeepClusterOptions(MethodOptions):
    lr: float = opt(0.05, "SGD learning rate", min=0, min_open=True)
    weight_decay: float = opt(1e-5, "weight decay", min=0)
    momentum: float = opt(0.9, "SGD momentum", min=0, max=1, max_open=True)
    k: int = opt(0, "number of clusters (0: 10,000 at ImageNet scale, the same samples per cluster below)",
                 min=2, auto=0)
    pca_dim: int = opt(256, "PCA dimensions before k-means", min=1)
    pca_samples: int = opt(20_000, "raw features kept to fit the PCA (bounds memory)", min=1)
    kmeans_iters: int = opt(20, "k-means iterations", min=1)
    kmeans_backend: str = opt("auto", "faiss | torch | auto (torch on CUDA, faiss on CPU)",
                              choices=("auto", "faiss", "torch"))
    head_dim: int = opt(4096, "width of fc6/fc7", min=1)
    sobel: bool = opt(False, "grayscale + Sobel filtering in front of conv1, as in the DeepCluster paper")
    uniform: bool = opt(True, "weight the loss so that every cluster counts equally (uniform sampling)")
    feature_batch_size: int = opt(0, "batch size of the clustering pass (0: 2 x the training batch)", min=1, auto=0)


class _PassProgress:
    """What a clustering pass is doing (minutes at ImageNet scale): a bar over the feature batches, its description
    naming the phase (features, PCA, k-means), when progress is shown; otherwise one INFO line per phase. Only the
    main process reports."""

    def __init__(self, ctx: EpochContext, batches: int) -> None:
        self.epoch = ctx.epoch
        self.bar = tqdm(total=batches, unit="batch", dynamic_ncols=True, leave=False,
                        disable=not (ctx.progress and D.is_main()), desc=f"clustering, epoch {ctx.epoch}")
        self.log = D.is_main() and not ctx.progress

    def phase(self, text: str) -> None:
        if self.log:
            log.info("deepcluster: clustering, epoch %d: %s", self.epoch, text)
        self.bar.set_postfix_str(text, refresh=True)

    def advance(self) -> None:
        self.bar.update(1)

    def close(self, text: str = "") -> None:
        if text:
            self.phase(text)
        self.bar.close()


@register_method
class DeepCluster(Method):
    name = "deepcluster"
    Options = DeepClusterOptions
    summary = ("DeepCluster (Caron et al., 2018): alternate k-means on the network's features and learning to "
               "predict the cluster ids.")
    examples = ("train deepcluster shards/mono-a --out runs/dc-mono-a",
                "train deepcluster shards/cifar-b --arch cifar --k 100 --epochs 50 --out runs/dc-cifar")
    default_arch = "alexnet"
    default_epochs = 500
    default_batch_size = 256
    gradient_sync = "ddp"  # one optimiser, one backward per step
    small_options = {"head_dim": 64, "k": 4, "pca_dim": 16}

    @classmethod
    def real_input_scale(cls, input_size: int) -> int:
        """256 px for a 224 px network (random-resized crops to 224 taken on the device), else its own size."""
        return input_size if input_size <= 64 else round(input_size * 256 / 224)

    def __init__(self, opts: DeepClusterOptions, arch: str, num_samples: int, num_classes=None, device="cpu"):
        # before anything is sized by the count (a manifest may claim 10^12 samples): each sample holds a label
        # here, and in a clustering pass its index, its new label and its reduced features (gathered, normalised)
        check_sample_buffers(num_samples, 4 * 8 + 3 * 4 * opts.pca_dim, "pseudo-labels and clustering features",
                             "deepcluster")
        super().__init__(opts, arch, num_samples, num_classes, device)
        self.k = opts.k or clustering.default_k(num_samples)
        if self.k > num_samples:
            raise ValueError(f"deepcluster: k = {self.k} clusters for only {num_samples} samples")
        note = clustering.sparse_clusters_note(num_samples, self.k, k_given=opts.k > 0)
        if note and D.is_main():
            log.warning("deepcluster: %s", note)
        feat_dim = math.prod(output_shape(self.encoder))
        self.head = classifier_head(feat_dim, opts.head_dim, None, dropout=0.5)
        self.top_layer = nn.Linear(opts.head_dim, self.k)
        self.reset_top_layer()
        # Pseudo-labels by global sample index (-1: not assigned) and the epoch they were computed for.
        self.register_buffer("labels", torch.full((num_samples,), -1, dtype=torch.int64), persistent=False)
        self.register_buffer("class_weights", torch.ones(self.k), persistent=False)
        self.clustered_epoch = -1

    def encoder_arch_kwargs(self) -> dict[str, Any]:
        return {"sobel": True} if self.opts.sobel else {}

    def configure(self, ctx: RunContext) -> None:
        o: DeepClusterOptions = self.opts
        self.optimizers["main"] = sgd(self.parameters(), o, momentum=o.momentum)
        self.schedulers["main"] = constant_schedule(self.optimizers["main"])

    def reset_top_layer(self) -> None:
        with torch.no_grad():
            self.top_layer.weight.normal_(0, 0.01)
            self.top_layer.bias.zero_()
        opt_ = self.optimizers.get("main") if hasattr(self, "optimizers") else None
        if opt_ is not None:
            for p in self.top_layer.parameters():
                opt_.state.pop(p, None)  # stale momentum would push the fresh rows toward old clusters

    # ---- the clustering pass ------------------------------------------------------------------------------
    def features(self, x: Tensor) -> Tensor:
        """fc7 before its ReLU (as DeepCluster clusters), for a float batch already at input size."""
        h = self.encoder(self.prepare(x))
        return self.head[:-1](h)

    def center_view(self, images: Tensor) -> Tensor:
        """The deterministic view used for clustering: a centre crop of the input size (224 of 256, as
        DeepCluster's resize-256 / centre-crop-224), resized when the renders are smaller."""
        frac = min(1.0, self.input_size / images.shape[-1])
        return views.center_crop_resize(views.to_unit_range(images), self.input_size, crop_fraction=frac)

    def feature_batch_size(self, ctx: EpochContext) -> int:
        return self.opts.feature_batch_size or 2 * ctx.batch_size

    @torch.no_grad()
    @_in_full_fp32
    def compute_features(self, ctx: EpochContext, shown: _PassProgress | None = None,
                         ) -> tuple[Tensor | None, Tensor | None]:
        """PCA-reduced features and indices of the whole set, on rank 0 (None elsewhere)."""
        o: DeepClusterOptions = self.opts
        was = self.training
        self.eval()
        bs = self.feature_batch_size(ctx)
        shown = shown or _PassProgress(ctx, 0)
        pca_rows = max(o.pca_dim + 1, math.ceil(o.pca_samples / D.world_size()))
        raw, raw_idx, red, red_idx = [], [], [], []
        pca: clustering.PCA | None = None
        n_raw = 0
        loader = ctx.source.loader(0, bs, shuffle=False, drop_last=False, seed=ctx.seed, workers=ctx.workers,
                                   pin_memory=ctx.pin_memory)
        for batch in loader:
            batch = batch.to(self.device)
            f = self.features(self.center_view(batch.images)).float()
            if pca is None:
                raw.append(f.cpu())
                raw_idx.append(batch.index.cpu())
                n_raw += len(f)
                if n_raw >= pca_rows:
                    shown.phase(f"PCA to {o.pca_dim} dimensions, fitted on {n_raw} x {f.shape[1]} features")
                    pca = self._fit_pca(torch.cat(raw))
                    shown.phase("features, projected to the PCA while streaming")
            else:
                red.append(pca(f).cpu())
                red_idx.append(batch.index.cpu())
            shown.advance()
        if pca is None:  # this rank's share was smaller than the PCA sample
            shown.phase(f"PCA to {o.pca_dim} dimensions, fitted on {n_raw} features")
            pca = self._fit_pca(torch.cat(raw) if raw else torch.zeros(0, o.head_dim))
        if raw:
            red.insert(0, torch.cat([pca(r.to(pca.proj.device)).cpu() for r in raw]))
            red_idx.insert(0, torch.cat(raw_idx))
        feats = torch.cat(red) if red else torch.zeros(0, pca.proj.shape[1])
        idx = torch.cat(red_idx) if red_idx else torch.zeros(0, dtype=torch.int64)
        self.train(was)
        comm = self.device if self.device.type == "cuda" else torch.device("cpu")
        feats = D.gather_rows(feats, comm)
        idx = D.gather_rows(idx, comm)
        return feats, idx

    def _fit_pca(self, raw: Tensor) -> clustering.PCA:
        """Fit on every rank's first rows (each keeps its 1/world share of ``pca_samples``), gathered on rank 0, and
        share the result, so all ranks project alike."""
        o: DeepClusterOptions = self.opts
        raw = D.gather_rows(raw, self.device if self.device.type == "cuda" else torch.device("cpu"))
        if D.is_main():
            if raw.shape[0] < 2:
                raise ValueError("deepcluster: too few samples to fit the PCA")
            pca = clustering.fit_pca(raw.to(self.device), o.pca_dim)
            payload = [pca.mean.cpu(), pca.proj.cpu()]
        else:
            payload = None
        mean, proj = D.broadcast_object(payload)
        return clustering.PCA(mean.to(self.device), proj.to(self.device))

    @_in_full_fp32
    def cluster(self, feats: Tensor, idx: Tensor, seed: int) -> tuple[Tensor, dict[str, float]]:
        """k-means on (PCA-reduced) features; returns labels by global index."""
        o: DeepClusterOptions = self.opts
        if len(idx) != self.num_samples or torch.unique(idx).numel() != self.num_samples:
            raise ValueError(f"deepcluster: the clustering pass saw {len(idx)} samples "
                             f"({torch.unique(idx).numel()} distinct) but the set holds {self.num_samples}")
        if int(idx.max()) >= self.num_samples or int(idx.min()) < 0:
            raise ValueError("deepcluster: sample indices outside 0..N-1; is the set complete?")
        dev = self.device
        x = clustering.l2_normalize(feats.to(dev).float())
        assign, _ = clustering.kmeans(x, self.k, niter=o.kmeans_iters, seed=seed, backend=o.kmeans_backend)
        labels = torch.full((self.num_samples,), -1, dtype=torch.int64)
        labels[idx.cpu()] = assign.cpu()
        sizes = torch.bincount(labels, minlength=self.k)
        stats = {"clusters_nonempty": float((sizes > 0).sum()), "cluster_size_max": float(sizes.max())}
        return labels, stats

    def on_epoch_start(self, ctx: EpochContext) -> dict[str, float]:
        if self.clustered_epoch == ctx.epoch:
            return {}  # resumed mid-epoch: the checkpoint carried this epoch's labels
        t0 = time.perf_counter()
        shown = _PassProgress(ctx, math.ceil(self.num_samples / D.world_size() / self.feature_batch_size(ctx)))
        shown.phase(f"features of {self.num_samples} samples")
        feats, idx = self.compute_features(ctx, shown)
        t_feat = time.perf_counter() - t0
        stats: dict[str, float] = {}
        if D.is_main():
            shown.phase(f"k-means, k = {self.k}, on {feats.shape[0]} x {feats.shape[1]} "
                        f"({self.opts.kmeans_iters} iterations; features took {t_feat:.1f} s)")
            labels, stats = self.cluster(feats, idx, seed=ctx.seed * 1000 + ctx.epoch)
            shown.close(f"done in {time.perf_counter() - t0:.1f} s")
            prev = self.labels.cpu()
            if (prev >= 0).all():
                stats["nmi_prev"] = clustering.nmi(labels, prev)
        else:
            labels = torch.empty(self.num_samples, dtype=torch.int64)
        comm = self.device if self.device.type == "cuda" else torch.device("cpu")
        labels = D.broadcast(labels.to(comm)).to(self.device)
        self.set_labels(labels, ctx.epoch)
        stats.update(cluster_seconds=time.perf_counter() - t0, feature_seconds=t_feat)
        return stats

    def set_labels(self, labels: Tensor, epoch: int) -> None:
        if labels.shape != (self.num_samples,) or bool((labels < 0).any()):  # once an epoch, not every step
            raise ValueError(f"deepcluster: pseudo-labels for {labels.shape[0]} samples, "
                             f"{int((labels < 0).sum())} without a cluster, for a set of {self.num_samples}")
        self.labels = labels.to(self.device)
        if self.opts.uniform:
            self.class_weights = clustering.cluster_weights(self.labels, self.k).to(self.device)
        else:
            self.class_weights = torch.ones(self.k, device=self.device)
        self.clustered_epoch = epoch
        self.reset_top_layer()
        D.broadcast_module(self.top_layer)  # every rank starts the epoch from the same fresh top layer

    # ---- training -----------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        return self.top_layer(F.relu(self.features(x)))

    def augment(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return views.random_resized_crop(views.to_unit_range(images), self.input_size, scale=(0.08, 1.0),
                                         generator=generator)

    def example_views(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        return [self.augment(images, generator)]

    def training_step(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        # No checks of the batch here: a Python test of a CUDA tensor waits for the GPU every step. The epoch's
        # clustering pass checked every index its batches carry (cluster) and that each has a label (set_labels).
        y = self.labels[batch.index]
        x = self.augment(batch.images, generator)
        logits = self.replicated(x)
        loss = weighted_cross_entropy(logits.float(), y, self.class_weights)
        self.optimizer_step("main", loss)
        return {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean().detach()}

    # ---- resume -------------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"labels": self.labels.cpu().clone(), "clustered_epoch": self.clustered_epoch, "k": self.k}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("k") != self.k:
            raise ValueError(f"checkpoint has k = {state.get('k')}, this run k = {self.k}")
        if state.get("clustered_epoch", -1) >= 0:
            self.labels = state["labels"].to(self.device)
            self.class_weights = (clustering.cluster_weights(self.labels, self.k) if self.opts.uniform
                                  else torch.ones(self.k)).to(self.device)
        self.clustered_epoch = int(state.get("clustered_epoch", -1))
