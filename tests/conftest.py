"""Suite-wide hooks: tests marked ``cuda`` run only where a CUDA device is present."""

import pytest


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cuda") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)")
