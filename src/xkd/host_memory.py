"""glibc malloc settings, one per kind of process: DataLoader workers reuse freed memory within a batch and give it
back after each one, trainers keep it.

- **Workers** decode and augment clips whose buffers are a few hundred KiB to a few MiB. glibc serves such blocks with
  mmap at first, but raises its mmap threshold each time one is freed, after which they come from the heap, which
  fragments and is never given back: a worker's private memory then grows with every batch (measured by
  ``benchmarks/extraction.py``: about 2.5 MiB per batch of 32 clips). Serving every such block with a fresh mmap
  instead (the threshold pinned low) keeps the memory flat but page-faults every buffer in again: it halved a
  worker's clip rate on the Kinetics recipe's windows (docs/SCALING.md). So :func:`worker_heap` keeps large blocks in
  the heap, where a batch reuses them, and :func:`release_freed_host_memory` (``malloc_trim``, called by
  :func:`xkd.data.dataset.collate_clips` in workers, once per batch) hands every freed page back afterwards.
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
DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's default
HEAP_MMAP_THRESHOLD = 32 * 2**20  # the largest value glibc accepts on 64-bit systems
TRAINER_TRIM_THRESHOLD = 2**31 - 1


def _libc(symbol: str):
    """A glibc function, or None off glibc."""
    libc = _libc_handle()
    return getattr(libc, symbol, None) if libc is not None else None


@functools.cache
def _libc_handle():
    """glibc with the prototypes used here, or None; looked up once per process (``find_library`` runs a
    subprocess)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
        return None
    return libc


def _mallopt(option: int, value: int) -> bool:
    mallopt = _libc("mallopt")
    return mallopt is not None and bool(mallopt(option, value))


def worker_heap() -> bool:
    """A worker's settings: freed blocks of up to 32 MiB stay in the heap for reuse, the heap's top is trimmed as
    glibc does by default (a forked worker may inherit a trainer's settings). Returns whether they took effect."""
    return _mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD) and _mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)


def release_freed_host_memory() -> bool:
    """Hand every freed page of the heap back to the system (``malloc_trim(0)``). Returns whether it ran."""
    trim = _libc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def keep_freed_host_memory() -> bool:
    """Keep freed blocks of up to 32 MiB in the heap for reuse and never trim it. Returns whether it took effect."""
    return _mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD) and _mallopt(M_TRIM_THRESHOLD, TRAINER_TRIM_THRESHOLD)
