"""The reader of sets of shards, for `train/` and `probe/`: a webdataset pipeline over the manifest's shards.

Each epoch yields every sample exactly once across ranks (split by node) and DataLoader workers (split by worker).
Shard order and the sample shuffle buffer are seeded by (seed, epoch, rank, worker), so an epoch's order is
reproducible, which exact resume relies on. Call `set_epoch` before each epoch, as with DistributedSampler.

What is read is checked against the manifest, whatever the transport. A remote shard (http(s), `pipe:` command) is
spooled whole (memory, or a temporary file), stopped at the first byte beyond its listed byte count, and its byte
count and sha256 checked before any sample of it is handed on. A local shard's bytes are hashed as they pass (no
second read), refused beyond its byte count, and compared with the manifest's sha256 at the shard's end, before
its last sample is handed on. Each shard must yield the samples it lists (one more is refused at once); each
rendered patch must have the manifest's size. Network reads are bounded in time and size (pipeline.remote).
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import tarfile
import tempfile
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
import webdataset as wds
from PIL import Image
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys
from webdataset.utils import pytorch_worker_info

from common.errors import ShardSetError, ToolkitError
from common.fileio import parse_json
from pipeline.remote import NetLimits, check_spooled, digest_message, is_http, longer_message, spool_shard
from pipeline.shard_format import (
    IMAGE_EXTENSIONS,
    MANIFEST,
    SHARD_NAME,
    ShardMembers,
    is_url,
    load_manifest,
    member_kind,
    patch_size,
    patch_size_problem,
    sample_formats,
)
from pipeline.sources import MAX_SOURCE_PIXELS


def is_url_pattern(location: str | Path) -> bool:
    """A webdataset URL list (`pipe:` command, brace pattern, `::`-joined) rather than a set folder or manifest.

    A local path that exists is a folder or manifest whatever characters it holds (`{`, `::`, a `pipe:` prefix)."""
    loc = str(location)
    if not loc.startswith("pipe:") and "{" not in loc and "::" not in loc:
        return False
    return is_url(loc) or not Path(loc).expanduser().exists()


def shard_urls(location: str | Path, manifest: dict | None = None) -> list[str]:
    """Where each listed shard is, in index order: local paths, or URLs beside the manifest."""
    manifest = manifest or load_manifest(location)
    loc = str(location)
    if is_url(loc):
        base = loc.rsplit("/", 1)[0] if loc.endswith(".json") else loc.rstrip("/")
        return [f"{base}/{s['name']}" for s in manifest["shards"]]
    folder = Path(loc).parent if Path(loc).name == MANIFEST else Path(loc)
    # absolute: the reader would take a relative folder named `pipe:x` or `a::b` for a scheme or a URL list
    return [str(folder.absolute() / s["name"]) for s in manifest["shards"]]


def count_samples(location: str | Path) -> int:
    return sum(s["count"] for s in load_manifest(location)["shards"])


def verify_quick(location: str | Path, net: NetLimits | None = None) -> dict:
    """Cheap checks before a long job: the set is complete and (locally) every shard has its listed size.
    `pipeline verify` re-hashes and decodes everything. `net` bounds a manifest read over http(s)."""
    manifest = load_manifest(location, net)
    listed, expected = len(manifest["shards"]), manifest["n_shards"]
    if listed == 0:
        raise ShardSetError(f"{location}: empty set (no complete shard); render it first")
    if listed < expected:
        raise ShardSetError(f"{location}: incomplete set ({listed} of {expected} shards); finish the render")
    if not is_url(str(location)):
        for url, s in zip(shard_urls(location, manifest), manifest["shards"], strict=True):
            p = Path(url)
            if not p.is_file():
                raise ShardSetError(f"{p}: listed in the manifest but missing")
            if p.stat().st_size != s["bytes"]:
                raise ShardSetError(f"{p}: {p.stat().st_size} bytes, the manifest says {s['bytes']} (truncated "
                                    f"or altered; run pipeline verify)")
    return manifest


_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0-SOF15: not DHT, JPG, DAC


def header_size(data: bytes) -> tuple[int, int]:
    """(width, height) from an image's header. JPEG and PNG, what shards hold, are read here directly (a few
    microseconds: Pillow's open costs ~60 us, more than decoding a 32 px patch); anything else through Pillow;
    (0, 0) for what neither knows (OpenCV then decides)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 <= len(data) and data[i] == 0xFF:
            marker = data[i + 1]
            if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # fill byte or markers without length
                i += 1 if marker == 0xFF else 2
                continue
            if marker in _JPEG_FRAME_MARKERS:
                height, width = struct.unpack(">HH", data[i + 5:i + 9])
                return width, height
            i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data)).size  # reads the header only
    except Image.DecompressionBombError:
        return MAX_SOURCE_PIXELS, MAX_SOURCE_PIXELS  # above Pillow's hard limit, so above ours
    except (OSError, ValueError):
        return 0, 0


