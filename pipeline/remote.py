"""Bounded reads over http(s): a set's manifest, and its shards spooled whole before any sample is read.

Every transfer is bounded in time and in size, and retried a bounded number of times; each failure is one line
naming the URL and what happened (HTTP status, timed out, too slow, too large, a refused redirect), and how many
attempts were made. The limits are the fields of :class:`NetLimits`; their defaults can be changed for a whole run
(DataLoader workers included) through these environment variables, checked against the same ranges:

    SINGLE_IMAGE_SSL_NET_TIMEOUT        seconds to connect, for the response's status and headers, and for each
                                        next byte of its body (30)
    SINGLE_IMAGE_SSL_NET_MIN_SPEED      bytes/s a transfer must average over each SPEED_TIME window, 0 = off (1024)
    SINGLE_IMAGE_SSL_NET_SPEED_TIME     seconds of the low-speed window (60)
    SINGLE_IMAGE_SSL_NET_ATTEMPTS       attempts per transfer: a timeout, a dropped connection, a too-slow transfer,
                                        HTTP 408, 429 or 5xx is retried; anything else is not (3)
    SINGLE_IMAGE_SSL_NET_BACKOFF        seconds before the second attempt, doubled before each further one (1)
    SINGLE_IMAGE_SSL_MAX_MANIFEST_BYTES the largest manifest.json read over http(s) (64 MiB)
    SINGLE_IMAGE_SSL_SPOOL_MEMORY       bytes of a spooled shard kept in memory; a larger shard goes to a temporary
                                        file, deleted once the shard is read (64 MiB)

A transfer therefore fails within about TIMEOUT (to connect) + TIMEOUT (for the response head) + SPEED_TIME +
TIMEOUT per attempt, ATTEMPTS times, plus BACKOFF x (2^(ATTEMPTS-1) - 1) seconds, whatever the server does: a stall
trips TIMEOUT, a drip trips the low-speed limit (or, in the head, TIMEOUT), an endless body trips the size bound
(the manifest's limit, or a shard's byte count in its manifest entry).

Redirects are followed to http(s) only: a redirect to file:// (or ftp://) is refused, naming where it pointed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import io
import os
import socket
import tempfile
import threading
import time
import typing
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import IO

from common.errors import OptionError, RemoteReadError, ShardSetError
from common.options import check_fields, opt, value_problem

MiB = 1 << 20
ENV_PREFIX = "SINGLE_IMAGE_SSL_"
CHUNK = 1 << 16
# A shard no manifest lists (a URL pattern opened without one) is spooled up to this size: an ImageNet shard of
# 10,000 images is about 1.1 GB.
UNLISTED_SHARD_MAX_BYTES = 16 << 30
_RETRIED_STATUS = frozenset({408, 429})  # and every 5xx: what a server or proxy sends for a passing problem


@dataclass(frozen=True)
class NetLimits:
    """The bounds of every network read (see the module docstring for their environment variables)."""

    net_timeout: float = opt(30.0, "Seconds to connect to a server, for its response's status and headers, and for "
                                   "each next byte of the body.", min=0, min_open=True, max=3600)
    net_min_speed: int = opt(1024, "Bytes/s a transfer must average over each --net-speed-time window (0: no "
                                   "low-speed limit).", min=0)
    net_speed_time: float = opt(60.0, "Seconds of the window the low-speed limit is measured over.",
                                min=0, min_open=True, max=3600)
    net_attempts: int = opt(3, "Attempts per transfer (timeouts, dropped connections, HTTP 408/429/5xx are retried).",
                            min=1, max=20)
    net_backoff: float = opt(1.0, "Seconds before the second attempt of a transfer, doubled before each further one.",
                             min=0, max=600)
    max_manifest_bytes: int = opt(64 * MiB, "The largest manifest.json read over http(s), in bytes.",
                                  min=1024, max=1 << 40)
    spool_memory: int = opt(64 * MiB, "Bytes of a remote shard held in memory while it is checked; a larger shard is "
                                      "spooled to a temporary file, deleted after.", min=0, max=1 << 40)

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_env(cls, environ: typing.Mapping[str, str] | None = None) -> NetLimits:
        """The defaults, with any SINGLE_IMAGE_SSL_<FIELD> variable of `environ` (default os.environ) in its place;
        a value that is not a number of the field's type, or is outside its range, is an OptionError naming it."""
        environ = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, int | float] = {}
        for f in dataclasses.fields(cls):
            name = ENV_PREFIX + f.name.upper()
            raw = environ.get(name)
            if raw is None or not raw.strip():
                continue
            try:
                value: int | float = hints[f.name](raw.strip())
            except ValueError:
                raise OptionError(f"{name}={raw!r}: not {'an integer' if hints[f.name] is int else 'a number'}") \
                    from None
            problem = value_problem(f, hints[f.name], value)
            if problem:
                raise OptionError(f"{name}={raw!r}: {problem}")
            values[f.name] = value
        return cls(**values)


