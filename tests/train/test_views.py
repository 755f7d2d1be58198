import pytest
import torch

from train.augment import views


def images(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)


def test_unit_range():
    x = views.to_unit_range(torch.tensor([0, 255], dtype=torch.uint8))
    torch.testing.assert_close(x, torch.tensor([-1.0, 1.0]))


def test_rotate_batch_is_four_rotations_with_labels():
    x = views.to_unit_range(images(3, 8))
    r, y = views.rotate_batch(x)
    assert r.shape == (12, 3, 8, 8)
    assert y.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    torch.testing.assert_close(r[:3], x)
    # label 1 is a 90-degree counter-clockwise turn: the top row becomes the left column (bottom to top)
    torch.testing.assert_close(r[3][:, :, 0], x[0][:, 0, :].flip(-1))
    torch.testing.assert_close(r[6], x[0].flip(-1).flip(-2))  # 180 degrees
    torch.testing.assert_close(torch.rot90(r[9], 1, dims=(-2, -1)), x[0])  # 270 + 90 = identity


AUTOCAST = [pytest.param(False, id="fp32"), pytest.param(True, id="bf16-autocast")]


def _autocast(on: bool, device: str = "cpu"):
    # the training loop runs the methods' augmentation inside its bf16 autocast region
    return torch.autocast(device, dtype=torch.bfloat16, enabled=on)


@pytest.mark.parametrize("autocast", AUTOCAST)
def test_random_crop_copies_pixels_exactly(autocast):
    x = views.to_unit_range(images(6, 40))
    g = torch.Generator().manual_seed(1)
    with _autocast(autocast):
        out = views.random_crop(x, 32, flip_p=0.0, generator=g)
    assert out.dtype == torch.float32
    assert out.shape == (6, 3, 32, 32)
    # each output is an exact 32x32 window of its input at some integer offset
    for i in range(6):
        windows = x[i].unfold(1, 32, 1).unfold(2, 32, 1)  # (3, 9, 9, 32, 32)
        diffs = (windows - out[i][:, None, None]).abs().amax(dim=(0, 3, 4))
        assert diffs.min() < 1e-5


def test_random_crop_flip_and_determinism():
    x = views.to_unit_range(images(8, 32))
    a = views.random_crop(x, 32, flip_p=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, x.flip(-1), atol=1e-5, rtol=0)
    b1 = views.random_resized_crop(x, 24, generator=torch.Generator().manual_seed(3))
    b2 = views.random_resized_crop(x, 24, generator=torch.Generator().manual_seed(3))
    assert torch.equal(b1, b2)
    b3 = views.random_resized_crop(x, 24, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(b1, b3)
    assert b1.shape == (8, 3, 24, 24) and b1.min() >= -1 and b1.max() <= 1


def test_random_resized_crop_full_scale_is_a_resize():
    x = views.to_unit_range(images(2, 32))
    out = views.random_resized_crop(x, 32, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("autocast", AUTOCAST)
@pytest.mark.parametrize("size,frac", [(28, 28 / 32), (32, 1.0)])
def test_center_crop(size, frac, autocast):
    x = views.to_unit_range(images(2, 32))
    with _autocast(autocast):
        out = views.center_crop_resize(x, size, crop_fraction=frac)
    off = (32 - size) // 2
    torch.testing.assert_close(out, x[..., off:off + size, off:off + size], atol=1e-5, rtol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("autocast", AUTOCAST)
def test_crops_on_cuda_equal_the_cpu_ones(autocast, monkeypatch):
    """A 256 -> 224 random resized crop on the GPU, in the loop's bf16 autocast or not and with TF32 products on (as
    the loop sets them), is the fp32 CPU crop."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    x = views.to_unit_range(images(8, 256))
    ref = views.random_resized_crop(x, 224, generator=torch.Generator().manual_seed(2))
    with _autocast(autocast, "cuda"):
        out = views.random_resized_crop(x.cuda(), 224, generator=torch.Generator().manual_seed(2))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), ref, atol=1e-4, rtol=0)
