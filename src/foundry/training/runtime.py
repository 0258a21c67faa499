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

__all__ = ["changed_keys", "cpu_copy", "precision_context", "resolve_device", "torch_settings"]


@contextmanager
def torch_settings(config: TrainConfig) -> Iterator[None]:
    """Thread count and deterministic kernels for the duration of `fit` only."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    if config.deterministic:
        # cuBLAS is only deterministic with a fixed workspace; it reads this variable
        # when it starts, so set it before the first CUDA matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


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
