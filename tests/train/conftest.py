import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # The CI box and the dev machine have two cores shared with other jobs: keep each test to one thread.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory):
    """256 rendered 32 px patches of the embedded default photo, in 4 shards of 64 (a second or two)."""
    from pipeline.config import RenderConfig
    from pipeline.render import render_set

    folder = tmp_path_factory.mktemp("shards") / "tiny"
    render_set(folder, RenderConfig(n_patches=256, size=32, shard_size=64, seed=0), log=lambda *a, **k: None)
    return folder


@pytest.fixture(scope="session")
def held_out_set(tmp_path_factory):
    """128 patches rendered with another seed: samples the training set never saw."""
    from pipeline.config import RenderConfig
    from pipeline.render import render_set

    folder = tmp_path_factory.mktemp("shards") / "held"
    render_set(folder, RenderConfig(n_patches=128, size=32, shard_size=64, seed=1), log=lambda *a, **k: None)
    return folder
