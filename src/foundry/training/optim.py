"""Optimizers and learning-rate schedules from `train.optimizer` / `train.scheduler`.

The schedule is a pure function `lr_factor(step, ...)` (the multiplier of the peak `lr`
used by optimizer step `step`, counted from 0), wrapped in a `LambdaLR` stepped once per
batch. A `LambdaLR`'s only state is `last_epoch` (the number of steps taken), so a
checkpoint stores that one integer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from foundry.config.schema import OptimizerConfig, SchedulerConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "warmup_steps"]


def build_optimizer(
    params: Iterable[torch.nn.Parameter], config: OptimizerConfig, *, fused: bool = False
) -> Optimizer:
    """The `torch.optim` optimizer named by `config.type` over `params`.

    `fused`: Adam / AdamW step all tensors in one kernel. The transformer loops ask for it:
    on a CPU the step over MiniLM's 22M weights takes ~15 ms fused against 0.1-2 s for the
    default per-tensor loop, as long as the forward and backward. The tabular loop keeps
    the default, which the raw-PyTorch baseline in benchmarks/train_overhead.py uses too.
    """
    lr, wd = config.lr, config.weight_decay
    params = list(params)
    if fused and config.type in ("adam", "adamw"):
        fused = all(p.dtype.is_floating_point for p in params)
    else:
        fused = False
    extra = {"fused": True} if fused else {}
    if config.type == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=wd
        )
    if config.type == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    if config.type == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=config.momentum, weight_decay=wd)
    if config.type == "adam":
        return torch.optim.Adam(params, lr=lr, betas=config.betas, weight_decay=wd, **extra)
    if config.type == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=config.betas, weight_decay=wd, **extra)
    raise AssertionError(f"unhandled optimizer type {config.type!r}")  # the schema forbids it


def warmup_steps(config: SchedulerConfig, steps_per_epoch: int) -> int:
    """Length of the linear warm-up in optimizer steps."""
    return config.warmup_steps + round(config.warmup_epochs * steps_per_epoch)


def lr_factor(
    step: int,
    config: SchedulerConfig,
    *,
    steps_per_epoch: int,
    total_steps: int,
    lr: float,
) -> float:
    """Multiplier of the peak `lr` for optimizer step `step` (0-based).

    Warm-up rises linearly: step i < W uses (i + 1) / W, so the first step is small and
    step W - 1 reaches the peak. The decay after it counts from the end of warm-up:

        constant     1
        step         gamma ** (epochs since warm-up // step_size)
        exponential  gamma ** (epochs since warm-up), smooth from step to step
        linear       1 → min_lr / lr, reached on the last step (total_steps - 1)
        cosine       half a cosine from 1 to min_lr / lr, same end point
    """
    warmup = warmup_steps(config, steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup

    t = step - warmup  # steps since the end of warm-up
    if config.type == "constant":
        return 1.0
    if config.type == "step":
        return config.gamma ** ((t // steps_per_epoch) // config.step_size)
    if config.type == "exponential":
        return config.gamma ** (t / steps_per_epoch)

    # linear / cosine: progress p goes 0 → 1 from the end of warm-up to the last step
    decay_steps = max(1, total_steps - warmup - 1)
    p = min(1.0, t / decay_steps)
    floor = config.min_lr / lr
    if config.type == "linear":
        return 1.0 - (1.0 - floor) * p
    if config.type == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))
    raise AssertionError(f"unhandled scheduler type {config.type!r}")  # the schema forbids it


def build_scheduler(
    optimizer: Optimizer, config: SchedulerConfig, steps_per_epoch: int, total_steps: int
) -> LambdaLR:
    """A `LambdaLR` following `lr_factor`; call `.step()` after every optimizer step.

    The peak lr is the optimizer's (first param group) lr at construction.
    """
    factor = partial(
        lr_factor,
        config=config,
        steps_per_epoch=max(1, steps_per_epoch),
        total_steps=total_steps,
        lr=optimizer.param_groups[0]["lr"],
    )
    return LambdaLR(optimizer, factor)
