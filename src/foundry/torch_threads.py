"""PyTorch's thread count in threads other than the one that set it.

    executor = ThreadPoolExecutor(1, initializer=adopt_torch_threads)
    threading.Thread(target=lambda: (adopt_torch_threads(), run()))

`torch.set_num_threads(n)` sets PyTorch's own count (what `torch.get_num_threads()`
reports everywhere) and OpenMP's for the calling thread only: OpenMP keeps that setting
per thread. PyTorch applies its count to a new thread lazily, in its first parallel loop;
a matrix product that comes first goes to MKL, which runs it on OpenMP's default team of
one thread per core. `benchmarks/torch_threads.py` measured a [4, 128] x [128, 2048]
product on such a thread at twice the process CPU of an adopted thread, and 2.2-5.3x
the wall time beside one busy process (docs/BENCHMARKS.md). Every thread that runs a
model (a served model's batching thread, a language model's engine and generation
threads) calls this once when it starts, so it does not depend on which operation
happens to run first.
"""

from __future__ import annotations

__all__ = ["adopt_torch_threads"]


def adopt_torch_threads() -> None:
    """Apply PyTorch's thread count (`torch.get_num_threads()`) to the calling thread."""
    import torch

    torch.set_num_threads(torch.get_num_threads())
