"""The one sha256 helper of the toolkit: of bytes, and of files read in blocks (never whole into memory).

Hex digests throughout: they are what manifests, results files and encoder identities record.
"""

from __future__ import annotations

import hashlib
import os

BLOCK_SIZE = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_files(*paths: str | os.PathLike) -> str:
    """The sha256 of the bytes of `paths`, one file after another (one file: that file's sha256)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda f=f: f.read(BLOCK_SIZE), b""):
                digest.update(block)
    return digest.hexdigest()
