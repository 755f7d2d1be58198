"""Registries that find their entries: every module of a package, plus plugin files named in the environment.

An entry (an encoder in ``train/models/``, a method in ``train/methods/``) registers itself with a decorator when
the module defining it is imported. A :class:`Registry` imports those modules the first time it is read, so a new
entry is one new file and no other edit:

- every module of the registry's package, found with :mod:`pkgutil` (as timm's registry finds its models);
- the plugin files of ``SINGLE_IMAGE_SSL_PLUGINS``: an :data:`os.pathsep`-separated list of ``.py`` files and of
  folders whose ``.py`` files (sorted by name, not recursively) are imported. Each file is imported once per
  process, under a module name derived from its resolved path, so a plugin can also be used outside the folder
  it lives in (``SINGLE_IMAGE_SSL_PLUGINS=~/my-encoders probe linear random:myres ...``).

Plugins are read again whenever a registry is read and the variable has changed, so a process that sets it late
(a test) still finds them; a file already imported is never imported twice.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import pkgutil
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from common.errors import PluginError

PLUGINS_ENV = "SINGLE_IMAGE_SSL_PLUGINS"

Entry = TypeVar("Entry")

_imported: dict[Path, ModuleType | None] = {}  # resolved path -> its module (None: its import failed)
_last_setting: str | None = None


def plugin_files(setting: str) -> list[Path]:
    """The ``.py`` files a ``SINGLE_IMAGE_SSL_PLUGINS`` value names, in order; an error for a bad entry."""
    files: list[Path] = []
    for entry in filter(None, (part.strip() for part in setting.split(os.pathsep))):
        path = Path(entry).expanduser()
        if path.is_dir():
            files += sorted(p for p in path.glob("*.py") if p.is_file())
        elif path.is_file() and path.suffix == ".py":
            files.append(path)
        elif path.exists():
            raise PluginError(f"{path}: not a .py file or a folder (named in {PLUGINS_ENV})")
        else:
            raise PluginError(f"{path}: no such plugin file or folder (named in {PLUGINS_ENV})")
    return files


def load_plugins() -> list[ModuleType]:
    """Import the plugin files ``SINGLE_IMAGE_SSL_PLUGINS`` names that are not imported yet; the new modules.

    A plugin that fails to import is one :class:`PluginError` naming the file and the first line of the problem.
    """
    global _last_setting
    setting = os.environ.get(PLUGINS_ENV, "")
    if setting == _last_setting:
        return []
    new = []
    for path in plugin_files(setting):
        resolved = path.resolve()
        if resolved not in _imported:
            _imported[resolved] = None  # attempted: a failing plugin is reported once, not re-run on every read
            _imported[resolved] = _import_file(resolved)
            new.append(_imported[resolved])
    _last_setting = setting
    return new


def _import_file(path: Path) -> ModuleType:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"_single_image_ssl_plugin_{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{path}: cannot be imported as a Python module (named in {PLUGINS_ENV})")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        lines = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        raise PluginError(f"{path}: the plugin failed to import ({detail})") from exc
    return module


def import_submodules(package: str) -> None:
    """Import every module (and subpackage) directly inside ``package``."""
    root = importlib.import_module(package)
    for info in pkgutil.iter_modules(root.__path__):
        importlib.import_module(f"{package}.{info.name}")


class Registry(Mapping[str, Entry]):
    """name -> entry, filled by :meth:`add` (from decorators) and discovered on the first read.

    Reading it (``name in r``, ``r[name]``, iterating) first imports every module of ``package`` once, then any
    plugin files not imported yet. Adding never triggers discovery, so the modules being imported can register.

    Iteration has one order whoever reads first (help texts list entries in it): the package's entries by module
    name, then the plugins' in the order they registered. Plugins are loaded by whichever registry is read first, so
    a plugin may register here before this package's own modules are imported.
    """

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, Entry] = {}
        self._order: dict[str, tuple[int, str, int]] = {}  # name -> sort key (see the class docstring)
        self._package_imported = False

    def add(self, name: str, entry: Entry) -> Entry:
        """Register ``entry`` under ``name``; a name registered twice is an error naming it."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        module = str(getattr(entry, "__module__", ""))
        inside = module.startswith(self.package + ".")
        self._order[name] = (0, module, len(self._order)) if inside else (1, "", len(self._order))
        self._entries[name] = entry
        return entry

    def discover(self) -> None:
        if not self._package_imported:
            self._package_imported = True  # first: the modules imported below read the registry too
            import_submodules(self.package)
        load_plugins()

    def __getitem__(self, name: str) -> Entry:
        self.discover()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self.discover()
        return iter(sorted(self._entries, key=self._order.__getitem__))

    def __len__(self) -> int:
        self.discover()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"
