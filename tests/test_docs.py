"""The documentation stays true: the site builds with --strict, README's method list is the registry's, every file,
figure and anchor the pages link exists, and every command a page shows parses against the real command line.

The command check builds each command's click context (``make_context``: options, choices, ranges and argument
counts checked, nothing run) or argparse namespace; a path an option requires to exist is accepted when it does
not (the pages' paths are examples). The few commands that cannot be checked that way are listed in
``UNCHECKED`` with the reason.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from markdown.extensions.toc import slugify

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
TOOLS = ("pipeline", "train", "probe")

# shown commands that are not parsed, with the reason (keep this short: every other command is checked)
UNCHECKED: dict[str, str] = {}

# the shell variables of the pages' batch scripts, given example values so that their commands parse
VARIABLES = {"N": "16", "SLURM_CPUS_PER_TASK": "8"}

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SOURCE_PATH = re.compile(r"`((?:common|pipeline|train|probe|experiments|bench|tests)/[\w./-]+\.(?:py|sh))`")
FENCE = re.compile(r"^\s*```(\w*)\s*$")
SHELL = {"sh", "bash", "shell", "console"}


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# ---------------------------------------------------------------------------------------------------- the site


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "bench" / "results" / "reproduce-cifar10-quick.md").is_file()


# ------------------------------------------------------------------------------------------ README and registry


def _readme_table_column(heading: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([\w-]+)` \|", section, re.M)


def test_readme_lists_every_method_and_encoder():
    from train.methods import list_methods
    from train.models import list_encoders

    assert _readme_table_column("Methods and encoders") == sorted(list_methods())
    section = (REPO / "README.md").read_text().split("\n## Methods and encoders\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([\w-]+)`", section)) | {f"resnet18-cifar{w}" for w in ("-w16", "-w32")
                                                        if f"`{w}`" in section}
    assert set(list_encoders()) <= named, sorted(set(list_encoders()) - named)


# ----------------------------------------------------------------------------------------------------- links


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slugify(h.strip().rstrip("#").strip(), "-") for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def _broken_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http(s), mailto
            continue
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            broken.append(f"{target}: no such file")
        elif anchor and where.suffix == ".md" and anchor not in _anchors(where):
            broken.append(f"{target}: no heading with that anchor")
    for source in SOURCE_PATH.findall(text):
        if not (REPO / source).is_file():
            broken.append(f"`{source}`: no such file")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_linked_file_figure_and_anchor_exists(page):
    assert _broken_links(page) == []


def test_benchmarks_page_indexes_every_result():
    # every file of bench/results/ is named on docs/benchmarks.md, or is a picture that a result file names
    index = (REPO / "docs" / "benchmarks.md").read_text()
    results = REPO / "bench" / "results"
    named_by_results = " ".join(p.read_text() for p in results.glob("*.md"))
    missing = [p.name for p in sorted(results.iterdir())
               if p.name not in index and not (p.suffix == ".png" and p.name in named_by_results)]
    assert missing == []


# ------------------------------------------------------------------------------------------- shown commands


@dataclass
class Shown:
    page: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def _shell_lines(page: Path) -> list[Shown]:
    """The commands of a page's shell code blocks, continuation lines joined, comments dropped."""
    shown, lang, pending, start = [], None, "", 0
    for number, line in enumerate(page.read_text().split("\n"), 1):
        fence = FENCE.match(line)
        if fence:
            lang = (fence.group(1) or "text") if lang is None else None
            continue
        if lang not in SHELL:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        if text and not text.startswith("#"):
            shown.append(Shown(_rel(page), start, text))
    return shown


def _words(text: str) -> list[str]:
    for name, value in VARIABLES.items():
        text = re.sub(rf"\$\{{?{name}\b\}}?", value, text)
    text = re.sub(r"\$\{?[A-Za-z_]\w*\}?", "1", text)  # others: an index, a folder
    words = shlex.split(text, comments=True)
    if words[:1] == ["srun"]:
        words = words[1:]
    if words[:1] == ["torchrun"]:
        words = words[words.index("--no-python") + 1:] if "--no-python" in words else []
    if words[:2] == ["docker", "run"]:
        image = next((i for i, w in enumerate(words) if "single-image-ssl:" in w), None)
        words = words[image + 1:] if image is not None else []
    return words


def _tool_commands() -> list[tuple[Shown, list[str]]]:
    found = []
    for page in PAGES:
        for shown in _shell_lines(page):
            for part in re.split(r"\s*(?:;|&&|\|\|)\s*(?=(?:[^']*'[^']*')*[^']*$)", shown.text):
                words = _words(part) if part.strip() else []
                if words[:1] and words[0] in (*TOOLS, "make") or words[:3] == ["python", "-m", "experiments"] \
                        or words[:2] == ["python", "experiments/reproduce.py"]:
                    found.append((shown, words))
    return found


def _click_context(words: list[str]) -> None:
    """Parse ``TOOL SUBCOMMAND ARGS`` as the tool would, up to the subcommand's context; nothing is run."""
    from pipeline.cli import main as pipeline_main
    from probe.cli import main as probe_main
    from train.cli import main as train_main

    group = {"pipeline": pipeline_main, "train": train_main, "probe": probe_main}[words[0]]
    parent = click.Context(group, info_name=words[0])
    command = group.get_command(parent, words[1])
    if command is None:  # a known name whose command cannot be built (an import failing) says so
        known = group.list_commands(parent)
        raise click.UsageError(f"no command {words[1]!r}" + (" (listed, but not built)" if words[1] in known else ""))
    command.make_context(words[1], list(words[2:]), parent=parent)


def _argparse(words: list[str]) -> None:
    from experiments.cli import parser

    start = 3 if words[:3] == ["python", "-m", "experiments"] else 2
    try:
        parser("python -m experiments").parse_args(words[start:])
    except SystemExit as exit_:
        raise click.UsageError(f"argparse exit {exit_.code}") from None


def _make(words: list[str]) -> None:
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    asked = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
    if not asked or set(asked) - targets:
        raise click.UsageError(f"no make target {sorted(set(asked) - targets)}")


@pytest.fixture
def paths_need_not_exist(monkeypatch):
    """click.Path(exists=True) accepts the pages' example paths (the check is of the command line's shape)."""
    convert = click.Path.convert

    def lenient(self, value, param, ctx):
        if self.exists and not os.path.exists(value):
            return self.coerce_path_result(value)
        return convert(self, value, param, ctx)

    monkeypatch.setattr(click.Path, "convert", lenient)


def test_every_shown_command_parses(paths_need_not_exist):
    failures, checked = [], 0
    for shown, words in _tool_commands():
        if shown.text in UNCHECKED:
            continue
        check = _make if words[0] == "make" else _click_context if words[0] in TOOLS else _argparse
        try:
            check(words)
            checked += 1
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort) as error:
            message = error.format_message() if isinstance(error, click.ClickException) else type(error).__name__
            failures.append(f"{shown}\n    {message}")
    assert failures == [], "\n".join(failures)
    assert checked > 50  # the pages show that many; fewer means the extraction broke


def test_unchecked_commands_are_still_shown():
    shown = {s.text for page in PAGES for s in _shell_lines(page)}
    assert set(UNCHECKED) <= shown, sorted(set(UNCHECKED) - shown)
