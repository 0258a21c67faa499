"""What every training loop sets up the same way: threads and deterministic kernels,
the device, mixed precision, and CPU copies of weights (the tabular `fit` and the
language-model `fit_lm` share these)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import Any

import torch
from torch import Tensor

from foundry.config.schema import TrainConfig
from foundry.errors import TrainError

__all__ = [
    "changed_keys",
    "cpu_copy",
    "fast_cpu_math",
    "precision_context",
    "resolve_device",
    "torch_settings",
]


@contextmanager
def torch_settings(config: TrainConfig, *, workers: int = 0) -> Iterator[None]:
    """Thread count, deterministic kernels and `fast_cpu_math` for the duration of a
    training loop only.

    `workers`: DataLoader worker processes that decode batches during the loop (lazy
    image columns, or a streamed table's readers). With `train.num_threads` unset the
    loop then takes only the cores they leave: an intra-op thread sharing a core with a
    busy worker makes every op wait at its barrier for a descheduled thread. Measured on
    2 cores (1 decode worker, a busy machine): the small CNN of
    benchmarks/scale_images.py trained 260 images/s with 2 threads and 1,245 with 1."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    elif workers:
        torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - workers)))
    if config.deterministic:
        # cuBLAS is only deterministic with a fixed workspace; it reads this variable
        # when it starts, so set it before the first CUDA matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with fast_cpu_math():
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


@contextmanager
def fast_cpu_math() -> Iterator[None]:
    """Two CPU settings every training loop runs under, restored afterwards.

    - Denormal floats (|x| < 1.2e-38) flush to zero. LoRA's B matrices start at zero, so
      their gradients and Adam's second moments pass through denormals, which x86 CPUs
      handle on a slow path: measured on MiniLM + LoRA, the second epoch took 123 s with
      denormals and 7.8 s without (same losses to 4 digits).
    - Deterministic mode does not fill every new tensor with NaN
      (`fill_uninitialized_memory`, a debugging aid for reads of uninitialised memory,
      which none of these models do): ~0.3 s per MiniLM LoRA step on 2 cores.
    """
    import torch.utils.deterministic as deterministic

    fill = deterministic.fill_uninitialized_memory
    flushing = torch.set_flush_denormal(True)  # False where the CPU cannot
    deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        deterministic.fill_uninitialized_memory = fill
        if flushing:
            torch.set_flush_denormal(False)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainError(
            "train.device is cuda but CUDA is not available", hint="use device: auto or cpu"
        )
    return torch.device(name)


def precision_context(
    precision: str, device: torch.device
) -> tuple[Callable[[], AbstractContextManager[Any]], torch.amp.GradScaler]:
    """An autocast context factory and a grad scaler (disabled unless fp16)."""
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise TrainError("train.precision: fp16 needs CUDA; use bf16 on CPU")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = nullcontext if dtype is None else partial(torch.autocast, device.type, dtype=dtype)
    # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return autocast, scaler


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [key for key in new if old.get(key) != new[key]]


def cpu_copy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
