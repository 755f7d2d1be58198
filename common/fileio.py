"""Writing files so that no reader ever sees half of one, and a failing disk is one line naming the file.

Every file the tools write and later trust (shards, manifests, checkpoints, encoder.pt, config.json, results,
reports, pictures) goes through `atomic_file`: a temporary name in the same folder, fsync, rename over the final
name, fsync of the folder. A write that fails (a full disk, an I/O error) removes the temporary file, leaves any
previous version in place, and raises an OSError whose filename is the file being written, which the command-line
groups (`common.cli_group.ErrorReportingGroup`) print as one line. Append-only logs (metrics.jsonl) use `append_line`,
which takes a failed line back out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from common.errors import FolderInUseError

# Folders on some file systems cannot be fsynced (the rename is then as durable as that file system makes it).
_DIR_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF}


def temporary_name(path: Path) -> Path:
    """Where `path` is written before it is renamed: unique per host and process, so parts and workers writing
    into one folder never share one, and a killed writer's leftover is recognisable (`NAME.tmp-*`)."""
    return path.with_name(f"{path.name}.tmp-{os.uname().nodename}-{os.getpid()}")


def remove_dead_temporaries(folder: Path, names: Iterable[str]) -> list[Path]:
    """Remove the temporary files (see `temporary_name`) of `names` in `folder` that a killed writer on this host
    left: its process is gone, so nothing will rename them. Another host's, or a live process's, are kept (they may
    still be written). The removed paths, in order."""
    host, removed = os.uname().nodename, []
    for name in names:
        for path in sorted(folder.glob(f"{name}.tmp-*")):
            writer_host, _, pid = path.name[len(name) + len(".tmp-"):].rpartition("-")
            if writer_host == host and pid.isdigit() and not _process_exists(int(pid)):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def named_os_error(error: BaseException, path: str | os.PathLike) -> OSError | None:
    """The OSError that caused `error` (`error` itself, or one it was raised from or while handling, as torch's
    writer wraps a failed write in a RuntimeError) as an OSError naming `path`; None when no OSError caused it."""
    seen: BaseException | None = error
    for _ in range(16):  # a chain is short; never loop on a cyclic one
        if seen is None or isinstance(seen, OSError):
            break
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    if not isinstance(seen, OSError):
        return None
    named = OSError(seen.errno, seen.strerror or str(seen), os.fspath(path))
    return named


def _reraise_named(error: BaseException, path: Path) -> None:
    # OSError, or torch's RuntimeError around one; a project error raised by the caller's body stays as it is
    if isinstance(error, OSError | RuntimeError):
        named = named_os_error(error, path)
        if named is not None:
            raise named from None


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make renames in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """A file object to write `path` through; on leaving the block the data is fsynced and renamed over `path`.

    On any failure the temporary file is removed and `path` keeps its previous content (or stays absent); a
    failure caused by an OSError is raised as an OSError naming `path`.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file writes whole files ('wb' or 'w'), not {mode!r}")
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _reraise_named(error, path)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append `line` and a newline to `path`; a failed append is cut back off, so the log holds whole lines only."""
    append_bytes(path, (line + "\n").encode())


def append_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Append `data` to `path` as one record: a failed append is cut back off, so the file holds whole records only
    (metrics.jsonl lines, TensorBoard event records)."""
    path = Path(path)
    try:
        with open(path, "ab", buffering=0) as f:  # unbuffered: each write below is one system call
            start = f.seek(0, os.SEEK_END)
            try:
                written = 0
                while written < len(data):  # a write may take part of the data (a signal, a nearly full disk)
                    written += f.write(data[written:])
            except OSError:
                with contextlib.suppress(OSError):
                    f.truncate(start)
                raise
    except OSError as error:
        raise named_os_error(error, path) from None


def parse_json(data: str | bytes) -> Any:
    """``json.loads`` for files a user hands in (manifests, samples' provenance, results): JSON nested deeper than
    the parser's recursion (a crafted file, 100,000 brackets deep) raises the ValueError of any other malformed
    JSON, which the readers report in one line, instead of a RecursionError with its traceback."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``FOLDER.lock`` (beside the folder, which may not exist yet) for the block: an advisory lock (flock)
    recording this host and pid, so that a second writer of the same folder is refused in one line naming the
    holder. The kernel drops the lock of a process that dies, so a lock left by a dead process is taken over, with
    a notice naming it. The file is removed when the block ends. ``what``: the writer, for the message."""
    folder = Path(folder)
    path = folder.parent / f"{folder.name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _locked(path, folder, what)
    except (NotADirectoryError, FileExistsError, PermissionError):
        # the folder itself cannot be made there: the command's own making of it reports that, in one line
        yield
        return
    try:
        left = os.read(fd, 200).decode(errors="replace").split()
        if len(left) == 2 and left != [os.uname().nodename, str(os.getpid())]:
            logging.getLogger(__name__).warning("%s: took over the lock of %s (host %s, pid %s), which ended "
                                                "without releasing it", folder, what, *left)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.uname().nodename} {os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)  # closing releases the lock


def _locked(path: Path, folder: Path, what: str) -> int:
    """An open descriptor of `path` holding its lock; a FolderInUseError naming the holder when another has it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").split()
            os.close(fd)
            who = f"host {holder[0]}, pid {holder[1]}" if len(holder) == 2 else "another process"
            raise FolderInUseError(f"{folder}: in use by another {what} ({who}, lock {path.name}); wait for it to "
                                   f"end or choose another --out") from None
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd  # still the file at that name: its previous holder did not remove it meanwhile
        os.close(fd)