PNG_SIGNATURE, JPEG_SIGNATURE = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"


def decode_bgr(data: bytes, name: str = "image") -> np.ndarray:
    """The one decoder of images stored in shards (reader, verify, preview): OpenCV's, as BGR, after the header's
    size is checked against the toolkit's decompression-bomb limit (a packed or hostile shard can hold any image;
    OpenCV's own limit is 2**30 pixels, six times ours).

    Shards hold JPEG and PNG only (the writer's and `pipeline pack`'s formats): anything else is refused before it
    is decoded, as is an image whose header gives no size. OpenCV reads formats whose size neither our header
    parser nor Pillow knows (a Radiance HDR named .png decoded 196 Mpx before the size check; issue 32)."""
    if not data.startswith((PNG_SIGNATURE, JPEG_SIGNATURE)):
        raise ShardSetError(f"{name}: not a JPEG or PNG image (what a shard holds), refused before decoding")
    width, height = header_size(data)
    if width * height == 0:
        raise ShardSetError(f"{name}: no image size in its header, refused before decoding")
    if width * height > MAX_SOURCE_PIXELS:
        raise ShardSetError(f"{name}: more than {MAX_SOURCE_PIXELS:,} pixels (decompression bomb?), refused")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ShardSetError(f"{name}: cannot decode the image")
    return arr


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """An image stored in a shard as RGB (see decode_bgr)."""
    return cv2.cvtColor(decode_bgr(data, name), cv2.COLOR_BGR2RGB)


def parse_meta(data: bytes, where: str) -> dict:
    """A sample's .json (its provenance or label), which must be a JSON object; `where`: SHARD:KEY."""
    try:
        meta = parse_json(data)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise ShardSetError(f"{where}: its .json is not a JSON object")
    return meta


def decode_sample(sample: dict, decode: str = "torch", size: int | None = None) -> dict[str, Any]:
    """A raw webdataset sample (bytes by extension) -> {'key', 'index', 'image', 'meta'}; with `size` (a rendered
    set's config.size), a decoded patch of any other size is an error."""
    key = sample["__key__"]
    ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
    where = f"{sample.get('__url__', '?')}:{key}"
    if ext is None or "json" not in sample:
        raise ShardSetError(f"{where}: sample lacks an image or its .json")
    meta = parse_meta(sample["json"], where)
    if decode == "raw":
        image: Any = sample[ext]
    elif decode == "pil":
        from PIL import Image

        from pipeline.sources import decode_rgb

        # the sources' decoder: a packed file reaches a probe as it would from its folder (EXIF, 16-bit scaled)
        image = Image.fromarray(decode_rgb(sample[ext], where)[0])
    else:
        image = decode_image(sample[ext], where)
        problem = patch_size_problem(where, image, size)
        if problem:
            raise ShardSetError(problem)
        if decode == "torch":
            import torch

            image = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        elif decode != "rgb":
            raise ValueError(f"unknown decode {decode!r}: choose torch, rgb, pil or raw")
    return {"key": key, "index": int(meta.get("index", key)), "image": image, "meta": meta}


