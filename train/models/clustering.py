"""DeepCluster's clustering step as pure functions: PCA-whitening, L2 normalisation, k-means, empty clusters.

Everything takes and returns tensors; nothing here knows about networks or data loading, so it is tested on
synthetic features (planted clusters) and reused by the benchmark.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

MIN_POINTS_PER_CENTROID = 39  # faiss warns below this many training points per centroid (see sparse_clusters_note)


@contextlib.contextmanager
def full_fp32(device_type: str) -> Iterator[None]:
    """Plain fp32 arithmetic on every device: no autocast, and no TF32, which on CUDA rounds the inputs of fp32
    matrix products to 10 mantissa bits. The clustering pass runs in it: PCA-whitening divides by the smallest of the
    kept eigenvalues, amplifying rounding errors in those directions, and the CPU path (faiss) computes in fp32."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    try:
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


@dataclass
class PCA:
    mean: Tensor  # (D,)
    proj: Tensor  # (D, d): eigenvectors scaled by eigenvalue^-1/2 (whitening)

    def __call__(self, x: Tensor) -> Tensor:
        return (x.to(self.proj.dtype) - self.mean) @ self.proj


def fit_pca(x: Tensor, dim: int, whiten: bool = True, eps: float = 1e-5) -> PCA:
    """PCA to ``dim`` dimensions from the rows of ``x``, whitened as faiss's ``PCAMatrix(eigen_power=-0.5)`` in
    DeepCluster (exact float64 eigh for narrow features, randomized SVD for wide ones)."""
    dim = min(dim, x.shape[1], max(1, x.shape[0] - 1))
    if x.shape[1] > 4 * dim and x.shape[0] > 4 * dim:
        # Wide features (fc7: 4096): a randomized SVD finds the top components in O(n D dim) instead of a
        # D x D covariance plus a full eigendecomposition (about a minute on two CPU cores at D = 4096).
        xf = x.float()
        mean = xf.mean(0)
        _, s, v = torch.svd_lowrank(xf - mean, q=dim + 16, niter=4)
        evals = (s[:dim].double() ** 2) / max(1, x.shape[0] - 1)
        evecs = v[:, :dim].double()
        mean = mean.double()
    elif x.shape[0] <= x.shape[1]:
        evals, evecs, mean = _pca_from_gram(x.double(), dim)
    else:
        x = x.double()
        mean = x.mean(0)
        xc = x - mean
        cov = xc.T @ xc / max(1, x.shape[0] - 1)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        evals, evecs = evals.flip(0)[:dim], evecs.flip(1)[:, :dim]
    proj = evecs / torch.sqrt(evals.clamp_min(0) + eps) if whiten else evecs
    return PCA(mean.float(), proj.float())


