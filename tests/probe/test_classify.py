"""`probe classify` (issue 34): an encoder's own classifier scored on a test split with no training, its results.json
read by `probe report`, and the encoders it cannot score refused in one line."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from probe.cli import main
from train.models import build_encoder, output_shape
from train.models.encoder_io import attach_classifier, load_classifier, save_encoder
from train.models.heads import pooled_linear_head

from ..conftest import write_cifar10, write_cifar100


def classifier_file(path: Path, classes: int = 10, with_classifier: bool = True) -> Path:
    torch.manual_seed(7)
    encoder = build_encoder("cifar")
    head = pooled_linear_head(output_shape(encoder)[0], classes)
    with torch.no_grad():
        head[1].weight.mul_(40)  # scores spread over the classes
    if with_classifier:
        attach_classifier(encoder, head)
    save_encoder(path, encoder.eval(), "cifar", {"method": "distill"})
    return path


def run_probe(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*map(str, args), "--workers", "0", "--device", "cpu", "--no-progress"])
    return result.exit_code, result.output


def test_classify_scores_the_carried_classifier_and_report_shows_a_row(tmp_path):
    data = write_cifar10(tmp_path / "c10", per_batch=4, test=24)
    encoder = classifier_file(tmp_path / "enc" / "encoder.pt")
    code, output = run_probe("classify", encoder, "--data", f"cifar10:{data}", "--out", tmp_path / "out",
                             "--batch-size", "7")
    assert code == 0, output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["task"] == "classify" and results["data"]["test_used"] == 24
    assert results["encoder"]["num_classes"] == 10 and results["encoder"]["sha256"]
    scores = results["scores"]
    # the same top-1 / top-5 by hand: the test images in the (-1, 1) range through encoder and classifier
    with open(data / "test_batch", "rb") as f:
        batch = pickle.load(f)
    x = torch.tensor(batch["data"]).view(-1, 3, 32, 32).float() * (2 / 255) - 1
    labels = torch.tensor(batch["labels"])
    model, _ = load_classifier(encoder)
    with torch.no_grad():
        top5 = model(x).topk(5, dim=1).indices
    assert scores["top1"] == pytest.approx(100 * (top5[:, 0] == labels).float().mean().item())
    assert scores["top5"] == pytest.approx(100 * (top5 == labels[:, None]).any(1).float().mean().item())
    assert (tmp_path / "out" / "results.md").read_text().startswith("# Classifier:")

    code, output = run_probe_report(tmp_path / "out" / "results.json", tmp_path / "report.md")
    assert code == 0, output
    report = (tmp_path / "report.md").read_text()
    assert "| classify on cifar10 | top1 | top5 |" in report
    assert f"| {scores['top1']:.1f} | {scores['top5']:.1f} |" in report


def run_probe_report(results: Path, out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["report", str(results), "--out", str(out)])
    return result.exit_code, result.output


def test_encoders_classify_cannot_score_are_one_line(tmp_path):
    c10 = write_cifar10(tmp_path / "c10")
    c100 = write_cifar100(tmp_path / "c100")
    encoder = classifier_file(tmp_path / "enc.pt")
    cases = [
        ([encoder, "--data", f"cifar100:{c100}"], "its classifier has 10 classes, cifar100 data has 100"),
        ([classifier_file(tmp_path / "bare.pt", with_classifier=False), "--data", f"cifar10:{c10}"],
         "carries no classifier"),
        (["random:cifar", "--data", f"cifar10:{c10}"], "a random encoder carries no classifier"),
    ]
    for i, (args, message) in enumerate(cases):
        code, output = run_probe("classify", *args, "--out", tmp_path / f"out{i}")
        errors = [line for line in output.splitlines() if line.startswith("Error")]
        assert code == 1 and len(errors) == 1 and message in errors[0], output
        assert "Traceback" not in output and not (tmp_path / f"out{i}" / "results.json").exists()