def _raise_shard_error(exn: Exception) -> bool:
    """webdataset handler: a torn or corrupt shard ends the epoch with a clear error, never a short epoch. The
    toolkit's own errors (a shard longer than its entry, a failed transfer) pass unchanged."""
    if isinstance(exn, ToolkitError):
        raise exn
    where = exn.args[-1] if len(exn.args) > 1 and isinstance(exn.args[-1], str) else "shard"
    raise ShardSetError(f"{where}: unreadable shard, truncated or corrupt ({exn.args[0] if exn.args else exn})") \
        from exn


def _is_local(url: str) -> bool:
    """A shard on this machine's file system, streamed; anything else (http(s), `pipe:` commands, other
    schemes) is spooled whole and checked before a sample of it is read."""
    return url.startswith("file:") or ("://" not in url and not url.startswith("pipe:"))


class _HashingReader:
    """A read-only stream that hashes the bytes passing through it: a local shard is verified by the one read of
    it, and refused at the first byte beyond its manifest entry's byte count."""

    def __init__(self, stream, url: str, size: int):
        self._stream, self.digest = stream, hashlib.sha256()
        self.url, self.size, self.n = url, size, 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self.n += len(data)
        if self.n > self.size:
            raise ShardSetError(longer_message(self.url, self.size))
        self.digest.update(data)
        return data

    def drain(self) -> None:
        """Read to the end: the tar reader stops at the end-of-archive marker and leaves the padding after it."""
        while self.read(1 << 16):
            pass

    def close(self) -> None:
        self._stream.close()


def _spool_stream(url: str, entry: dict, verify: bool, spool_memory: int) -> IO[bytes]:
    """A shard read by webdataset's gopen (a `pipe:` command, another scheme) spooled whole, stopped at the first
    byte beyond its entry, and (with `verify`) checked against it, as pipeline.remote.spool_shard does over http."""
    out = tempfile.SpooledTemporaryFile(max_size=spool_memory)
    try:
        stream = gopen(url)
        try:
            digest, n = hashlib.sha256(), 0
            while chunk := stream.read(min(1 << 16, entry["bytes"] + 1 - n)):
                n += len(chunk)
                if n > entry["bytes"]:
                    raise ShardSetError(longer_message(url, entry["bytes"]))
                digest.update(chunk)
                out.write(chunk)
        finally:
            stream.close()
        if verify:
            check_spooled(url, entry, n, digest.hexdigest())
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


class _ReadShards(wds.PipelineStage):
    """Opens each shard URL and yields its raw samples (grouped by webdataset's group_by_keys).

    `entries` (name -> manifest entry) are the shards' manifest entries. A remote shard (http(s) within `net`'s
    bounds, or a `pipe:` command) is spooled whole, stopped at the first byte beyond its entry's byte count, and
    with `verify` checked (byte count, sha256) before any sample of it is read: no sample of a damaged or altered
    remote shard reaches a consumer. A local shard is hashed as it streams, refused at the first byte beyond its
    entry, and its digest compared at its end, before its last sample is yielded (group_by_keys holds a sample
    until the shard's end-of-file marker): samples before the last have been yielded by then; a trainer stops at
    the error, and `pipeline verify` tells which sample is damaged. The members of a shard with an entry follow
    ShardMembers' rules, as `pipeline verify` checks them: the first breach (a link, a stray or duplicated member,
    a key out of order, one sample more than listed) is refused before its sample is handed on."""

    def __init__(self, entries: dict[str, dict] | None, verify: bool = True, net: NetLimits | None = None,
                 formats: frozenset[str] = frozenset(IMAGE_EXTENSIONS)):
        self.entries, self.verify, self.net = entries or {}, verify, net or NetLimits()
        self.formats = formats

    def _entry(self, url: str) -> dict | None:
        m = SHARD_NAME.search(url)
        return self.entries.get(m.group(0)) if m else None

    def _open(self, url: str, entry: dict | None, current: dict[str, Any]) -> Any:
        if _is_local(url):
            stream = gopen(url)
            if entry is not None and self.verify:
                stream = current["reader"] = _HashingReader(stream, url, entry["bytes"])
            return stream
        if is_http(url):
            spool = spool_shard(url, entry, self.net, self.verify)
        elif entry is not None:
            spool = _spool_stream(url, entry, self.verify, self.net.spool_memory)
        else:
            return gopen(url)  # a command's output no manifest describes: streamed as it comes
        current["spool"] = spool
        return spool

    def run(self, src):
        return group_by_keys(self._files(src), handler=_raise_shard_error)

    def _files(self, src):
        """Each shard's members as webdataset's {fname, data, __url__} records, then {} at the shard's end."""
        for source in src:
            url, current = source["url"], {}
            entry = self._entry(url)
            try:
                stream = self._open(url, entry, current)
                members = entry and ShardMembers(url, entry, self.formats)
                yield from _shard_members(url, stream, members, flush="reader" not in current)
                if "reader" in current:  # a local shard whose bytes were hashed: checked before its last sample
                    _check_digest(url, current["reader"], entry)
            except ToolkitError:
                raise
            except Exception as exn:
                raise ShardSetError(f"{url}: unreadable shard, truncated or corrupt ({exn})") from exn
            finally:
                if "spool" in current:
                    current.pop("spool").close()  # a spooled shard read: its memory or temporary file goes
            yield {}


