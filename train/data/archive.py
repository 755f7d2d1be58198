"""Tarballs extracted once into a cache folder, keyed by content so a changed archive is extracted again."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from common.errors import DataError
from common.hashing import sha256_files

_COMPLETE = ".complete"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "single-image-ssl" / "probe"


def extracted(archives: Sequence[Path], cache_dir: Path, name: str) -> Path:
    """One folder holding the extracted contents of all `archives`; extracts on first use.

    Extraction goes to a temporary sibling that is renamed when complete, so an interrupted run never leaves a
    folder that looks finished.
    """
    archives = [Path(a) for a in archives]
    for archive in archives:
        if not archive.is_file():
            raise DataError(f"{archive}: missing archive")
    target = Path(cache_dir) / f"{name}-{sha256_files(*archives)[:16]}"
    if (target / _COMPLETE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    archive = archives[0]
    try:
        for archive in archives:
            with tarfile.open(archive) as tar:
                # the "data" filter refuses absolute paths, links out of the tree and device files
                tar.extractall(scratch, filter="data")
        (scratch / _COMPLETE).touch()
        if (target / _COMPLETE).exists():  # another process finished the same extraction meanwhile
            return target
        shutil.rmtree(target, ignore_errors=True)  # a half-written folder of an interrupted older run
        os.replace(scratch, target)
    except (tarfile.TarError, OSError, EOFError) as exc:
        if (target / _COMPLETE).exists():  # lost the rename race to another process
            return target
        raise DataError(f"{archive}: cannot extract ({type(exc).__name__}: {exc})") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target

