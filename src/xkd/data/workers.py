"""Set-up of every DataLoader worker process of the package.

A worker decodes and augments clips whose buffers are a few hundred KiB to a few MiB. glibc's malloc serves such
blocks with mmap at first, but raises its mmap threshold each time one is freed, after which they come from the heap,
which fragments and is never given back: a worker's private memory then grows with every batch (measured by
``benchmarks/extraction.py``: about 2.5 MiB per batch of 32 clips). Pinning the threshold keeps large blocks on mmap,
so their memory returns to the system when they are freed and a worker's memory stays flat.

On a CPU-only machine the workers also share the cores with the training process: :func:`threads_beside_workers`
is the torch thread count that leaves them their cores, so the step's parallel regions do not stall while a worker
runs (on 2 cores with 2 workers, a real pretraining step took 496 ms with one training thread and 618 ms with
torch's default of two; docs/BENCHMARKS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

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


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_beside_workers(num_workers: int, processes_per_node: int = 1) -> int:
    """Torch threads for a CPU training process that runs ``num_workers`` DataLoader workers, when
    ``processes_per_node`` such processes share the machine: its share of the cores minus its workers, at least 1."""
    share = max(1, available_cores() // max(processes_per_node, 1))
    return max(1, share - num_workers)