class _Retry(Exception):
    """A failure worth another attempt (a passing problem of the network or the server)."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows redirects to ftp:// too; a set is read over http(s) only. (It refuses file:// itself, with an
    HTTPError whose url is the redirect's target, as this does.)"""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, f"{msg} - Redirection to url '{newurl}' is not allowed",
                                         headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _HeadDeadline:
    """A connection whose response head (status line and headers) must arrive within its timeout in all: the
    socket timeout bounds each wait for a byte only, and a head dripped a byte at a time (http.client takes up to
    100 header lines of 64 KiB) would never trip it. Past the deadline the socket is shut, and the read that
    fails is reported as a timeout."""

    timeout: float | None
    sock: socket.socket | None

    def getresponse(self) -> http.client.HTTPResponse:
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            if self.sock is not None:
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(self.timeout or 0, expire)
        timer.start()
        try:
            return super().getresponse()  # type: ignore[misc]
        except (OSError, http.client.HTTPException):
            if expired.is_set():
                raise TimeoutError(f"no response head within {self.timeout:g} s") from None
            raise
        finally:
            timer.cancel()


class _HTTPConnection(_HeadDeadline, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_HeadDeadline, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPSConnection, req, context=self._context)  # type: ignore[attr-defined]


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects, _HTTPHandler, _HTTPSHandler)