def _pca_from_gram(x: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """The top ``dim`` eigenpairs of the covariance of ``x`` (n rows <= D columns, float64) from the n x n Gram
    matrix: Xc^T Xc and Xc Xc^T share their non-zero eigenvalues, and Xc^T u / sqrt((n - 1) lambda) is the unit
    eigenvector of the first for an eigenvector u of the second. O(n^2 D) instead of the D x D eigendecomposition's
    O(D^3): DeepCluster's first epochs on a small set (256 features of 4,096 dimensions: 0.1 s instead of 7 s) and
    the k-means initialisation's wide layers (3,456-dimensional patches)."""
    n = x.shape[0]
    mean = x.mean(0)
    xc = x - mean
    evals, u = torch.linalg.eigh(xc @ xc.T / max(1, n - 1))  # ascending
    evals, u = evals.flip(0)[:dim], u.flip(1)[:, :dim]
    # directions of (numerically) zero variance: the full eigendecomposition gives vectors orthogonal to the data,
    # which project every row to 0; Xc^T u would be rounding noise inside the data's span, so they are set to 0
    kept = evals > evals[0].clamp_min(0) * 1e-12 * max(x.shape)
    evecs = (xc.T @ u) / torch.sqrt(evals.clamp_min(1e-300) * max(1, n - 1))
    return evals, evecs * kept, mean


def l2_normalize(x: Tensor, eps: float = 1e-10) -> Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


def default_k(num_samples: int, imagenet_k: int = 10_000, imagenet_n: int = 1_281_167) -> int:
    """DeepCluster's k = 10,000 at ImageNet scale, i.e. ~128 samples per cluster; the same ratio for smaller
    sets (at least 2 clusters)."""
    return int(max(2, min(imagenet_k, round(num_samples * imagenet_k / imagenet_n))))


def sparse_clusters_note(num_samples: int, k: int, k_given: bool) -> str | None:
    """One line when ``k`` clusters leave fewer samples per cluster than k-means needs for stable centroids (faiss's
    own threshold), naming where k came from and what would keep enough (None when there are enough)."""
    per = num_samples / k
    if per >= MIN_POINTS_PER_CENTROID:
        return None
    enough = f"under the {MIN_POINTS_PER_CENTROID} k-means needs for stable centroids"
    if k_given:
        most = num_samples // MIN_POINTS_PER_CENTROID
        fix = f"--k {most} or less keeps that many" if most >= 2 else "no k >= 2 keeps that many; render more samples"
        return f"--k {k} for {num_samples} samples is {per:.1f} per cluster, {enough}; {fix} " \
               f"(--k 0 would choose {default_k(num_samples)})"
    return f"k = {k} clusters, chosen automatically (--k 0: DeepCluster's ~128 samples per cluster, at least 2), " \
           f"is {per:.1f} samples per cluster for {num_samples} samples, {enough}; render more samples"


def assign(x: Tensor, centroids: Tensor, chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """Nearest centroid (squared L2) of each row, chunked so the (n, k) distance matrix stays small."""
    c2 = (centroids * centroids).sum(1)
    labels = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    dists = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(0, x.shape[0], chunk):
        xb = x[i:i + chunk]
        d = c2[None, :] - 2 * xb @ centroids.T
        dmin, lab = d.min(1)
        labels[i:i + chunk] = lab
        dists[i:i + chunk] = dmin + (xb * xb).sum(1)
    return labels, dists


def fill_empty_clusters(
    x: Tensor, labels: Tensor, centroids: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, int]:
    """Give every empty cluster members by splitting the largest cluster, as faiss does during training.

    The empty centroid becomes a slightly perturbed copy of the largest cluster's centroid (one copy moved by
    +eps, the other by -eps along a random direction) and that cluster's points are re-assigned between the
    two. Returns (labels, centroids, number of clusters filled). DeepCluster cannot use an empty pseudo-class,
    and its uniform-over-clusters weighting would divide by zero.
    """
    k = centroids.shape[0]
    labels, centroids = labels.clone(), centroids.clone()
    filled = 0
    for _ in range(k):
        counts = torch.bincount(labels, minlength=k)
        empty = (counts == 0).nonzero().flatten()
        if len(empty) == 0:
            break
        e = int(empty[0])
        big = int(counts.argmax())
        if counts[big] < 2:
            break  # fewer points than clusters: nothing left to split
        members = (labels == big).nonzero().flatten()
        direction = torch.randn(centroids.shape[1], generator=generator).to(centroids)
        scale = 1e-3 * (x[members] - centroids[big]).norm(dim=1).mean().clamp_min(1e-6)
        direction = direction / direction.norm() * scale
        c0 = centroids[big].clone()
        centroids[big], centroids[e] = c0 + direction, c0 - direction
        sub, _ = assign(x[members], centroids[[big, e]])
        if sub.all() or not sub.any():  # degenerate (duplicate points): split in half
            sub = torch.zeros_like(sub)
            sub[: len(sub) // 2] = 1
        labels[members[sub == 1]] = e
        centroids[big] = x[members[sub == 0]].mean(0)
        centroids[e] = x[members[sub == 1]].mean(0)
        filled += 1
    return labels, centroids, filled


def kmeans(x: Tensor, k: int, niter: int = 20, seed: int = 0, backend: str = "auto",
           ) -> tuple[Tensor, Tensor]:
    """k-means of the rows of ``x``; returns (labels (n,), centroids (k, d)) with no empty cluster.

    ``backend``: 'faiss' (faiss-cpu, DeepCluster's choice), 'torch' (Lloyd iterations on ``x``'s device, for
    GPUs: faiss-cpu on 1.28M x 256 with k = 10,000 takes minutes), or 'auto' (torch on CUDA, else faiss).
    """
    n = x.shape[0]
    if k > n:
        raise ValueError(f"k-means: k = {k} clusters for only {n} samples")
    if backend == "auto":
        backend = "torch" if x.is_cuda else "faiss"
    if backend == "faiss":
        labels, centroids = _kmeans_faiss(x, k, niter, seed)
    elif backend == "torch":
        labels, centroids = _kmeans_torch(x, k, niter, seed)
    else:
        raise ValueError(f"unknown k-means backend {backend!r} (faiss, torch, auto)")
    labels, centroids, _ = fill_empty_clusters(x, labels, centroids,
                                               torch.Generator().manual_seed(seed + 1))
    return labels, centroids


def _kmeans_faiss(x: Tensor, k: int, niter: int, seed: int) -> tuple[Tensor, Tensor]:
    import faiss

    xn = np.ascontiguousarray(x.detach().float().cpu().numpy())
    # Train on all points (DeepCluster sets max_points_per_centroid high); faiss splits empty clusters itself.
    # faiss's seed is a C int: larger seeds (DeepCluster derives seed * 1000 + epoch) wrap instead of overflowing
    km = faiss.Kmeans(xn.shape[1], k, niter=niter, seed=seed % 2**31, verbose=False, spherical=False,
                      max_points_per_centroid=max(256, math.ceil(xn.shape[0] / k) + 1),
                      min_points_per_centroid=1)
    km.train(xn)
    _, lab = km.index.search(xn, 1)
    centroids = torch.from_numpy(km.centroids).to(x.device)
    return torch.from_numpy(lab[:, 0].astype(np.int64)).to(x.device), centroids


def _kmeans_torch(x: Tensor, k: int, niter: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = x.float()
    centroids = x[torch.randperm(x.shape[0], generator=g)[:k].to(x.device)].clone()
    labels = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    for _ in range(niter):
        labels, _ = assign(x, centroids)
        labels, centroids, _ = fill_empty_clusters(x, labels, centroids, g)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).clamp_min(1).to(x.dtype)
        centroids = sums / counts[:, None]
    labels, _ = assign(x, centroids)
    return labels, centroids


def cluster_weights(labels: Tensor, k: int) -> Tensor:
    """Per-cluster loss weights equivalent to sampling uniformly over (non-empty) clusters.

    DeepCluster draws each batch uniformly over clusters so that big clusters do not dominate. A streamed
    set is read in shard order and cannot be re-sampled, so we weight instead: cluster c of size n_c gets
    w_c = N / (K' n_c) (K' non-empty clusters). The expected weighted loss of a uniformly drawn sample is
    then exactly the loss under uniform-over-clusters sampling, and the mean weight over the data is 1, so
    learning rates keep their meaning.
    """
    counts = torch.bincount(labels[labels >= 0], minlength=k).double()
    nonempty = int((counts > 0).sum())
    w = torch.zeros(k, dtype=torch.float64, device=labels.device)
    mask = counts > 0
    w[mask] = counts.sum() / (nonempty * counts[mask])
    return w.float()


def nmi(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Normalised mutual information (arithmetic mean normalisation, as sklearn's default)."""
    a = torch.as_tensor(a).flatten().long().cpu()
    b = torch.as_tensor(b).flatten().long().cpu()
    _, a = torch.unique(a, return_inverse=True)
    _, b = torch.unique(b, return_inverse=True)
    n = a.numel()
    ka, kb = int(a.max()) + 1, int(b.max()) + 1
    joint = torch.bincount(a * kb + b, minlength=ka * kb).reshape(ka, kb).double() / n
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = (joint[nz] * torch.log(joint[nz] / (pa[:, None] * pb[None, :])[nz])).sum()
    ha = -(pa[pa > 0] * pa[pa > 0].log()).sum()
    hb = -(pb[pb > 0] * pb[pb > 0].log()).sum()
    denom = (ha + hb) / 2
    if denom <= 0:
        return 1.0 if ka == kb == 1 else 0.0
    return float(mi / denom)
