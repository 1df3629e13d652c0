"""Set-up of every DataLoader worker process of the package.

Each worker keeps freed buffers in its heap for reuse within a batch (:func:`xkd.host_memory.worker_heap`) and hands
them back to the system after each batch (:func:`xkd.data.dataset.collate_clips`), so its memory stays flat over a
run without page-faulting every buffer in again.

On a CPU-only machine the workers also share the cores with the training process: :func:`threads_beside_workers`
is the torch thread count that leaves them their cores, so the step's parallel regions do not stall while a worker
runs (on 2 cores with 2 workers, a real pretraining step took 496 ms with one training thread and 618 ms with
torch's default of two; docs/BENCHMARKS.md).
"""

from __future__ import annotations

import os

from xkd.host_memory import worker_heap


def init_worker(worker_id: int) -> None:
    """``worker_init_fn`` of every DataLoader: the worker's allocator settings (see the module docstring)."""
    worker_heap()


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
