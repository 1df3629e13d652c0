"""Shared fixtures: a tiny real AV-Digits build (made once per test session), one torch thread for tiny matrices."""

import os

import pytest

# Tiny tensors run fastest on one thread, and CI machines are small.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def avdigits_tiny(tmp_path_factory):
    """A 40-clip AV-Digits build (real MNIST digits and spoken digits, H.264/AAC MP4s); returns its manifest path."""
    from xkd.datasets.avdigits import prepare_avdigits

    out = tmp_path_factory.mktemp("av-digits")
    return prepare_avdigits(out, tiny=True, num_clips=40, progress=False, workers=1)


@pytest.fixture
def single_thread():
    """Tiny matrices run fastest on one thread, and the test machine is shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
