"""`train distill` (issue 34): the loss, the frozen teacher kept out of every file the run writes, the one mixed batch
both networks see, learning on toy shards, exact resume, one-line refusals; the classifier `train supervised` now
exports in encoder.pt."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from common.hashing import sha256_files
from train.data.sources import Batch
from train.losses import distillation_loss
from train.methods import RunContext, get_method
from train.methods.distill import Distill, cutmix, mixup, sample_beta
from train.models import build_encoder, output_shape
from train.models.encoder_io import attach_classifier, load_classifier, load_encoder, read_encoder_file, save_encoder
from train.models.heads import pooled_linear_head
from train.run.loop import train

from ..conftest import train_config, write_cifar10


def make_teacher(path: Path, arch: str = "cifar", classes: int = 10, with_classifier: bool = True) -> Path:
    """A seeded random network with a pooled linear classifier whose scores spread over the classes (weights and
    biases scaled up), saved as a teacher encoder.pt."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        encoder = build_encoder(arch)
        head = pooled_linear_head(output_shape(encoder)[0], classes)
        with torch.no_grad():
            head[1].weight.mul_(40)
            head[1].bias.normal_(0, 0.5)
    if with_classifier:
        attach_classifier(encoder, head)
    save_encoder(path, encoder.eval(), arch, {"method": "supervised"})
    return path


def held_out_images(folder: Path, count: int = 64) -> torch.Tensor:
    """The first `count` patches of a rendered set as a uint8 (N, 3, S, S) batch."""
    images = []
    for shard in sorted(folder.glob("patches-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith((".png", ".jpg")) and len(images) < count:
                    pixels = np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB"))
                    images.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1))
    return torch.stack(images)


def distill_method(teacher: str, **options) -> Distill:
    torch.manual_seed(0)
    m = Distill(Distill.Options(teacher=teacher, **options), "cifar", num_samples=64)
    m.configure(RunContext.for_epochs(10))
    return m


def cfg(data, out, teacher, **changes):
    options = {"teacher": str(teacher), **changes.pop("options", {})}
    return train_config("distill", data, out, options=options, **changes)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    return make_teacher(tmp_path_factory.mktemp("teacher") / "encoder.pt")


# ---- the loss -------------------------------------------------------------------------------------------------------
def test_the_loss_equals_a_hand_computation():
    student = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    teacher = torch.tensor([[2.0, 0.0, -1.0], [-1.0, 1.0, 4.0]])
    for t in (1.0, 8.0, 0.5):
        total = 0.0
        for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
            zs = sum(math.exp(v / t) for v in s_row)
            zt = sum(math.exp(v / t) for v in t_row)
            p = [math.exp(v / t) / zt for v in t_row]
            q = [math.exp(v / t) / zs for v in s_row]
            total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
        expected = total / 2 * t * t
        assert distillation_loss(student, teacher, t).item() == pytest.approx(expected, rel=1e-5)
    assert distillation_loss(teacher, teacher, 8.0).item() == pytest.approx(0.0, abs=1e-6)


def test_beta_draws_and_the_two_mixes():
    lam = sample_beta(0.25, 0.25, 200_000, torch.Generator().manual_seed(0))
    assert lam.mean().item() == pytest.approx(0.5, abs=0.01) and lam.var().item() == pytest.approx(1 / 6, abs=0.01)
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 16, 16).contiguous()
    mixed = cutmix(x, torch.Generator().manual_seed(3))
    inside = mixed != x  # where the box pasted the reversed batch
    assert torch.equal(mixed[inside], x.flip(0)[inside])
    assert inside.any() and torch.equal(inside[0], inside[3])  # one box for the whole batch
    blend = mixup(x, torch.Generator().manual_seed(1))
    alpha = 1 - blend[0, 0, 0, 0] / 3  # image 0 (all 0) blended with image 3 (all 3)
    assert torch.allclose(blend, alpha * x + (1 - alpha) * x.flip(0))


# ---- the teacher ----------------------------------------------------------------------------------------------------
def recording(seen: dict, name: str, forward):
    def record(x):
        seen[name] = x.clone()
        return forward(x)
    return record


