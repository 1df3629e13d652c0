"""glibc malloc settings, one per kind of process: DataLoader workers give freed memory back, trainers keep it.

- **Workers** decode and augment clips whose buffers are a few hundred KiB to a few MiB. glibc serves such blocks with
  mmap at first, but raises its mmap threshold each time one is freed, after which they come from the heap, which
  fragments and is never given back: a worker's private memory then grows with every batch (measured by
  ``benchmarks/extraction.py``: about 2.5 MiB per batch of 32 clips). :func:`return_freed_host_memory` pins the
  threshold, so large blocks stay on mmap and their memory returns to the system when freed.
- **A CPU training process** allocates and frees the same large buffers every step (a 2048 x 2048 head gradient is
  16 MiB). Served by fresh mmaps, or from a heap that is trimmed, they page-fault in again at every step.
  :func:`keep_freed_host_memory` raises the mmap threshold to its maximum and stops trimming, so the blocks are
  reused; the step's peak memory does not change (docs/BENCHMARKS.md: 5-7% faster steps).

Off glibc (macOS, musl) both are no-ops that return False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers in glibc's malloc.h
M_MMAP_THRESHOLD = -3
WORKER_MMAP_THRESHOLD = 64 * 1024
DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's default
TRAINER_MMAP_THRESHOLD = 32 * 2**20  # the largest value glibc accepts on 64-bit systems
TRAINER_TRIM_THRESHOLD = 2**31 - 1


@functools.cache
def _libc_mallopt():
    """glibc's ``mallopt``, or None off glibc; looked up once per process (``find_library`` runs a subprocess)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def _mallopt(option: int, value: int) -> bool:
    mallopt = _libc_mallopt()
    return mallopt is not None and bool(mallopt(option, value))


def return_freed_host_memory(mmap_threshold: int = WORKER_MMAP_THRESHOLD) -> bool:
    """Serve allocations of at least ``mmap_threshold`` bytes with mmap and trim the heap as glibc does by default
    (a forked worker may inherit a trainer's settings). Returns whether the settings took effect."""
    return _mallopt(M_MMAP_THRESHOLD, mmap_threshold) and _mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)


def keep_freed_host_memory() -> bool:
    """Keep freed blocks of up to 32 MiB in the heap for reuse and never trim it. Returns whether it took effect."""
    return _mallopt(M_MMAP_THRESHOLD, TRAINER_MMAP_THRESHOLD) and _mallopt(M_TRIM_THRESHOLD, TRAINER_TRIM_THRESHOLD)
