"""Results files: `results.json` (everything needed to trust and compare a number) and a Markdown table."""

from __future__ import annotations

import html
import json
import os
import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.errors import DataError
from common.fileio import atomic_write_text, parse_json

RESULTS_FORMAT = "single-image-ssl/probe-results"
RESULTS_VERSION = 1


def md_text(text: object) -> str:
    """A name someone chose (a run folder, a data path, an --against label) as inert Markdown text, in a table cell
    or a heading: HTML's special characters as entities, table bars, backslashes and backticks escaped, and line
    breaks as spaces, so that no name can add a table cell, a heading, a code span or raw HTML to a report."""
    escaped = html.escape(" ".join(str(text).splitlines()), quote=False)
    return escaped.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")


def md_code(text: object) -> str:
    """`text` as an inline code span that nothing in it can end early: line breaks as spaces, table bars escaped
    (GitHub's tables split cells before reading code spans), and a fence longer than any run of backticks in it."""
    flat = " ".join(str(text).splitlines()).replace("|", "\\|")
    longest = max((len(run) for run in flat.replace("`", " ` ").split() if set(run) == {"`"}), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def encoder_label(source: str) -> str:
    """An encoder's name on a sheet or in a legend: `runs/monogan/encoder.pt` -> `monogan`; `random:cifar` and
    other relative paths as given; an absolute path by its file's name (a picture or report never shows this
    machine's folders; issue 32)."""
    path = Path(source)
    if path.name == "encoder.pt" and path.parent.name:
        return path.parent.name
    return path.name if path.is_absolute() else source


# An absolute path inside a string: a "/" opening the string or following a space, "=", ":", ";", ",", "(", a quote or
# a backtick (Markdown code), not a URL's "//" (which the negative look-ahead leaves alone: "https://host/x" holds
# no machine path).
_ABSOLUTE = re.compile(r"""(?:(?<=^)|(?<=[\s=:;,('"`]))/(?!/)[^\s;,'")`]*""")


def display_path(path: str | Path, base: str | Path) -> str:
    """`path` as an artefact may show it: a relative path as given; an absolute one relative to `base` (the folder
    of the file that records it), so that no artefact holds this machine's folders (issue 35)."""
    text = str(path)
    if not os.path.isabs(text):
        return text
    base, home = os.path.abspath(base), os.path.expanduser("~")
    # a path sharing no folder with base (a cache under the home folder, seen from a project elsewhere) would climb
    # to the root and spell out this machine's folders ("../../../root/.cache/x"): it is shown from the home folder
    if os.path.commonpath([text, base]) == os.sep and home != os.sep and Path(text).is_relative_to(home):
        return "~/" + os.path.relpath(text, home)
    return os.path.relpath(text, base)


def portable(value: Any, base: str | Path) -> Any:
    """`value` (JSON-like) with every absolute path in its strings made relative to `base`; other text unchanged.
    Command lines and descriptions are rewritten path by path ("probe linear /x/encoder.pt" -> "probe linear
    ../x/encoder.pt")."""
    if isinstance(value, str):
        return _ABSOLUTE.sub(lambda match: display_path(match.group(0), base) if _on_this_machine(match.group(0))
                             else match.group(0), value)
    if isinstance(value, dict):
        return {key: portable(item, base) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [portable(item, base) for item in value]
    return value


def _on_this_machine(text: str) -> bool:
    """Whether `text` (a "/..." found in a string) is a path of this machine: its top folder exists. A slash in
    prose is no path ("lr 0.01 /5 at epochs 3, 6"), nor a path of another machine that a file only names."""
    top = text.split("/")[1]
    return bool(top) and os.path.isdir("/" + top)


def data_label(spec: str) -> str:
    """A data set spec (KIND:PATH) as a title, caption or report may show it: as given when it holds no absolute
    path, else by its kind alone (`cifar10-jpg:/home/me/data` -> `cifar10-jpg`); a bare absolute path by its
    folder's name."""
    if portable(spec, "/") == spec:
        return spec
    kind, sep, _ = spec.partition(":")
    return kind if sep and not os.path.isabs(spec) else Path(spec).name


def environment(device: str) -> dict[str, Any]:
    """The machine and software a measurement was taken on."""
    import torch  # here, not at the top: `probe report` and the experiments' drivers read results without torch

    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def new_results(task: str, encoder_identity: dict, data: dict, protocol: dict, device: str,
                command: str | None) -> dict[str, Any]:
    return {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "task": task,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "encoder": encoder_identity,
        "data": data,
        "protocol": protocol,
        "environment": environment(device),
    }


def write_json(path: Path, payload: dict) -> None:
    """Write atomically: a reader never sees half a results file. Absolute paths in it (an encoder or data set
    named by one on the command line, a training config's folders) are recorded relative to the file's folder,
    so that a results file shows no machine's folders and still leads to what it names (:func:`portable`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = portable(payload, path.parent)
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_results(path: Path) -> dict[str, Any]:
    try:
        payload = parse_json(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no such results file") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable results file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != RESULTS_FORMAT:
        raise DataError(f"{path}: not a probe results file (expected format {RESULTS_FORMAT!r})")
    problem = _results_problem(payload)
    if problem:
        raise DataError(f"{path}: not a probe results file ({problem})")
    return payload


def _results_problem(payload: dict[str, Any]) -> str | None:
    """What is wrong with a results file's fields that readers rely on, or None: checked once, where files are
    read, so a hand-edited or truncated file is one line naming it rather than a KeyError deep in a report."""
    task = payload.get("task")
    if task not in ("linear", "finetune", "classify"):
        return "missing 'task'" if task is None else f"unknown task {task!r}"
    for section, key in (("encoder", "source"), ("data", "kind")):
        if section not in payload:
            return f"missing {section!r}"
        if not isinstance(payload[section], dict) or key not in payload[section]:
            return f"{section!r} has no {key!r}"
    if task in ("finetune", "classify"):
        return _scores_problem(payload, "scores", "scores")
    if "layers" not in payload:
        return "missing 'layers'"
    layers = payload["layers"]
    if not isinstance(layers, dict) or not layers:
        return "'layers' is not a mapping of layer names to scores"
    return next(filter(None, (_scores_problem(layers, name, f"layer {name!r}") for name in layers)), None)


def _scores_problem(parent: dict, key: str, what: str) -> str | None:
    if key not in parent:
        return f"missing {key!r}"
    row = parent[key]
    if not isinstance(row, dict) or not _is_percentage(row.get("top1")):
        return f"{what} has no top-1 percentage"
    return None


def _is_percentage(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 100


def layers_markdown(results: dict[str, Any]) -> str:
    """A per-layer table of a linear-probe results file, with what the numbers were measured on."""
    data, enc = results["data"], results["encoder"]
    lines = [
        f"# Linear probes: {md_text(enc['source'])} on {md_text(data['kind'])}",
        "",
        f"Encoder: {md_code(enc['source'])} (architecture {md_code(enc['arch'])}). "
        f"Data: {md_code(data['kind'] + ':' + str(data['path']))}, {data['train_used']} train / "
        f"{data['test_used']} test images, {data['num_classes']} classes.",
        "",
        "| layer | dims | top-1 (%) | top-5 (%) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, row in results["layers"].items():
        lines.append(f"| {md_text(name)} | {row['dims']} | {row['top1']:.1f} | {row['top5']:.1f} |")
    proto = results["protocol"]
    lines += [
        "",
        f"Protocol: {proto['epochs']} epochs, batch {proto['batch_size']}, SGD lr {proto['lr']} "
        f"/{proto['lr_divisor']:g} at epochs {', '.join(map(str, proto['milestones'])) or 'none'}, momentum "
        f"{proto['momentum']}, weight decay {proto['weight_decay']}; {proto['pooling']}"
        f"{', training on image or mirror' if proto.get('cifar_flip') else ''}; "
        f"{'10-crop' if proto['ten_crop'] else 'single-crop'} testing. "
        f"Wall time {results['timings']['total_s'] / 60:.1f} min on {results['environment']['processor']} "
        f"({results['environment']['torch_threads']} threads, {results['environment']['device']}).",
        "",
    ]
    return "\n".join(lines)


def finetune_markdown(results: dict[str, Any]) -> str:
    """The score of a fine-tuning run, with what it was measured on."""
    data, enc, proto = results["data"], results["encoder"], results["protocol"]
    scores = results["scores"]
    return "\n".join([
        f"# Fine-tuning: {md_text(enc['source'])} on {md_text(data['kind'])}",
        "",
        f"Frozen: {', '.join(proto['frozen']) or 'none'}; layers after {proto['keep']} freshly initialised. "
        f"Data: {md_code(data['kind'] + ':' + str(data['path']))}, {data['train_used']} train / "
        f"{data['test_used']} test images.",
        "",
        "| top-1 (%) | top-5 (%) |",
        "| ---: | ---: |",
        f"| {scores['top1']:.1f} | {scores['top5']:.1f} |",
        "",
        f"Protocol: {proto['epochs']} epochs, batch {proto['batch_size']}, SGD lr {proto['lr']} "
        f"/{proto['lr_divisor']:g} at epochs {', '.join(map(str, proto['milestones'])) or 'none'}, "
        f"weight decay {proto['weight_decay']}; {'10-crop' if proto['ten_crop'] else 'single-crop'} testing. "
        f"Wall time {results['timings']['total_s'] / 60:.1f} min.",
        "",
    ])


def classify_markdown(results: dict[str, Any]) -> str:
    """The scores of an encoder's own classifier on a test split, with what they were measured on."""
    data, enc, proto, scores = results["data"], results["encoder"], results["protocol"], results["scores"]
    return "\n".join([
        f"# Classifier: {md_text(enc['source'])} on {md_text(data['kind'])}",
        "",
        f"Encoder: {md_code(enc['source'])} (architecture {md_code(enc['arch'])}, {enc['num_classes']} classes). "
        f"Data: {md_code(data['kind'] + ':' + str(data['path']))}, {data['test_used']} of {data['test_size']} test "
        f"images, {proto['test_crop']} at {proto['input_size']} px; no training.",
        "",
        "| top-1 (%) | top-5 (%) |",
        "| ---: | ---: |",
        f"| {scores['top1']:.1f} | {scores['top5']:.1f} |",
        "",
        f"Wall time {results['timings']['total_s'] / 60:.1f} min.",
        "",
    ])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