@pytest.mark.parametrize("mix", ["cutmix", "mixup", "none"])
def test_teacher_and_student_receive_the_identical_mixed_batch(mix, teacher_file, monkeypatch):
    images = (torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    m = distill_method(str(teacher_file), mix=mix)
    seen: dict[str, torch.Tensor] = {}
    monkeypatch.setattr(m.teacher.model, "forward", recording(seen, "teacher", m.teacher.model.forward))
    monkeypatch.setattr(m, "forward", recording(seen, "student", m.forward))
    m.training_step(Batch(images, torch.arange(8), None), torch.Generator().manual_seed(5))
    assert torch.equal(seen["teacher"], seen["student"])
    plain = m.augment(images, torch.Generator().manual_seed(5))  # the same crops, before mixing
    assert torch.equal(seen["student"], plain) == (mix == "none")


def test_the_teacher_never_changes_and_never_enters_the_checkpoint_or_encoder_pt(teacher_file, tiny_set, tmp_path):
    before = sha256_files(teacher_file)
    reference, _ = load_classifier(teacher_file)
    m = distill_method(str(teacher_file))
    assert not m.teacher.model.training and not any(p.requires_grad for p in m.teacher.model.parameters())
    assert not any(k.startswith("teacher") for k in m.state_dict())
    images = held_out_images(tiny_set, 16)
    for i in range(3):
        m.training_step(Batch(images, torch.arange(16), None), torch.Generator().manual_seed(i))
    for (k, v), w in zip(reference.state_dict().items(), m.teacher.model.state_dict().values(), strict=True):
        assert torch.equal(v, w), k

    train(cfg(tiny_set, tmp_path / "run", teacher_file, max_steps=6))
    assert sha256_files(teacher_file) == before
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert all(k.startswith(("encoder.", "head.")) for k in ckpt["model"])
    assert ckpt["extra"]["teacher"] == {"source": str(teacher_file), "sha256": before, "num_classes": 10}
    payload = read_encoder_file(tmp_path / "run" / "encoder.pt")
    teacher_tensors = {v.data_ptr() for v in reference.state_dict().values()}
    assert set(payload["state_dict"]) == set(build_encoder("cifar").state_dict())  # the student's encoder only
    assert not teacher_tensors & {v.data_ptr() for v in payload["state_dict"].values()}
    assert payload["classifier"]["about"]["distilled_from"]["sha256"] == before
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["options"]["teacher"] == str(teacher_file)
    # the student's encoder.pt is itself a classifier, with the teacher's classes
    student, info = load_classifier(tmp_path / "run" / "encoder.pt")
    assert info["num_classes"] == 10 and student(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    for k, v in student.head.state_dict().items():
        assert torch.equal(v, ckpt["model"]["head." + k]), k


def test_a_few_dozen_steps_raise_the_students_agreement_with_the_teacher(teacher_file, tiny_set, held_out_set,
                                                                        tmp_path):
    m = distill_method(str(teacher_file), lr=3e-3)
    test = held_out_images(held_out_set, 128)
    x = test.float() * (2 / 255) - 1  # the held-out patches as they are, in the (-1, 1) input range

    def agreement() -> float:
        m.eval()
        with torch.no_grad():
            a = (m(x).argmax(1) == m.teacher_logits(x).argmax(1)).float().mean().item()
        m.train()
        return a

    target = m.teacher_logits(x).argmax(1)
    assert target.unique().numel() >= 3  # the teacher's answers spread over the classes
    start = agreement()
    train_images = held_out_images(tiny_set, 256)
    g = torch.Generator().manual_seed(1)
    for _ in range(48):
        index = torch.randperm(256, generator=g)[:32]
        m.training_step(Batch(train_images[index], index, None), g)
    assert agreement() > start + 0.15, (start, agreement())


def test_resume_is_bit_identical(teacher_file, tiny_set, tmp_path):
    run = dict(epochs=3, log_every=2, ckpt_every=4, seed=5)
    train(cfg(tiny_set, tmp_path / "ref", teacher_file, max_steps=10, **run))
    train(cfg(tiny_set, tmp_path / "run", teacher_file, max_steps=5, **run))
    train(cfg(tiny_set, tmp_path / "run", teacher_file, max_steps=10, resume=True, **run))
    a = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 10 and a["extra"] == b["extra"]
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, differ
    assert a["optimizers"]["main"]["state"][0]["exp_avg"].equal(b["optimizers"]["main"]["state"][0]["exp_avg"])


def test_resume_refuses_a_changed_teacher_file(teacher_file, tiny_set, tmp_path):
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(teacher_file.read_bytes())
    train(cfg(tiny_set, tmp_path / "run", teacher, max_steps=2))
    payload = torch.load(teacher, weights_only=True)
    payload["classifier"]["state_dict"]["1.bias"] += 1
    torch.save(payload, teacher)
    with pytest.raises(Exception, match="not the file the run was trained with"):
        train(cfg(tiny_set, tmp_path / "run", teacher, max_steps=4, resume=True))


# ---- bad input: one line, before any work -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_teachers(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    crafted = folder / "crafted.pt"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(folder / 'PWNED')!r}, 'w')",))

    torch.save({"format": "single-image-ssl/encoder", "x": Payload()}, crafted)
    return {"plain": make_teacher(folder / "plain.pt", with_classifier=False), "crafted": crafted}


def _refusal(args: list[str], out: Path) -> str:
    from train.cli import main

    result = CliRunner().invoke(main, [*args, "--out", str(out), "--device", "cpu", "--no-progress"])
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert result.exit_code != 0 and len(errors) == 1, result.output
    assert "Traceback" not in result.output and not out.exists()
    return errors[0]


def test_bad_teachers_and_options_are_one_line_before_any_work(tiny_set, teacher_file, bad_teachers, tmp_path):
    data = ["distill", str(tiny_set), "--arch", "cifar"]
    assert "carries no classifier" in _refusal([*data, "--teacher", str(bad_teachers["plain"])], tmp_path / "a")
    line = _refusal([*data, "--teacher", str(bad_teachers["crafted"])], tmp_path / "b")
    assert "refused, the file names exec" in line and "nothing in it was run" in line
    assert not (bad_teachers["crafted"].parent / "PWNED").exists()
    line = _refusal([*data, "--teacher", "random:alexnet"], tmp_path / "c")
    assert "takes 224 px input, but the student --arch cifar takes 32 px" in line
    line = _refusal(["distill", str(tiny_set), "--arch", "alexnet", "--teacher", str(teacher_file)], tmp_path / "d")
    assert "takes 32 px input, but the student --arch alexnet takes 224 px" in line
    assert "'--arch'" in _refusal(["distill", str(tiny_set), "--arch", "vgg", "--teacher", str(teacher_file)],
                                  tmp_path / "e")
    for t in ("0", "-1"):
        line = _refusal([*data, "--teacher", str(teacher_file), "--temperature", t], tmp_path / "f")
        assert "Invalid value for '--temperature'" in line
    assert "Missing option '--teacher'" in _refusal(data, tmp_path / "g")
    assert "no such encoder file" in _refusal([*data, "--teacher", str(tmp_path / "nothing.pt")], tmp_path / "h")
    assert "random:ARCH:classes=N" in _refusal([*data, "--teacher", "random:cifar:classes=1"], tmp_path / "i")


def test_the_python_api_refuses_what_the_command_line_refuses(tiny_set, tmp_path):
    from common.errors import OptionError

    with pytest.raises(OptionError, match="--temperature"):
        Distill.Options(teacher="random:cifar", temperature=0.0)
    with pytest.raises(OptionError, match="--mix"):
        Distill.Options(teacher="random:cifar", mix="cutout")
    with pytest.raises(OptionError, match="Missing option '--teacher'"):
        train(train_config("distill", tiny_set, tmp_path / "run", options={}))
    assert not (tmp_path / "run").exists()


# ---- the teacher's side: train supervised exports its classifier ---------------------------------------------------
def test_supervised_encoder_pt_carries_a_loadable_classifier_and_old_files_still_load(tmp_path):
    data = write_cifar10(tmp_path / "c10", per_batch=8)
    train(train_config("supervised", data, tmp_path / "sup", max_steps=2))
    raw = torch.load(tmp_path / "sup" / "encoder.pt", weights_only=True)  # plain tensors and builtins only
    assert [layer["type"] for layer in raw["classifier"]["layers"]] == [
        "flatten", "dropout", "linear", "relu", "dropout", "linear", "relu", "linear"]
    model, info = load_classifier(tmp_path / "sup" / "encoder.pt")
    assert info["num_classes"] == 10 and not model.training
    ckpt = torch.load(tmp_path / "sup" / "checkpoint.pt", weights_only=True)
    for k, v in model.head.state_dict().items():
        assert torch.equal(v, ckpt["model"]["head." + k]), k
    # the same scores as the trained method's own forward, in eval mode
    method = get_method("supervised")(get_method("supervised").Options(head_dim=64), "cifar", 40, 10)
    method.load_state_dict(ckpt["model"])
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(model(x), method.eval()(x), atol=1e-5)
    # an encoder.pt written before classifiers were exported still loads for probing
    legacy = {k: v for k, v in raw.items() if k != "classifier"}
    torch.save(legacy, tmp_path / "legacy.pt")
    encoder, _ = load_encoder(tmp_path / "legacy.pt")
    assert set(encoder.state_dict()) == set(raw["state_dict"])
    with pytest.raises(Exception, match="carries no classifier"):
        load_classifier(tmp_path / "legacy.pt")


def test_a_supervised_teacher_distils_end_to_end(tmp_path, tiny_set):
    data = write_cifar10(tmp_path / "c10", per_batch=8)
    train(train_config("supervised", data, tmp_path / "sup", max_steps=2))
    summary = train(cfg(tiny_set, tmp_path / "student", tmp_path / "sup" / "encoder.pt", max_steps=4))
    assert summary["step"] == 4 and math.isfinite(summary["loss"])
    lines = [json.loads(s) for s in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    assert any("agreement" in line for line in lines)
