"""A disk that fills up, for tests of the writers: every file the tools write goes through `common.fileio`."""

from __future__ import annotations

import builtins
import errno
import os
import shutil
import subprocess
from pathlib import Path


class FullDisk:
    """Makes writes through `common.fileio` to files named `target` (or its temporary name) fail with ENOSPC
    once `after` bytes have been written to them, as a write(2) on a full disk does: an OSError naming no file.

    `skip` full files named `target` are written normally first (e.g. the first checkpoints of a run).
    """

    def __init__(self, monkeypatch, target: str, after: int = 0, skip: int = 0):
        self.target, self.after, self.skip, self.hits = target, after, skip, 0
        import common.fileio

        monkeypatch.setattr(common.fileio, "open", self._open, raising=False)

    def _open(self, file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)
        name = Path(file).name
        if not any(m in mode for m in "wa") or not (name == self.target or name.startswith(self.target + ".tmp-")):
            return f
        if self.skip > 0:
            self.skip -= 1
            return f
        self.hits += 1
        return _FillingFile(f, self.after)


class _FillingFile:
    """A writable file object that takes `room` bytes, then fails every write with ENOSPC (as a buffered file
    does: whatever fits is written, then the write raises)."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self._room:  # what fits is written, then the disk is full
            self._f.write(data[:self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def can_mount_tmpfs() -> bool:
    """Whether this machine lets an unprivileged user namespace mount a tmpfs (most Linux hosts and CI runners)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || "
                            "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True)
    return probe.returncode == 0


def flip_byte_in_image(shard: Path, sample: int = 0) -> str:
    """Flip one bit in the middle of the image of the shard's `sample`-th sample, keeping the shard's size (so only
    a hash can tell); the member's name."""
    import tarfile

    with tarfile.open(shard) as tar:
        member = [m for m in tar.getmembers() if m.name.endswith((".jpg", ".png"))][sample]
    data = bytearray(shard.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    return member.name