def is_http(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in ("http", "https")


def fetch_manifest(url: str, limits: NetLimits) -> bytes:
    """The body at `url`, of at most limits.max_manifest_bytes (more is refused as too large)."""
    out, max_bytes = io.BytesIO(), limits.max_manifest_bytes
    transfer(url, limits, out, max_bytes, too_long=lambda n: (
        f"{url}: larger than {max_bytes:,} bytes, the manifest size limit ({ENV_PREFIX}MAX_MANIFEST_BYTES)"))
    return out.getvalue()


def spool_shard(url: str, entry: dict | None, limits: NetLimits, verify: bool = True) -> IO[bytes]:
    """Shard `url` read whole into memory (or, past limits.spool_memory, a temporary file deleted on close),
    then, with `verify`, checked against its manifest `entry` (byte count and sha256): a readable file at its
    start. Reading stops at the first byte beyond the entry's byte count (without an entry, beyond
    UNLISTED_SHARD_MAX_BYTES), whether or not `verify`."""
    size = entry["bytes"] if entry is not None else UNLISTED_SHARD_MAX_BYTES
    out = tempfile.SpooledTemporaryFile(max_size=limits.spool_memory)
    try:
        n, digest = transfer(url, limits, out, size, too_long=lambda n: longer_message(url, size, n))
        if verify and entry is not None:
            check_spooled(url, entry, n, digest)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


def longer_message(url: str, size: int, content_length: int = 0) -> str:
    declared = f"; Content-Length {content_length:,}" if content_length else ""
    return (f"{url}: longer than its manifest entry ({size:,} bytes{declared}); stopped at the first extra byte, "
            f"no sample of it read")


def check_spooled(url: str, entry: dict, n: int, digest: str) -> None:
    """A spooled shard of `n` bytes and sha256 `digest` must be its manifest `entry`'s (longer never gets here)."""
    if n != entry["bytes"]:
        raise ShardSetError(f"{url}: shorter than its manifest entry ({n:,} of {entry['bytes']:,} bytes), a "
                            f"truncated or altered shard; no sample of it read")
    if digest != entry["sha256"]:
        raise ShardSetError(digest_message(url, entry))


def digest_message(url: str, entry: dict) -> str:
    """What a shard whose sha256 is not its manifest entry's is told (spooled, or hashed as it streamed)."""
    first, last = entry["first"], entry["first"] + entry["count"] - 1
    return (f"{url}: sha256 differs from the manifest's, a damaged or altered shard (samples {first:09d}..{last:09d}); "
            f"stopped. `pipeline verify` names the damaged sample")


def transfer(url: str, limits: NetLimits, out: IO[bytes], max_bytes: int,
             too_long: typing.Callable[[int], str]) -> tuple[int, str]:
    """Copy the body at `url` into `out` (from its start; truncated before each attempt): (bytes, sha256 hex).

    At most `max_bytes` are taken; the first byte beyond, or a Content-Length above, is a ShardSetError worded by
    `too_long(content_length or 0)`. Passing failures are retried (limits.net_attempts, with backoff); the last
    one, or the first that is not passing, is a RemoteReadError of one line naming the URL and the attempts."""
    attempts = limits.net_attempts
    for attempt in range(1, attempts + 1):
        out.seek(0)
        out.truncate()
        try:
            return _attempt(url, limits, out, max_bytes, too_long)
        except _Retry as e:
            if attempt == attempts:
                raise RemoteReadError(f"{e}{_after(attempt)}") from None
        except RemoteReadError as e:
            raise RemoteReadError(f"{e}{_after(attempt)}") from None
        time.sleep(limits.net_backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _after(attempts: int) -> str:
    return f" (after {attempts} attempts)" if attempts > 1 else " (1 attempt, not retried)"


def _attempt(url: str, limits: NetLimits, out: IO[bytes], max_bytes: int,
             too_long: typing.Callable[[int], str]) -> tuple[int, str]:
    try:
        response = _OPENER.open(url, timeout=limits.net_timeout)
    except urllib.error.HTTPError as e:
        e.close()
        raise _status_error(url, e) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError):
            raise _Retry(f"{url}: timed out connecting or waiting for the response head ({limits.net_timeout:g} s, "
                         f"{ENV_PREFIX}NET_TIMEOUT)") from None
        raise _Retry(f"{url}: cannot connect ({reason})") from None
    with response:
        length = _content_length(response)
        if length is not None and length > max_bytes:
            raise ShardSetError(too_long(length))  # refused before any byte of the body is read
        return _read_body(url, response, limits, out, max_bytes, too_long)


def _content_length(response: http.client.HTTPResponse) -> int | None:
    length = (response.headers.get("Content-Length") or "").strip()
    return int(length) if length.isascii() and length.isdigit() else None


def _status_error(url: str, e: urllib.error.HTTPError) -> Exception:
    if 300 <= e.code < 400 and "is not allowed" in str(e.reason):
        return RemoteReadError(f"{url}: redirected to {e.filename}, refused (a set is read over http(s) only)")
    message = f"HTTP {e.code} {http.client.responses.get(e.code, '')}".rstrip() + f" from {url}"
    if e.code in _RETRIED_STATUS or 500 <= e.code < 600:
        return _Retry(message)
    return RemoteReadError(message)


def _read_body(url: str, response: http.client.HTTPResponse, limits: NetLimits, out: IO[bytes], max_bytes: int,
               too_long: typing.Callable[[int], str]) -> tuple[int, str]:
    """Copy the body, hashing it as it passes, until its end or the first byte beyond `max_bytes`.

    read1 returns what one socket read brings, so the low-speed check runs after every arrival: a server that
    drips a byte at a time is stopped after about net_speed_time, not when (if ever) a full chunk has come."""
    digest, total = hashlib.sha256(), 0
    declared = _content_length(response)
    window_start, window_bytes = time.monotonic(), 0
    while True:
        try:
            chunk = response.read1(min(CHUNK, max_bytes + 1 - total))
        except TimeoutError:
            raise _Retry(f"{url}: timed out, no byte for {limits.net_timeout:g} s after {total:,} bytes "
                         f"({ENV_PREFIX}NET_TIMEOUT)") from None
        except (OSError, http.client.HTTPException) as e:
            raise _Retry(f"{url}: connection dropped after {total:,} bytes ({type(e).__name__}: {e})") from None
        if not chunk:
            if declared is not None and total < declared:  # http.client reads an early close as the end
                raise _Retry(f"{url}: connection dropped after {total:,} of {declared:,} bytes")
            return total, digest.hexdigest()
        total += len(chunk)
        if total > max_bytes:
            raise ShardSetError(too_long(0))
        digest.update(chunk)
        out.write(chunk)
        window_bytes += len(chunk)
        elapsed = time.monotonic() - window_start
        if elapsed >= limits.net_speed_time:
            if window_bytes < limits.net_min_speed * elapsed:
                raise _Retry(f"{url}: too slow, {window_bytes:,} bytes in {elapsed:.0f} s, under the "
                             f"{limits.net_min_speed:,} bytes/s minimum ({ENV_PREFIX}NET_MIN_SPEED)")
            window_start, window_bytes = time.monotonic(), 0
