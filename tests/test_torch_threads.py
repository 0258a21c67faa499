"""A thread that runs a model uses the process's PyTorch thread count, not OpenMP's
default team (foundry.torch_threads)."""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import pytest
import torch

from foundry.torch_threads import adopt_torch_threads


def _openmp() -> ctypes.CDLL | None:
    """The OpenMP runtime PyTorch loaded (libgomp on Linux wheels), or None. Other
    libraries may load their own copy (scikit-learn's wheel has one), whose per-thread
    settings are its own: the one under torch's folder is PyTorch's."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    torch_lib = Path(torch.__file__).parent
    paths = {line.split()[-1] for line in maps.read_text().splitlines() if "omp" in line}
    paths = {
        p
        for p in paths
        if Path(p).name.startswith(("libgomp", "libiomp")) and Path(p).is_relative_to(torch_lib)
    }
    return ctypes.CDLL(sorted(paths)[0]) if paths else None


def _team_in_new_thread(omp: ctypes.CDLL, adopt: bool) -> int:
    """OpenMP's team size for parallel regions started on a new thread."""
    seen: list[int] = []

    def run() -> None:
        if adopt:
            adopt_torch_threads()
        seen.append(omp.omp_get_max_threads())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen[0]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="OpenMP's default team is one thread")
def test_adopted_thread_runs_on_pytorchs_thread_count() -> None:
    omp = _openmp()
    if omp is None:
        pytest.skip("no OpenMP runtime found in /proc/self/maps")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _team_in_new_thread(omp, adopt=True) == 1
        # without it, a new thread's matrix products run on OpenMP's default team (one
        # thread per core) although torch.get_num_threads() says 1 there too
        if "OMP_NUM_THREADS" not in os.environ:
            assert _team_in_new_thread(omp, adopt=False) == len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(previous)
