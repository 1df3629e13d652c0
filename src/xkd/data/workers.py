"""Set-up of every DataLoader worker process of the package.

A worker decodes and augments clips whose buffers are a few hundred KiB to a few MiB. glibc's malloc serves such
blocks with mmap at first, but raises its mmap threshold each time one is freed, after which they come from the heap,
which fragments and is never given back: a worker's private memory then grows with every batch (measured by
``benchmarks/extraction.py``: about 2.5 MiB per batch of 32 clips). Pinning the threshold keeps large blocks on mmap,
so their memory returns to the system when they are freed and a worker's memory stays flat.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
MMAP_THRESHOLD_BYTES = 64 * 1024


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Serve allocations of at least ``threshold`` bytes with mmap in this process (glibc only; elsewhere a no-op).
    Returns whether the setting took effect."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))


def init_worker(worker_id: int) -> None:
    """``worker_init_fn`` of every DataLoader: keeps the worker's memory flat (see the module docstring)."""
    pin_mmap_threshold()
