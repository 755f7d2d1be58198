"""The shard format, the contract between `pipeline` and everything downstream: the names of shards and samples,
the manifest's schema and its validation, and reading a manifest (docs/architecture.md describes the format).

A set is a folder: `manifest.json` plus `patches-%06d.tar` shards. A sample is `KEY.jpg` or `KEY.png` plus
`KEY.json`, `KEY` its global index as `%09d`. The manifest holds the format name and version, the configuration,
the set's sources (a rendered set) or classes (a labelled set packed by `pipeline pack`), and every complete shard.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import numpy as np

from common.errors import ShardSetError
from common.fileio import parse_json
from pipeline.remote import NetLimits, fetch_manifest, is_http

FORMAT_NAME = "single-image-ssl/shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_PATTERN = "patches-{:06d}.tar"
# The one pattern of a shard's name: the writer's names only, so a manifest never names a path elsewhere. ASCII
# digits only: \d also matches other scripts' digits, and "patches-" + six Arabic-Indic digits would be a second
# name for a shard index (issue 32).
SHARD_NAME = re.compile(r"patches-([0-9]{6})\.tar")
SHARD_GLOB = "patches-*.tar"
# A sample is two tar members (its image and its .json, neither empty), each a 512-byte header and at least one
# 512-byte data block: what bounds a shard's sample count by its size, so that a manifest claiming 10^12 samples in
# a small shard is refused before a reader sizes anything by its count (issue 32).
MIN_SAMPLE_BYTES = 4 * 512
# The image extensions a sample may have (the writer's formats); its provenance or label is KEY.json.
IMAGE_EXTENSIONS = ("jpg", "png")


def shard_name(index: int) -> str:
    return SHARD_PATTERN.format(index)


def shard_index(name: str) -> int:
    """The index of shard `name` (a name SHARD_NAME matches in full)."""
    match = SHARD_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not a shard name (patches-NNNNNN.tar)")
    return int(match.group(1))


def sample_key(index: int) -> str:
    return f"{index:09d}"


def is_url(location: str) -> bool:
    """An http(s) (or other scheme's) URL rather than a local path."""
    return "://" in location


def new_manifest(config: dict, n_samples: int, n_shards: int, *, kind: str | None = None, **contents: list) -> dict:
    """The manifest of a set with no shard written yet; `contents` (its sources, or its classes) follow `config`.
    A rendered set's manifest has no `kind` (readers take a missing kind as "rendered")."""
    head: dict = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
    if kind is not None:
        head["kind"] = kind
    return {**head, "config": config, **contents, "n_samples": n_samples, "n_shards": n_shards, "shards": []}


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = parse_json(path.read_text())
    except (OSError, ValueError) as e:
        raise ShardSetError(f"{path}: unreadable manifest ({e})") from None
    return check_manifest(manifest, path)


# What every reader of a manifest relies on, by kind of set; checked once here so that no reader meets a KeyError.
_FIELDS = {"config": dict, "n_samples": int, "n_shards": int, "shards": list}
_KIND_FIELDS = {"rendered": {"sources": list}, "labelled": {"classes": list}}
_CONFIG_FIELDS = {"rendered": {"format": str, "size": int, "shard_size": int, "n_patches": int},
                  "labelled": {"format": str, "shard_size": int, "classes": list}}
_SOURCE_FIELDS = {"path": str, "sha256": str, "width": int, "height": int, "mode": str}
_SHARD_FIELDS = {"name": str, "first": int, "count": int, "bytes": int, "sha256": str}


def check_manifest(manifest: object, where: str | Path) -> dict:
    """`manifest` (parsed JSON) if it is a manifest this tool reads; else a one-line ShardSetError naming `where`."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ShardSetError(f"{where}: not a manifest of a rendered set")
    if manifest.get("version") != FORMAT_VERSION:
        raise ShardSetError(f"{where}: format version {manifest.get('version')}, this tool reads {FORMAT_VERSION}")
    kind = manifest.get("kind", "rendered")
    if kind not in _KIND_FIELDS:
        raise ShardSetError(f"{where}: malformed manifest (unknown kind {kind!r})")
    problem = (_field_problem(manifest, {**_FIELDS, **_KIND_FIELDS[kind]})
               or _field_problem(manifest["config"], _CONFIG_FIELDS[kind], "config.")
               or _entries_problem(manifest, "shards", _SHARD_FIELDS)
               or (kind == "rendered" and _entries_problem(manifest, "sources", _SOURCE_FIELDS))
               # readers label by `classes`, a resumed pack compares `config.classes`: they must be one list
               or (kind == "labelled" and manifest["config"]["classes"] != manifest["classes"]
                   and "config.classes differs from classes")
               or _consistency_problem(manifest, kind))
    if problem:
        raise ShardSetError(f"{where}: malformed manifest ({problem})")
    return manifest


def _field_problem(record: dict, fields: dict[str, type], prefix: str = "") -> str | None:
    for name, kind in fields.items():
        if name not in record:
            return f"missing {prefix}{name!r}"
        value = record[name]
        # bool is an int to Python, never to a manifest; a negative count or size is no count or size
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            expected = {dict: "an object", list: "a list", int: "a non-negative integer", str: "a string"}[kind]
            return f"{prefix}{name!r} is not {expected}"
    return None


def _entries_problem(manifest: dict, key: str, fields: dict[str, type]) -> str | None:
    for n, entry in enumerate(manifest[key]):
        where = f"{key}[{n}]"
        if not isinstance(entry, dict):
            return f"{where} is not an object"
        problem = _field_problem(entry, fields, f"{where}.")
        if problem:
            return problem
        if key == "shards" and not SHARD_NAME.fullmatch(entry["name"]):
            # a name is joined to the set's folder: only the writer's own names, never a path elsewhere
            return f"{where}.name {entry['name']!r} is not patches-NNNNNN.tar"
    return None


def _consistency_problem(manifest: dict, kind: str) -> str | None:
    """What makes a manifest disagree with itself: no samples, no sources or classes, or shards whose place in
    the set is not the one the writer gives shard k (samples k * shard_size onwards, shard_size of them, the last
    one shorter), which also rules out overlapping shards and shards beyond the sample count."""
    n, config = manifest["n_samples"], manifest["config"]
    shard_size = config["shard_size"]
    if n == 0:
        return "n_samples is 0; a set holds at least one sample"
    if shard_size == 0:
        return "config.shard_size is 0"
    if kind == "rendered" and not manifest["sources"]:
        return "'sources' is empty; a rendered set comes from at least one image"
    if kind == "rendered" and config["n_patches"] != n:
        return f"config.n_patches {config['n_patches']} differs from n_samples {n}"
    if kind == "labelled" and not manifest["classes"]:
        return "'classes' is empty"
    n_shards = -(-n // shard_size)
    if manifest["n_shards"] != n_shards:
        return f"n_shards {manifest['n_shards']}, but {n} samples in shards of {shard_size} make {n_shards}"
    listed: set[int] = set()  # by index: what a reader reads, whatever the name says
    for i, shard in enumerate(manifest["shards"]):
        name, k = shard["name"], shard_index(shard["name"])
        if k in listed:
            return f"shards[{i}] {name} is listed twice"
        listed.add(k)
        if k >= n_shards:
            return f"shards[{i}] {name} is beyond the set's {n_shards} shards"
        first, count = k * shard_size, min(shard_size, n - k * shard_size)
        if (shard["first"], shard["count"]) != (first, count):
            return (f"shards[{i}] {name} lists samples from {shard['first']}, {shard['count']} of them; shard {k} "
                    f"of {n} samples in shards of {shard_size} holds {count} from {first}")
        if count * MIN_SAMPLE_BYTES > shard["bytes"]:  # counts are checked against bytes before anything is sized
            return (f"shards[{i}] {name} lists {count:,} samples in {shard['bytes']:,} bytes; a sample takes at "
                    f"least {MIN_SAMPLE_BYTES:,} bytes of tar")
    return None


def member_kind(member: tarfile.TarInfo) -> str | None:
    """What a tar member is when it is not a regular file (None when it is): no sample is made of it."""
    if member.isreg():
        return None
    if member.issym():
        return f"a symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"a hard link to {member.linkname!r}"
    return "a folder" if member.isdir() else "not a regular file"


class ShardMembers:
    """The rules a shard's members follow, checked member by member in the order the tar holds them, by
    `pipeline verify` and by the reader alike, so that both refuse the same shards in the same words (issue 32):
    regular files only, each named KEY.EXT with KEY the entry's samples' keys in order, each sample its one image
    of the set's formats and its .json, and as many samples as the entry lists, nothing more. `member` and `end`
    return a problem line, or None."""

    def __init__(self, where: str, entry: dict, formats: frozenset[str]) -> None:
        self.where, self.first, self.count, self.formats = where, entry["first"], entry["count"], formats
        self.n = 0  # samples begun
        self.exts: set[str] = set()  # the current sample's members

    def member(self, name: str, kind: str | None = None) -> str | None:
        """The problem of the next member, `name`; `kind`: what it is when it is not a regular file."""
        if kind is not None:
            return f"{self.where}:{name}: {kind}; a shard holds regular files only"
        key, _, ext = name.partition(".")
        if ext != "json" and ext not in self.formats:
            return f"{self.where}:{name}: not a sample's .{self._wanted()} or .json, which is all a shard holds"
        if self.n and key == sample_key(self.first + self.n - 1):
            if ext in self.exts or (ext != "json" and self.exts - {"json"}):
                return f"{self.where}:{name}: a second {'.json' if ext == 'json' else 'image'} of sample {key}"
            self.exts.add(ext)
            return None
        problem = self._incomplete()
        if problem:
            return problem
        if self.n == self.count:
            return (f"{self.where}: more samples than the {self.count} its manifest entry lists (sample {key} "
                    f"refused); an altered shard")
        expected = sample_key(self.first + self.n)
        if key != expected:
            return (f"{self.where}:{name}: sample {expected} expected here (a shard holds samples "
                    f"{sample_key(self.first)}..{sample_key(self.first + self.count - 1)}, in order, each once)")
        self.n, self.exts = self.n + 1, {ext}
        return None

    @property
    def full(self) -> bool:
        """Every listed sample is complete: any member after this one is refused."""
        return self.n == self.count and len(self.exts) == 2

    def end(self) -> str | None:
        """The problem of a shard whose members ended here."""
        problem = self._incomplete()
        if problem is None and self.n != self.count:
            problem = (f"{self.where}: {self.n} samples, the manifest lists {self.count} (a cut stream or a "
                       f"truncated shard)")
        return problem

    def _incomplete(self) -> str | None:
        if self.n and len(self.exts) != 2:
            return f"{self.where}: sample {sample_key(self.first + self.n - 1)} lacks its .{self._wanted()} or .json"
        return None

    def _wanted(self) -> str:
        return " or .".join(sorted(self.formats))


def dump_manifest(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=False) + "\n").encode()


def load_manifest(location: str | Path, net: NetLimits | None = None) -> dict:
    """The manifest of a set given by folder, by manifest path, or by http(s) URL of either; over http(s), read
    within `net`'s bounds (default: NetLimits.from_env(), pipeline.remote's environment variables)."""
    loc = str(location)
    if is_url(loc):
        url = loc if loc.endswith(".json") else loc.rstrip("/") + "/" + MANIFEST
        if not is_http(url):
            raise ShardSetError(f"{url}: a set is read over http(s) only")
        body = fetch_manifest(url, net or NetLimits.from_env())
        try:
            manifest = parse_json(body)
        except ValueError as e:
            raise ShardSetError(f"{url}: cannot read the manifest ({e})") from None
        return check_manifest(manifest, url)
    path = Path(loc)
    folder = path.parent if path.name == MANIFEST else path
    if not folder.is_dir():
        raise ShardSetError(f"{folder}: no such folder")
    manifest = read_manifest(folder)
    if manifest is None:
        raise ShardSetError(f"{folder}: no {MANIFEST}; is this a rendered set? (pipeline render --out {folder})")
    return manifest


def patch_size(manifest: dict) -> int | None:
    """The side every patch of a rendered set has (config.size); None for a packed set, whose images keep theirs."""
    return manifest["config"]["size"] if manifest.get("kind", "rendered") == "rendered" else None


def patch_size_problem(where: str, image: np.ndarray | None, size: int | None) -> str | None:
    """Why a decoded patch (H x W x C) does not belong to a set whose patches are `size` pixels (None: it does,
    or there is no image or no size to compare)."""
    if image is None or size is None or image.shape[:2] == (size, size):
        return None
    return f"{where}: a {image.shape[1]}x{image.shape[0]} patch, but the manifest's config.size is {size}"


def sample_formats(manifest: dict) -> frozenset[str]:
    """The image extensions a sample of this set may have: a rendered set has one; a packed (labelled) set keeps
    each file's own, one format or "mixed"."""
    fmt = manifest["config"]["format"]
    if manifest.get("kind") == "labelled" and fmt == "mixed":
        return frozenset(IMAGE_EXTENSIONS)
    return frozenset({fmt})
