"""The `probe` command line end to end on tiny data sets, and its one-line errors."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import pytest
import torch
from click.testing import CliRunner

from probe.cli import main
from probe.protocols import FinetuneProtocol, ProbeProtocol
from train.models import build_encoder
from train.models.encoder_io import save_encoder


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    return lines[0]


def test_every_command_explains_itself_with_an_example():
    top = _run("--help")
    assert top.exit_code == 0 and "Example" in top.output
    for command in ("linear", "finetune", "filters", "style", "visualize", "report"):
        result = _run(command, "--help")
        assert result.exit_code == 0
        assert "Example" in result.output and f"probe {command}" in result.output


def test_linear_on_cifar_pickles_writes_results(tmp_path, writers):
    writers.cifar10(tmp_path / "data", per_batch=6, test=10)
    out = tmp_path / "out"
    result = _run("linear", "random:cifar", "--data", f"cifar10:{tmp_path / 'data'}", "--out", out,
                  "--layers", "conv4,conv1", "--epochs", "2", "--batch-size", "8", "--workers", "0",
                  "--no-progress", "--device", "cpu")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert list(results["layers"]) == ["conv1", "conv4"]
    assert results["layers"]["conv1"]["dims"] == 9600 and results["layers"]["conv4"]["dims"] == 3456
    for row in results["layers"].values():
        assert 0.0 <= row["top1"] <= row["top5"] <= 100.0
    expected = {"kind": "cifar10", "train_size": 30, "test_size": 10, "num_classes": 10}
    assert {key: results["data"][key] for key in expected} == expected
    assert results["encoder"]["source"] == "random:cifar" and results["encoder"]["random_init_seed"] == 0
    assert results["protocol"]["milestones"] == [5, 15, 25] and results["protocol"]["feature_cache"]
    assert len(results["history"]) == 2
    assert "| conv4 | 3456 |" in (out / "results.md").read_text()
    assert results["protocol"]["cifar_flip"] is False


def test_linear_cifar_flip_caches_the_mirrored_training_images(tmp_path, writers):
    writers.cifar10(tmp_path / "data", per_batch=6, test=10)
    common = ["linear", "random:cifar", "--data", f"cifar10:{tmp_path / 'data'}", "--layers", "conv1",
              "--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-progress", "--device", "cpu"]
    sizes = {}
    for flag in ("--no-cifar-flip", "--cifar-flip"):
        out = tmp_path / flag
        assert _run(*common, flag, "--out", out).exit_code == 0
        results = json.loads((out / "results.json").read_text())
        assert results["protocol"]["cifar_flip"] is (flag == "--cifar-flip")
        sizes[flag] = results["feature_cache_bytes"]
        assert ("image or mirror" in (out / "results.md").read_text()) is (flag == "--cifar-flip")
    # train (30) + test (10) rows without, plus 30 mirrored training rows with, at 9,600 float16 each
    assert sizes["--no-cifar-flip"] == 40 * 9600 * 2 and sizes["--cifar-flip"] == 70 * 9600 * 2


def test_random_baseline_is_seeded():
    from probe.encoders import open_encoder

    first, again, other = (open_encoder("random:cifar", seed=s).module for s in (3, 3, 4))
    assert torch.equal(first.conv2.conv.weight, again.conv2.conv.weight)
    assert not torch.equal(first.conv2.conv.weight, other.conv2.conv.weight)


def test_encoder_of_another_architecture_is_refused(tmp_path, writers):
    writers.cifar10(tmp_path / "data")
    line = _error_line(_run("linear", "random:alexnet", "--data", f"cifar10:{tmp_path / 'data'}",
                            "--out", tmp_path / "out"))
    assert "random:alexnet: architecture 'alexnet' takes 224 px input" in line and "use cifar" in line
    saved = tmp_path / "alexnet-small.pt"
    save_encoder(saved, build_encoder("alexnet-small"), "alexnet-small", {})
    data = f"cifar10:{tmp_path / 'data'}"
    line = _error_line(_run("linear", saved, "--data", data, "--out", tmp_path / "o"))
    assert f"{saved}: architecture 'alexnet-small'" in line
    line = _error_line(_run("linear", "random:cifar", "--layers", "conv5", "--data",
                            f"cifar10:{tmp_path / 'data'}", "--out", tmp_path / "o"))
    assert "has no layer conv5" in line


def test_unreadable_inputs_are_one_line_errors(tmp_path, writers):
    not_an_encoder = tmp_path / "notes.pt"
    not_an_encoder.write_text("hello")
    line = _error_line(_run("filters", not_an_encoder, "--out", tmp_path / "f.png"))
    assert str(not_an_encoder) in line
    line = _error_line(_run("linear", "random:cifar", "--data", f"cifar10:{tmp_path / 'absent'}", "--out",
                            tmp_path / "o"))
    assert line == f"Error: {tmp_path / 'absent'}: no such folder"


def test_corrupt_image_read_by_a_worker_process_is_one_line(tmp_path, writers):
    writers.image_tree(tmp_path / "train", {"cat": 2, "dog": 2})
    writers.image_tree(tmp_path / "test", {"cat": 1, "dog": 1})
    broken = tmp_path / "test" / "dog" / "0000.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    line = _error_line(_run("linear", "random:cifar", "--data", f"cifar10-jpg:{tmp_path}", "--out",
                            tmp_path / "o", "--epochs", "1", "--workers", "1", "--no-progress"))
    assert line == f"Error: {broken}: not an image file, or a format Pillow cannot read"


def test_finetune_keeps_frozen_layers_and_writes_a_probeable_encoder(tmp_path, writers):
    writers.cifar10(tmp_path / "data", per_batch=4, test=4)
    source = build_encoder("cifar")
    save_encoder(tmp_path / "encoder.pt", source, "cifar", {"method": "test"})
    out = tmp_path / "ft"
    data = f"cifar10:{tmp_path / 'data'}"
    result = _run("finetune", tmp_path / "encoder.pt", "--data", data, "--out", out, "--freeze", "conv2",
                  "--epochs", "1", "--batch-size", "5", "--workers", "0", "--no-progress", "--device", "cpu")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "finetune" and results["protocol"]["frozen"] == ["conv1", "conv2"]
    assert 0 <= results["scores"]["top1"] <= 100
    tuned = torch.load(out / "encoder.pt", weights_only=True)["state_dict"]
    original = source.state_dict()
    for key in ("conv1.conv.weight", "conv2.conv.weight", "conv2.bn.running_var"):
        assert torch.equal(tuned[key], original[key]), key
    assert not torch.equal(tuned["conv3.conv.weight"], original["conv3.conv.weight"])  # fresh init, trained
    again = _run("linear", out / "encoder.pt", "--data", data, "--out", tmp_path / "p",
                 "--epochs", "1", "--workers", "0", "--no-progress", "--layers", "conv1", "--device", "cpu")
    assert again.exit_code == 0, again.output
    probed = json.loads((tmp_path / "p" / "results.json").read_text())
    assert probed["encoder"]["config"]["probe_finetune"]["protocol"]["freeze"] == "conv2"


@pytest.mark.parametrize("freeze", ["none"])
def test_finetune_without_freezing_trains_the_kept_layers(tmp_path, writers, freeze):
    writers.cifar10(tmp_path / "data", per_batch=4, test=4)
    out = tmp_path / "ft"
    result = _run("finetune", "random:cifar", "--data", f"cifar10:{tmp_path / 'data'}", "--out", out,
                  "--freeze", freeze, "--epochs", "1", "--batch-size", "5", "--workers", "0", "--no-progress",
                  "--device", "cpu")
    assert result.exit_code == 0, result.output
    tuned = torch.load(out / "encoder.pt", weights_only=True)["state_dict"]
    from probe.encoders import open_encoder

    assert not torch.equal(tuned["conv1.conv.weight"], open_encoder("random:cifar").module.conv1.conv.weight)


def _linear_results_file(path):
    from probe.results import new_results, write_json

    results = new_results("linear", {"source": "random:cifar", "arch": "cifar", "config": {}},
                          {"kind": "cifar10", "path": "/data"}, {}, "cpu", None)
    results["layers"] = {"conv1": {"top1": 50.0, "top5": 90.0, "dims": 9600}}
    write_json(path, results)
    return results


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda r: r.pop("layers"), "missing 'layers'"),
    (lambda r: r.update(layers="x"), "'layers' is not a mapping of layer names to scores"),
    (lambda r: r["layers"].update(conv1={"top5": 1.0}), "layer 'conv1' has no top-1 percentage"),
    (lambda r: r.pop("encoder"), "missing 'encoder'"),
    (lambda r: r.update(data=[]), "'data' has no 'kind'"),
    (lambda r: r.update(task="finetune"), "missing 'scores'"),
])
def test_report_refuses_a_damaged_results_file_in_one_line(tmp_path, edit, problem):
    path = tmp_path / "results.json"
    results = _linear_results_file(path)
    edit(results)
    path.write_text(json.dumps(results))
    line = _error_line(_run("report", path, "--out", tmp_path / "report.md"))
    assert line == f"Error: {path}: not a probe results file ({problem})"
    assert not (tmp_path / "report.md").exists()


def test_report_against_a_row_that_does_not_exist_is_one_line_listing_the_rows(tmp_path):
    path = tmp_path / "results.json"
    _linear_results_file(path)
    line = _error_line(_run("report", path, "--out", tmp_path / "report.md", "--against", "NoSuchRow"))
    assert line.startswith(f"Error: --against 'NoSuchRow': no paper row matches it for {path} (linear on cifar10); "
                           "rows: (a) Fully sup.; (b) Random feat.;")
    assert "; Random; RotNet; " in line and line.endswith("MonoGAN (or none)")
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "report.png").exists()
    assert _run("report", path, "--out", tmp_path / "report.md", "--against", "random").exit_code == 0


def test_finetune_never_overwrites_its_input_and_replaces_an_encoder_only_with_force(tmp_path, writers):
    writers.cifar10(tmp_path / "data", per_batch=4, test=4)
    run = tmp_path / "run"
    save_encoder(run / "encoder.pt", build_encoder("cifar"), "cifar", {"method": "test"})
    trained = (run / "encoder.pt").read_bytes()
    common = ["--data", f"cifar10:{tmp_path / 'data'}", "--epochs", "1", "--batch-size", "5", "--workers", "0",
              "--no-progress", "--device", "cpu"]
    for force in ([], ["--force"]):  # its own input: refused even with --force
        line = _error_line(_run("finetune", run / "encoder.pt", *common, "--out", run, *force))
        assert line.startswith(f"Error: {run / 'encoder.pt'}: this is the encoder being fine-tuned")
    line = _error_line(_run("finetune", "random:cifar", *common, "--out", run))
    assert line == f"Error: {run / 'encoder.pt'}: already exists; give another --out, or --force to replace it"
    assert (run / "encoder.pt").read_bytes() == trained and not (run / "results.json").exists()
    assert _run("finetune", "random:cifar", *common, "--out", run, "--force").exit_code == 0
    assert (run / "encoder.pt").read_bytes() != trained

    # a linear probe may rerun into its own folder, but not replace a fine-tuning's results
    probe_args = ["linear", "random:cifar", *common, "--layers", "conv1"]
    line = _error_line(_run(*probe_args, "--out", run))
    assert f"{run / 'results.json'}: holds finetune results" in line
    for _ in range(2):
        assert _run(*probe_args, "--out", tmp_path / "probe").exit_code == 0


@pytest.mark.parametrize("args", [
    ["linear", "--limit-train", "0"], ["linear", "--limit-train", "-5"], ["linear", "--limit-test", "0"],
    ["linear", "--epochs", "0"], ["finetune", "--epochs", "0"], ["linear", "--batch-size", "0"],
    ["linear", "--batch-size", "1"], ["finetune", "--batch-size", "0"], ["finetune", "--limit-train", "-1"],
    ["linear", "--workers", "-1"], ["linear", "--threads", "0"], ["linear", "--lr", "0"],
    ["finetune", "--lr-divisor", "0"], ["finetune", "--weight-decay", "-1"], ["linear", "--milestones", "5,-1"],
])
def test_out_of_range_numbers_are_usage_errors(tmp_path, args):
    command, option, value = args
    result = _run(command, "random:cifar", "--data", f"cifar10:{tmp_path}", "--out", tmp_path / "o", option, value)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("option", "value"), [("--columns", "-3"), ("--scale", "-2"), ("--scale", "0"),
                                               ("--out", "f.txt")])
def test_filters_refuses_bad_sizes_and_file_names(tmp_path, option, value):
    value = tmp_path / value if option == "--out" else value
    result = _run("filters", "random:cifar", "--out", tmp_path / "f.png", option, value)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["linear", "finetune"])
def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, command, monkeypatch):
    (tmp_path / "file").write_text("")
    missing = f"cifar10:{tmp_path / 'no-data'}"  # reached only after --out passed: its error would be another
    line = _error_line(_run(command, "random:cifar", "--data", missing, "--out", tmp_path / "file" / "o"))
    assert line == f"Error: {tmp_path / 'file'}: not a folder, so --out {tmp_path / 'file' / 'o'} cannot be made"
    monkeypatch.setattr("probe.cli.os.access", lambda path, mode: False)  # as on a read-only disk
    line = _error_line(_run(command, "random:cifar", "--data", missing, "--out", tmp_path / "new" / "o"))
    assert line == f"Error: {tmp_path}: not writable, so --out {tmp_path / 'new' / 'o'} cannot be written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:7"])
def test_cuda_without_a_gpu_is_one_line_naming_the_device(tmp_path, writers, device):
    writers.cifar10(tmp_path / "data")
    line = _error_line(_run("linear", "random:cifar", "--data", f"cifar10:{tmp_path / 'data'}", "--out",
                            tmp_path / "o", "--device", device))
    assert line == f"Error: --device {device} asked for, but no CUDA device is visible"


def test_a_training_set_smaller_than_a_batch_is_still_trained_on(tmp_path, writers):
    writers.cifar10(tmp_path / "data", per_batch=4, test=4)
    out = tmp_path / "ft"
    result = _run("finetune", "random:cifar", "--data", f"cifar10:{tmp_path / 'data'}", "--out", out,
                  "--epochs", "1", "--batch-size", "64", "--workers", "0", "--no-progress", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "results.json").read_text())["history"][0]["train"]["loss"] > 0


def test_a_single_training_image_is_refused_by_the_linear_probe(tmp_path, writers):
    writers.image_tree(tmp_path / "train", {"cat": 1})
    writers.image_tree(tmp_path / "test", {"cat": 1})
    line = _error_line(_run("linear", "random:cifar", "--data", f"cifar10-jpg:{tmp_path}", "--out", tmp_path / "o",
                            "--workers", "0", "--no-progress", "--device", "cpu"))
    assert line == f"Error: cifar10-jpg:{tmp_path}: 1 training image(s); the probes' BatchNorm needs at least 2"


@pytest.mark.parametrize(("command", "protocol"), [("linear", ProbeProtocol), ("finetune", FinetuneProtocol)])
def test_the_command_line_options_are_the_protocol_fields_with_their_defaults(command, protocol):
    """Each protocol setting is declared once (its dataclass field) and becomes its command's option: left out on
    the command line, every setting is the dataclass default; given, it reaches the protocol."""
    from probe.cli import FIXED_SETTINGS, _protocol

    cmd = main.commands[command]
    names = {p.name for p in cmd.params}
    settings = [f.name for f in dataclasses.fields(protocol) if f.name not in FIXED_SETTINGS]
    assert set(settings) <= names and not set(FIXED_SETTINGS) & names
    required = ["random:cifar", "--data", "cifar10:x", "--out", "o"]
    assert _protocol(protocol, cmd.make_context(command, [*required]).params) == protocol()  # click eats lists
    given = cmd.make_context(command, [*required, "--epochs", "3", "--milestones", "1,2", "--center-crop"]).params
    assert _protocol(protocol, given) == protocol(epochs=3, milestones=(1, 2), ten_crop=False)


@pytest.mark.parametrize("folder", ["a|b", "x\n# <script>alert(1)</script>", "back`tick"])
def test_names_a_user_chose_cannot_break_a_report(tmp_path, folder):
    """A run folder's name goes into report.md and results.md as text: it cannot shift a score into another
    column, start a heading, end a code span or add raw HTML (issue 32, item 7)."""
    from probe.results import layers_markdown, new_results, write_json

    run = tmp_path / folder
    results = new_results("linear", {"source": str(run / "encoder.pt"), "arch": "cifar", "config": {}},
                          {"kind": "cifar10", "path": str(tmp_path / folder / "data"), "train_used": 50_000,
                           "test_used": 10_000, "num_classes": 10}, {}, "cpu", None)
    results["layers"] = {f"conv{i}": {"top1": 10.0 * i, "top5": 90.0, "dims": 9600} for i in range(1, 5)}
    results.update(timings={"total_s": 60.0}, protocol={
        "epochs": 36, "batch_size": 192, "lr": 0.01, "lr_divisor": 5, "milestones": [5, 15, 25], "momentum": 0.9,
        "weight_decay": 1e-5, "pooling": "max-pooled", "ten_crop": False})
    write_json(run / "results.json", results)
    assert _run("report", run / "results.json", "--out", tmp_path / "report.md").exit_code == 0
    for text in ((tmp_path / "report.md").read_text(), layers_markdown(results)):
        prose = re.sub(r"(`+) .*? \1|(`+)[^`].*?\2", "", text)  # what is outside code spans is read as Markdown
        assert "<script>" not in prose and not any(line.startswith("# <") for line in text.splitlines())
        rows = [line for line in text.splitlines() if "measured:" in line or line.startswith("| conv")]
        assert rows, text
        for row in rows:  # a bar inside the name is escaped: the cells are the table's own
            cells = [c for c in re.split(r"(?<!\\)\|", row)[1:-1]]
            assert len(cells) in (5, 4), row  # report: label + conv1-conv4; results.md: layer, dims, top-1, top-5
        measured = next((r for r in rows if "measured:" in r), None)
        if measured is not None:
            assert [c.strip() for c in re.split(r"(?<!\\)\|", measured)[2:6]] == ["10.0", "20.0", "30.0", "40.0"]


def test_a_probe_out_folder_in_use_by_another_probe_is_refused_in_one_line(tmp_path, writers):
    # one writer per --out (issue 32): the lock is held by another probe (here this process, standing in for it)
    from common.fileio import folder_lock

    writers.cifar10(tmp_path / "data")
    out = tmp_path / "probe"
    with folder_lock(out, "probe linear"):
        result = _run("linear", "random:cifar", "--data", f"cifar10:{tmp_path / 'data'}", "--out", out,
                      "--epochs", "1", "--device", "cpu")
        assert result.exit_code == 1, result.output
        assert _error_line(result) == (f"Error: {out}: in use by another probe linear (host {os.uname().nodename}, "
                                       f"pid {os.getpid()}, lock probe.lock); wait for it to end or choose another "
                                       "--out")
        assert not out.exists()
    done = _run("linear", "random:cifar", "--data", f"cifar10:{tmp_path / 'data'}", "--out", out, "--epochs", "1",
                "--device", "cpu", "--batch-size", "8", "--workers", "0")
    assert done.exit_code == 0, done.output
    assert (out / "results.json").is_file() and not (tmp_path / "probe.lock").exists()
