"""The suite's own conventions, checked on the collected suite: one test infrastructure (tests/conftest.py), every
test run in CI, and the expensive end-to-end runs shared by tests that one worker runs in order."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
TEST_FILES = sorted(p for p in TESTS.rglob("*.py") if p.name != "conftest.py" or p.parent != TESTS)

# what tests/conftest.py defines once for the whole suite: no other test file defines its own
SHARED_HELPERS = {"write_cifar10", "write_cifar100", "write_image_tree", "cifar_rows", "write_pickle", "write_tarball",
                  "train_config", "stop_when", "render_tiny"}
SHARED_FIXTURES = {"photo", "tiny_set", "held_out_set", "writers", "trained_encoder"}


def _functions(path: Path) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(n, ast.FunctionDef)]


def _is_fixture(node: ast.FunctionDef) -> bool:
    return any("fixture" in ast.unparse(d) for d in node.decorator_list)


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: str(p.relative_to(TESTS)))
def test_no_test_file_redefines_the_shared_infrastructure(path):
    functions = _functions(path)
    helpers = sorted(f.name for f in functions if f.name in SHARED_HELPERS)
    fixtures = sorted(f.name for f in functions if _is_fixture(f) and f.name in SHARED_FIXTURES)
    # one autouse fixture sets the threads of every test (torch and faiss): tests/conftest.py::_one_thread
    threads = sorted(f.name for f in functions if _is_fixture(f) and "autouse=True" in ast.unparse(f.decorator_list[0])
                     and "set_num_threads" in ast.unparse(f))
    own = helpers + fixtures + threads
    assert own == [], f"use tests/conftest.py's instead: {own}"


@pytest.mark.parametrize("path", [p for p in TEST_FILES if p.name != "test_options.py"],
                         ids=lambda p: str(p.relative_to(TESTS)))
def test_training_configs_come_from_the_one_factory(path):
    # tests/conftest.py::train_config builds every TrainConfig of the tests (test_options.py checks the dataclass's
    # own refusals; code in strings, run by a subprocess, is not a call here)
    calls = [n.lineno for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
             and ast.unparse(n.func).split(".")[-1] == "TrainConfig"]
    assert calls == [], f"{path.name}: TrainConfig(...) at lines {calls}; use train_config(...)"


def test_ci_and_make_test_run_every_test_in_parallel_and_print_the_slowest():
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert "pytest" in recipe and "--durations=15" in recipe
    assert not re.search(r"pytest .*\s-[mk]\s", recipe + ci)  # no test is deselected (-m "not slow", -k)
    addopts = re.search(r'^addopts = "(.*)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert "-n auto" in addopts and "--dist loadgroup" in addopts and "--timeout" in addopts


def test_tests_sharing_an_expensive_run_are_one_group_on_one_worker(request):
    """A session fixture defined by a test module (an end-to-end run, done once) must be used only by tests of one
    xdist_group: --dist loadgroup then runs them on one worker, in order, and the run is made once, not once per
    worker (the shared fixtures of tests/conftest.py are cheap and may be built by every worker)."""
    users: dict[str, set[str]] = {}
    for item in request.session.items:
        groups = {str(m.args[0] if m.args else m.kwargs.get("name")) for m in item.iter_markers("xdist_group")}
        for name, defs in item._fixtureinfo.name2fixturedefs.items():  # the fixtures the test uses, with scopes
            definition = defs[-1]
            where = Path(definition.func.__code__.co_filename)
            if definition.scope == "session" and where.is_relative_to(TESTS) and where != TESTS / "conftest.py":
                users.setdefault(name, set()).update(groups or {f"(no group: {item.nodeid})"})
    if not users:  # a subset of the suite (-k, a file): the end-to-end tests are not among the collected
        pytest.skip("no test of this session uses an end-to-end run")
    shared = {name: groups for name, groups in users.items() if len(groups) != 1 or "(no group" in next(iter(groups))}
    assert shared == {}, shared
