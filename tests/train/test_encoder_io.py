import pytest
import torch

from common.errors import EncoderFileError
from train.models import build_encoder
from train.models.encoder_io import FORMAT, load_encoder, save_encoder


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    enc = build_encoder("cifar", leaky_relu=True)
    enc(torch.randn(4, 3, 32, 32))  # update BN running stats so buffers are non-trivial
    cfg = {"method": "monogan", "lr": 1e-4, "out": tmp_path / "run", "sizes": (1, 2)}
    path = tmp_path / "encoder.pt"
    save_encoder(path, enc, "cifar", cfg)
    assert [p.name for p in tmp_path.iterdir()] == ["encoder.pt"]  # no temp file left behind

    raw = torch.load(path, weights_only=True)  # plain tensors and builtins only
    assert raw["format"] == FORMAT and raw["version"] == 1 and raw["arch"] == "cifar"
    assert raw["arch_kwargs"] == {"leaky_relu": True}

    loaded, info = load_encoder(path)
    assert info["arch"] == "cifar" and info["config"]["method"] == "monogan"
    assert info["config"]["out"] == str(tmp_path / "run") and info["config"]["sizes"] == [1, 2]
    assert not loaded.training
    assert isinstance(loaded.conv1.relu, torch.nn.LeakyReLU)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    enc.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), enc(x))


def test_channels_last_and_sobel_round_trip(tmp_path):
    enc = build_encoder("alexnet-small", sobel=True).to(memory_format=torch.channels_last)
    save_encoder(tmp_path / "e.pt", enc, "alexnet-small", {})
    loaded, info = load_encoder(tmp_path / "e.pt")
    assert info["arch_kwargs"] == {"sobel": True} and loaded.sobel is not None


def test_not_an_encoder(tmp_path):
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"definitely not a torch file")
    with pytest.raises(EncoderFileError, match="junk.pt: not a readable encoder file"):
        load_encoder(bad)
    other = tmp_path / "other.pt"
    torch.save({"model": {}, "step": 3}, other)
    with pytest.raises(EncoderFileError, match="other.pt: not an encoder file"):
        load_encoder(other)
    with pytest.raises(EncoderFileError, match="no such encoder file"):
        load_encoder(tmp_path / "missing.pt")


def test_weights_of_another_architecture(tmp_path):
    path = tmp_path / "encoder.pt"
    save_encoder(path, build_encoder("alexnet-small"), "alexnet-small", {})
    payload = torch.load(path, weights_only=True)
    payload["arch"] = "alexnet"  # claims the wide AlexNet but holds the narrow one's weights
    torch.save(payload, path)
    with pytest.raises(EncoderFileError) as e:
        load_encoder(path)
    msg = str(e.value)
    assert "encoder.pt" in msg and "do not match architecture 'alexnet'" in msg and "\n" not in msg

    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop("conv5.bn.running_mean")
    payload["arch"] = "alexnet-small"
    torch.save(payload, path)
    with pytest.raises(EncoderFileError, match="1 missing"):
        load_encoder(path)


def test_save_checks_the_name():
    with pytest.raises(ValueError, match="built as 'cifar'"):
        save_encoder("/nonexistent/e.pt", build_encoder("cifar"), "alexnet", {})