def _shard_members(url: str, stream: IO[bytes], members: ShardMembers | None, flush: bool):
    """The regular members of the tar `stream`; with `members` (the shard's entry), each checked by its rules
    first, and the shard's end too. With `flush` (no digest is pending), the end-of-file marker follows the last
    listed sample's last member at once: that sample is handed on before a member beyond it is refused."""
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            kind = member_kind(member)
            if members is not None and (problem := members.member(member.name, kind)):
                raise ShardSetError(problem)
            if kind is not None:
                continue  # no manifest describes this shard: skipped, as webdataset does
            yield {"fname": member.name, "data": tar.extractfile(member).read(), "__url__": url}
            tar.members = []  # a streamed tar keeps every header otherwise
            if flush and members is not None and members.full:
                yield {}  # group_by_keys hands on the held sample (a second marker at the end is a no-op)
    if members is not None and (problem := members.end()):
        raise ShardSetError(problem)


def _check_digest(url: str, reader: _HashingReader, entry: dict) -> None:
    try:
        reader.drain()
    except OSError as e:
        raise ShardSetError(f"{url}: unreadable shard ({e.strerror or e})") from None
    if reader.digest.hexdigest() != entry["sha256"]:
        raise ShardSetError(digest_message(url, entry))


class _EpochShardList(wds.PipelineStage):
    """Yields the shard URLs, in an order shuffled by (seed, epoch) when asked; the same on every rank."""

    def __init__(self, urls: list[str], shuffle: bool, seed: int):
        self.urls, self.shuffle, self.seed, self.epoch = list(urls), shuffle, seed, 0

    def run(self):
        urls = list(self.urls)
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(urls)
        for u in urls:
            yield {"url": u}


class _EpochShuffle(wds.PipelineStage):
    """A shuffle buffer seeded by (seed, epoch, rank, worker): reproducible, unlike wds.shuffle's default."""

    def __init__(self, bufsize: int, seed: int):
        self.bufsize, self.seed, self.epoch = bufsize, seed, 0

    def run(self, src):
        rank, _, worker, _ = pytorch_worker_info()
        rng = random.Random(hash((self.seed, self.epoch, rank, worker)))
        buf: list = []
        for sample in src:
            if len(buf) < self.bufsize:
                buf.append(sample)
                continue
            j = rng.randrange(len(buf))
            yield buf[j]
            buf[j] = sample
        rng.shuffle(buf)
        yield from buf


class ShardPipeline(wds.DataPipeline):
    """A webdataset pipeline with an epoch: `set_epoch(e)` re-seeds the shard order and the shuffle buffer."""

    n_samples: int | None  # None for a URL pattern opened without a manifest
    manifest: dict | None

    def set_epoch(self, epoch: int) -> None:
        for stage in self.pipeline:
            if hasattr(stage, "epoch"):
                stage.epoch = epoch


def pattern_urls(pattern: str) -> list[str]:
    """The shard URLs a webdataset pattern names (brace ranges expanded, `::` lists split)."""
    return list(wds.shardlists.expand_urls(pattern))


