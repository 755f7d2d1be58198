"""Registries find their entries: every module of their package, and the files of SINGLE_IMAGE_SSL_PLUGINS."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from train.plugins import PLUGINS_ENV, PluginError, Registry, load_plugins, plugin_files


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A fresh importable package `regpkg_<n>` holding a Registry `THINGS` and one module registering 'a'."""
    name = f"regpkg_{abs(hash(str(tmp_path)))}"
    root = tmp_path / "pkgs" / name
    root.mkdir(parents=True)
    (root / "__init__.py").write_text(f"from train.plugins import Registry\nTHINGS = Registry('thing', {name!r})\n")
    (root / "a.py").write_text(f"from {name} import THINGS\nTHINGS.add('a', 1)\n")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def test_a_registry_imports_its_package_and_the_plugins_on_first_read(package, tmp_path, monkeypatch):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "p.py").write_text(f"from {package} import THINGS\nTHINGS.add('p', 2)\n")
    monkeypatch.setenv(PLUGINS_ENV, str(plugins))
    things = __import__(package).THINGS
    assert dict(things._entries) == {}  # nothing imported before the first read
    assert dict(things) == {"a": 1, "p": 2}
    assert "a" in things and things["p"] == 2 and len(things) == 2
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        things.add("a", 3)


def test_plugin_files_are_imported_once_each_in_order(package, tmp_path, monkeypatch):
    things = __import__(package).THINGS
    first, folder = tmp_path / "first.py", tmp_path / "more"
    folder.mkdir()
    (folder / "b.py").write_text(f"from {package} import THINGS\nTHINGS.add('b', len(THINGS._entries))\n")
    (folder / "c.py").write_text(f"from {package} import THINGS\nTHINGS.add('c', len(THINGS._entries))\n")
    (folder / "notes.txt").write_text("not a plugin")
    first.write_text(f"from {package} import THINGS\nTHINGS.add('first', len(THINGS._entries))\n")
    monkeypatch.setenv(PLUGINS_ENV, str(first))
    assert sorted(things) == ["a", "first"]
    monkeypatch.setenv(PLUGINS_ENV, os.pathsep.join([str(first), "", str(folder)]))  # an empty entry is skipped
    assert sorted(things) == ["a", "b", "c", "first"]  # 'first' is not imported again (no duplicate error)
    assert [things[n] for n in ("b", "c")] == [2, 3]  # a folder's files in name order
    assert load_plugins() == []  # nothing new to import


@pytest.mark.parametrize("entry, problem", [("missing.py", "no such plugin file or folder"),
                                            ("notes.txt", "not a .py file or a folder")])
def test_a_bad_plugin_entry_is_one_error_naming_it(tmp_path, entry, problem):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(PluginError, match=f"^{tmp_path / entry}: {problem} \\(named in {PLUGINS_ENV}\\)$"):
        plugin_files(str(tmp_path / entry))


def test_a_failing_plugin_is_one_error_naming_the_file_and_the_cause(tmp_path, monkeypatch):
    broken = tmp_path / "broken.py"
    broken.write_text(textwrap.dedent("""
        raise RuntimeError("the plugin's own complaint\\nand its second line")
    """))
    monkeypatch.setenv(PLUGINS_ENV, str(broken))
    with pytest.raises(PluginError) as caught:
        load_plugins()
    assert str(caught.value) == (f"{broken}: the plugin failed to import "
                                 "(RuntimeError: the plugin's own complaint)")
    assert not [m for m in sys.modules if m.startswith("_single_image_ssl_plugin_broken_")]


def test_a_registry_of_a_missing_package_fails_loudly():
    with pytest.raises(ModuleNotFoundError):
        dict(Registry("thing", "no_such_package_for_a_registry"))
