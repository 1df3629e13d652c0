"""DataLoader workers: large freed buffers go back to the system after each batch, so a worker's memory stays flat (a
trainer keeps them, and a worker forked from a trainer gives them back again); the training process leaves the
workers their cores."""

import subprocess
import sys

import pytest
import torch

from xkd.data import workers
from xkd.host_memory import worker_heap

# Frees a 4 MiB block (glibc then raises its mmap threshold past 512 KiB), fills the heap's free holes with small
# blocks (else the small ones below can land in holes left by imports, and the large ones merge into a trimmable top),
# then holds 100 blocks of 512 KiB each followed by a small (8 KiB) long-lived allocation that stops the heap from
# shrinking, frees the large ones (a worker then releases them, as collate_clips does after a batch), and prints how
# much of their memory the process still holds.
FRAGMENT = """
import ctypes, ctypes.util, re, sys
from xkd.host_memory import keep_freed_host_memory, release_freed_host_memory, worker_heap
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def rss_mb():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
def touched(n):
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    return p
if sys.argv[1] in ("trainer", "worker of a trainer"):
    assert keep_freed_host_memory()
if sys.argv[1] in ("worker", "worker of a trainer"):
    assert worker_heap()
libc.free(touched(4 << 20))
holes = [touched(8 << 10) for _ in range(2000)]  # fill the free holes imports left, so each small block lands last
before = rss_mb()
big, small = [], []
for _ in range(100):
    big.append(touched(512 << 10))
    small.append(touched(8 << 10))
for p in big:
    libc.free(p)
if sys.argv[1] in ("worker", "worker of a trainer"):
    assert release_freed_host_memory()
print(rss_mb() - before)
"""


def held_after_free(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", FRAGMENT, mode], capture_output=True, text=True, check=True)
    return float(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not worker_heap(), reason="glibc only")
def test_workers_return_freed_buffers_to_the_system_and_trainers_keep_them():
    assert held_after_free("default") > 30  # the 50 MiB of freed blocks stay in the fragmented heap
    assert held_after_free("trainer") > 30  # kept on purpose, for the next step
    assert held_after_free("worker") < 5
    assert held_after_free("worker of a trainer") < 5


def test_extraction_workers_pin_the_threshold(tmp_path, monkeypatch):
    import os

    from eval_fixtures import tiny_config, write_separable
    from xkd.api import random_encoders
    from xkd.data import workers
    from xkd.eval.extract import ExtractOptions, extract_to_file, manifest_from_target

    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setattr(workers, "worker_heap", lambda: (marks / str(os.getpid())).touch())  # forked workers
    root = tmp_path / "media"
    write_separable(root, per_class_train=1, per_class_test=1)
    opts = ExtractOptions(clips_per_video=1, num_workers=1, progress=False, batch_size=2)
    extract_to_file(random_encoders(tiny_config(), seed=3), manifest_from_target(root), tmp_path / "f.npz",
                    ["video"], opts)
    pids = [int(p.name) for p in marks.iterdir()]
    assert len(pids) == 1 and pids[0] != os.getpid()  # set in the one worker, not in the main process


def test_threads_beside_workers_leaves_the_workers_their_cores(monkeypatch):
    monkeypatch.setattr(workers, "available_cores", lambda: 8)
    assert workers.threads_beside_workers(2) == 6
    assert workers.threads_beside_workers(2, processes_per_node=2) == 2  # 4 cores each, 2 of them for workers
    assert workers.threads_beside_workers(8) == 1  # never below one thread
    monkeypatch.setattr(workers, "available_cores", lambda: 2)
    assert workers.threads_beside_workers(2) == 1


def test_pretraining_sets_its_threads_and_restores_the_callers(avdigits_tiny, tmp_path, monkeypatch):
    from test_pretrain import tiny_cfg

    from xkd.engine import pretrain as engine

    seen = []
    step = engine.Trainer.train_step

    def recording_step(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(engine.Trainer, "train_step", recording_step)
    monkeypatch.setattr(workers, "available_cores", lambda: 3)
    torch.set_num_threads(2)
    try:
        engine.pretrain(tiny_cfg(avdigits_tiny, "data.num_workers=1"), tmp_path / "auto", max_steps=1, progress=False)
        engine.pretrain(tiny_cfg(avdigits_tiny, "data.num_workers=1", "run.threads=3"), tmp_path / "set", max_steps=1,
                        progress=False)
        assert seen == [2, 3]  # auto: 3 cores - 1 worker; then as set
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(2)


def test_a_worker_releases_freed_memory_after_each_batch_and_the_main_process_does_not(tmp_path, monkeypatch):
    import os

    from torch.utils.data import DataLoader

    from xkd.data import dataset

    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setattr(dataset, "release_freed_host_memory",
                        lambda: (marks / f"{os.getpid()}-{len(list(marks.iterdir()))}").touch())
    items = [{"x": torch.full((4,), float(i))} for i in range(6)]
    dataset.collate_clips(items[:2])
    assert not list(marks.iterdir())  # not in the main process
    loader = DataLoader(items, batch_size=2, num_workers=1, collate_fn=dataset.collate_clips,
                        worker_init_fn=workers.init_worker)
    assert [b["x"][:, 0].tolist() for b in loader] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    pids = {p.name.split("-")[0] for p in marks.iterdir()}
    assert len(list(marks.iterdir())) == 3 and pids != {str(os.getpid())} and len(pids) == 1  # once per batch