def check_pattern_covers_manifest(urls: list[str], manifest: dict) -> None:
    """A pattern must name exactly the manifest's shards: one shard too few is a silently short epoch."""
    named = [m.group(0) for m in map(SHARD_NAME.search, urls) if m]
    listed = [s["name"] for s in manifest["shards"]]
    missing, extra = sorted(set(listed) - set(named)), sorted(set(named) - set(listed))
    if missing or extra or len(named) != len(urls):
        detail = []
        if missing:
            detail.append(f"misses {len(missing)} ({missing[0]}{', ...' if len(missing) > 1 else ''})")
        if extra:
            detail.append(f"names {len(extra)} not listed ({extra[0]}{', ...' if len(extra) > 1 else ''})")
        if len(named) != len(urls):
            detail.append(f"{len(urls) - len(named)} URLs name no patches-NNNNNN.tar shard")
        raise ShardSetError(f"the URL pattern does not match the manifest's {len(listed)} shards: "
                            f"{'; '.join(detail)}")


def open_shards(location: str | Path, *, shuffle_buffer: int = 0, seed: int = 0, epoch: int = 0,
                decode: str = "torch", split_by_node: bool = True, split_by_worker: bool = True,
                check: bool = True, manifest: str | Path | dict | None = None,
                only: Collection[str] | None = None, verify: bool = True,
                net: NetLimits | None = None) -> ShardPipeline:
    """Open a rendered set for streaming: an IterableDataset of {'key', 'index', 'image', 'meta'} dicts.

    `location` is a set folder, its manifest.json, an http(s) URL of either, or a webdataset URL pattern
    (`pipe:CMD`, `https://host/set/patches-{000000..000127}.tar`); for a pattern, pass `manifest` (path, URL or
    dict) to get sample counts and per-shard checks. A torn, truncated or cut shard raises: an epoch is never
    silently short. For a folder or URL, a `manifest` dict already read is used as is (no second fetch), and
    `only` (shard names) restricts the epoch to those shards, so a reader can interleave several streams.
    With a manifest, each shard is checked against it (`verify=False`: not, for benchmarks): a remote shard
    whole before any sample of it is read, a local one as it streams (see _ReadShards); a shard yields no more
    samples than its entry lists, and a rendered set's patches must have its config.size. Network reads (the
    manifest, http(s) shards) are bounded by `net` (default: NetLimits.from_env(), see pipeline.remote).
    """
    net = net or NetLimits.from_env()
    if is_url_pattern(location):
        if only is not None:
            raise ValueError("only= selects shards of a set folder or URL; a pattern names its shards itself")
        urls = pattern_urls(str(location))
        if isinstance(manifest, str | Path):
            manifest = load_manifest(manifest, net)
        if manifest is not None:
            check_pattern_covers_manifest(urls, manifest)
    else:
        if not isinstance(manifest, dict):
            manifest = verify_quick(location, net) if check else load_manifest(location, net)
        if only is not None:
            manifest = {**manifest, "shards": [s for s in manifest["shards"] if s["name"] in only]}
        urls = shard_urls(location, manifest)
    stages: list = [_EpochShardList(urls, shuffle=shuffle_buffer > 0, seed=seed)]
    if split_by_node:
        stages.append(wds.split_by_node)
    if split_by_worker:
        stages.append(wds.split_by_worker)
    listed = {s["name"]: s for s in manifest["shards"]} if manifest is not None else {}
    formats = sample_formats(manifest) if manifest is not None else frozenset(IMAGE_EXTENSIONS)
    stages.append(_ReadShards(listed, verify, net, formats))
    if shuffle_buffer > 0:
        stages.append(_EpochShuffle(shuffle_buffer, seed))
    size = patch_size(manifest) if manifest is not None else None
    stages.append(wds.map(lambda s: decode_sample(s, decode, size)))
    pipe = ShardPipeline(*stages)
    pipe.n_samples = sum(s["count"] for s in manifest["shards"]) if manifest is not None else None
    pipe.manifest = manifest
    pipe.set_epoch(epoch)
    return pipe
