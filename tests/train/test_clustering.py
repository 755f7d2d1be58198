import warnings

import numpy as np
import pytest
import torch

from train.models.clustering import (
    assign,
    cluster_weights,
    default_k,
    fill_empty_clusters,
    fit_pca,
    kmeans,
    l2_normalize,
    nmi,
    sparse_clusters_note,
)


def planted(n_per=60, k=10, dim=64, noise=0.15, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, dim, generator=g) * 2
    labels = torch.arange(k).repeat_interleave(n_per)
    x = centers[labels] + noise * torch.randn(len(labels), dim, generator=g) * 2
    # plus a strong nuisance direction that whitening must not let dominate
    x[:, 0] += 5 * torch.randn(len(labels), generator=g)
    return x, labels


def test_nmi_reference_values():
    assert nmi([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    # sklearn's normalized_mutual_info_score([0,0,1,1,2,2],[0,0,1,1,1,1]) == 0.7336804366512111
    assert nmi([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 1, 1]) == pytest.approx(0.7336804366512111)


def test_pca_whitens():
    x, _ = planted()
    pca = fit_pca(x, 16)
    y = pca(x)
    assert y.shape == (len(x), 16)
    cov = torch.cov(y.T.double())
    torch.testing.assert_close(cov, torch.eye(16, dtype=torch.float64), atol=1e-3, rtol=0)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_kmeans_recovers_planted_clusters(backend):
    x, truth = planted()
    feats = l2_normalize(fit_pca(x, 32)(x))
    labels, centroids = kmeans(feats, 10, niter=20, seed=0, backend=backend)
    assert centroids.shape == (10, 32)
    assert torch.bincount(labels, minlength=10).min() > 0
    assert nmi(labels, truth) >= 0.9


def test_forced_empty_clusters_are_filled():
    x, truth = planted(k=10)
    feats = l2_normalize(fit_pca(x, 32)(x))
    labels, centroids = kmeans(feats, 10, seed=0, backend="torch")
    # Force emptiness: two extra centroids far from all data, so no point is assigned to them.
    far = torch.full((2, feats.shape[1]), 100.0)
    cents = torch.cat([centroids, far])
    lab, _ = assign(feats, cents)
    assert (torch.bincount(lab, minlength=12)[10:] == 0).all()
    lab2, cents2, filled = fill_empty_clusters(feats, lab, cents, torch.Generator().manual_seed(0))
    assert filled == 2
    assert torch.bincount(lab2, minlength=12).min() > 0
    assert torch.isfinite(cents2).all()
    assert nmi(lab2, truth) >= 0.9  # splitting two clusters barely changes the partition


def test_kmeans_with_duplicate_points_has_no_empty_cluster():
    # 3 distinct points repeated: any k > 3 forces empty clusters in plain Lloyd iterations.
    base = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = base.repeat(50, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 150 points for 8 clusters: the trainer says so in one line, k-means not
        labels, cents = kmeans(x, 8, niter=5, seed=0, backend="torch")
        assert torch.bincount(labels, minlength=8).min() > 0
        labels, _ = kmeans(x, 8, niter=5, seed=0, backend="faiss")
    assert torch.bincount(labels, minlength=8).min() > 0


def test_sparse_clusters_note_names_where_k_came_from():
    assert sparse_clusters_note(256, 2, k_given=False) is None  # 128 per cluster
    automatic = sparse_clusters_note(60, 2, k_given=False)
    assert "k = 2 clusters, chosen automatically" in automatic and "30.0 samples per cluster" in automatic
    assert "--k" not in automatic.split("(")[0] and "render more samples" in automatic
    given = sparse_clusters_note(256, 100, k_given=True)
    assert given.startswith("--k 100 for 256 samples is 2.6 per cluster")
    assert "--k 6 or less keeps that many (--k 0 would choose 2)" in given
    assert "no k >= 2 keeps that many" in sparse_clusters_note(50, 5, k_given=True)
    assert "\n" not in automatic + given


def test_cluster_weights_make_clusters_count_equally():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    w = cluster_weights(labels, 4)  # cluster 3 is empty
    assert w[3] == 0
    per_cluster_mass = torch.bincount(labels, weights=w[labels].double(), minlength=4)[:3]
    torch.testing.assert_close(per_cluster_mass, torch.full((3,), 100 / 3, dtype=torch.float64))
    assert w[labels].mean().item() == pytest.approx(1.0)


def test_default_k():
    assert default_k(1_281_167) == 10_000
    assert default_k(50_000) == 390
    assert default_k(100) == 2
    assert np.isclose(default_k(12_812), 100)


def test_pca_wide_features_use_the_randomized_path_and_still_whiten():
    g = torch.Generator().manual_seed(0)
    # 8 strong directions in 256 dimensions, plus weak isotropic noise
    basis = torch.linalg.qr(torch.randn(256, 8, generator=g))[0]
    signal = (torch.randn(2000, 8, generator=g) * torch.arange(8, 0, -1)) @ basis.T
    x = signal + 0.01 * torch.randn(2000, 256, generator=g)
    pca = fit_pca(x, 8)  # 256 > 4 x 8: randomized
    y = pca(x)
    torch.testing.assert_close(torch.cov(y.T.double()), torch.eye(8, dtype=torch.float64), atol=2e-2, rtol=0)
    # the subspace found is the planted one
    proj = pca.proj / pca.proj.norm(dim=0)
    assert torch.linalg.svdvals(basis.T @ proj).min() > 0.99


def test_faiss_takes_any_seed_the_trainer_derives():
    # DeepCluster seeds each epoch's k-means with seed * 1000 + epoch; faiss's seed is a C int
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    labels, _ = kmeans(x, 4, niter=2, seed=(2**32 - 1) * 1000 + 7, backend="faiss")
    assert labels.shape == (200,) and int(labels.max()) < 4


def test_pca_of_fewer_samples_than_dimensions_equals_the_full_eigendecomposition():
    # 60 samples of 300 dimensions (DeepCluster's first epoch on a small set, k-means init's wide layers): the
    # Gram-matrix path must give the covariance's own eigenvectors, and zero for directions without variance
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 300, generator=g, dtype=torch.float64) * torch.linspace(3, 0.1, 300, dtype=torch.float64)
    pca = fit_pca(x, 300, eps=1e-9)  # dim capped at n - 1 = 59
    assert pca.proj.shape == (300, 59)
    evals, evecs = torch.linalg.eigh(torch.cov(x.T))
    expected = evecs.flip(1)[:, :59] / torch.sqrt(evals.flip(0)[:59] + 1e-9)
    torch.testing.assert_close(pca.proj.abs().double(), expected.abs(), rtol=1e-3, atol=1e-4)  # up to sign
    torch.testing.assert_close(torch.cov(pca(x).T.double()), torch.eye(59, dtype=torch.float64), atol=1e-3, rtol=0)
    # duplicated rows: rank 2, so all but two whitened directions carry no variance and project to 0
    twice = torch.cat([x[:3]] * 20)
    flat = fit_pca(twice, 300)
    assert torch.count_nonzero(flat.proj.abs().sum(0) > 0) == 2
    assert torch.isfinite(flat(twice)).all()
