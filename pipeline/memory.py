"""Per-sample buffers checked against the memory there is before they are allocated.

A set's sample count comes from its manifest, which may be wrong or hostile (a manifest over http claiming 10^12
samples in shards it claims are petabytes long passes every check that its own numbers allow). A buffer sized by
that count (DeepCluster's pseudo-labels and features, a probe's feature cache) is refused in one line when it would
not fit, instead of a traceback from the allocator or an out-of-memory kill after minutes (issue 32).
"""

from __future__ import annotations

import os
from pathlib import Path

from common.errors import DataError


def available_memory() -> int | None:
    """Bytes this process may still allocate: the kernel's MemAvailable, capped by a cgroup v2 limit; None where
    neither is known (then nothing is refused on memory grounds)."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit.isdigit() and used.isdigit():
            found.append(max(0, int(limit) - int(used)))
    except OSError:
        pass
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            pass
    return min(found) if found else None


def check_sample_buffers(count: int, bytes_per_sample: int, what: str, where: str) -> None:
    """Refuse (DataError, one line) buffers of `bytes_per_sample` for each of `count` samples that would not fit in
    the memory available. `what`: the buffers, for the message; `where`: who asks (a method, a probe)."""
    need = count * bytes_per_sample
    free = available_memory()
    if free is not None and need > free:
        raise DataError(f"{where}: {count:,} samples need {_gib(need)} for {what}, more than the {_gib(free)} of "
                        f"memory available; is the set's sample count right (pipeline info)?")


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"
