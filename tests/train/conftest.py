import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # The CI box and the dev machine have two cores shared with other jobs: keep each test to one thread.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
