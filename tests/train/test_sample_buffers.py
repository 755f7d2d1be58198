"""Buffers sized by a set's claimed sample count are checked against the memory there is before they are allocated
(issue 32): a manifest over http can claim 10^12 samples in shards it says are petabytes long, which passes the
count-against-bytes check; DeepCluster then asked the allocator for 8 TB and died with a traceback."""

from __future__ import annotations

import pytest
import torch

from common.errors import DataError
from pipeline.memory import available_memory, check_sample_buffers

HUGE = 10**12


def test_the_memory_available_is_known_here():
    free = available_memory()
    assert free is not None and 0 < free < 2**50


def test_a_buffer_that_fits_passes_and_one_that_does_not_is_one_line():
    check_sample_buffers(1000, 8, "labels", "somewhere")
    with pytest.raises(DataError) as error:
        check_sample_buffers(HUGE, 8, "labels", "somewhere")
    message = str(error.value)
    assert message.startswith("somewhere: 1,000,000,000,000 samples need 7,450.6 GiB for labels, more than the ")
    assert message.endswith(" of memory available; is the set's sample count right (pipeline info)?")
    assert "\n" not in message


def test_deepcluster_refuses_a_claimed_count_before_allocating():
    from train.methods.deepcluster import DeepCluster

    opts = DeepCluster.Options(**DeepCluster.small_options)
    with pytest.raises(DataError, match=r"^deepcluster: 1,000,000,000,000 samples need .* for pseudo-labels and "
                                        r"clustering features, more than the "):
        DeepCluster(opts, "cifar", num_samples=HUGE)
    assert DeepCluster(opts, "cifar", num_samples=64).labels.shape == (64,)


def test_a_probe_feature_cache_refuses_a_claimed_count_before_allocating():
    from probe.feature_cache import FeatureCache

    class Claimed(torch.utils.data.Dataset):
        def __len__(self):
            return HUGE

        def __getitem__(self, i):
            raise AssertionError("nothing is read before the sizes are checked")

    loader = torch.utils.data.DataLoader(Claimed(), batch_size=4)
    with pytest.raises(DataError, match=r"^probe features: 1,000,000,000,000 samples need .* for labels"):
        FeatureCache.compute(lambda x: {}, loader, progress=False)
