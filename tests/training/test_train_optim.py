from __future__ import annotations

import math

import pytest
import torch

from foundry.config.schema import OptimizerConfig, SchedulerConfig
from foundry.training import build_optimizer, build_scheduler
from foundry.training.optim import lr_factor, warmup_steps

LR = 0.1
STEPS_PER_EPOCH = 10
TOTAL = 100  # 10 epochs


def factor(step: int, **config) -> float:
    return lr_factor(
        step, SchedulerConfig(**config), steps_per_epoch=STEPS_PER_EPOCH, total_steps=TOTAL, lr=LR
    )


def test_warmup_rises_linearly_to_the_peak():
    # 5 steps + half an epoch (5 steps) = 10 warm-up steps
    assert warmup_steps(SchedulerConfig(warmup_steps=5, warmup_epochs=0.5), 10) == 10
    config = {"warmup_steps": 5, "warmup_epochs": 0.5}
    assert factor(0, **config) == pytest.approx(0.1)  # small, not zero: step 0 still learns
    assert factor(4, **config) == pytest.approx(0.5)
    assert factor(9, **config) == pytest.approx(1.0)
    assert factor(10, **config) == 1.0
    assert factor(99, **config) == 1.0  # constant after warm-up


def test_constant_without_warmup():
    assert [factor(s) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]


def test_step_decay_counts_epochs_after_warmup():
    config = {"type": "step", "step_size": 2, "gamma": 0.5}
    assert factor(19, **config) == 1.0  # epochs 0-1
    assert factor(20, **config) == 0.5  # epoch 2
    assert factor(45, **config) == 0.25  # epoch 4
    warm = {**config, "warmup_steps": 10}
    assert factor(29, **warm) == 1.0  # 19 steps after warm-up: still the first 2 epochs
    assert factor(30, **warm) == 0.5


def test_exponential_decays_per_epoch_smoothly():
    config = {"type": "exponential", "gamma": 0.5}
    assert factor(0, **config) == 1.0
    assert factor(5, **config) == pytest.approx(0.5**0.5)
    assert factor(10, **config) == pytest.approx(0.5)
    assert factor(30, **config) == pytest.approx(0.125)


def test_linear_reaches_min_lr_on_the_last_step():
    config = {"type": "linear", "min_lr": 0.01, "warmup_steps": 10}
    assert factor(10, **config) == 1.0
    assert factor(99, **config) == pytest.approx(0.1)  # min_lr / lr
    midpoint = 10 + (99 - 10) / 2
    assert factor(int(midpoint), **config) == pytest.approx(1 - 0.9 * (44 / 89))


def test_cosine_reaches_min_lr_on_the_last_step():
    config = {"type": "cosine", "min_lr": 0.0}
    assert factor(0, **config) == 1.0
    assert factor(99, **config) == pytest.approx(0.0, abs=1e-12)
    mid = factor(round(99 / 2), **config)
    assert mid == pytest.approx(0.5 * (1 + math.cos(math.pi * 50 / 99)))
    # monotone decreasing
    values = [factor(s, **config) for s in range(TOTAL)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_scheduler_applies_lr_factor_per_step():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([param], OptimizerConfig(type="sgd", lr=LR))
    config = SchedulerConfig(type="cosine", warmup_steps=3, min_lr=0.001)
    scheduler = build_scheduler(optimizer, config, STEPS_PER_EPOCH, TOTAL)
    seen = []
    for _ in range(TOTAL):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [
        LR * lr_factor(s, config, steps_per_epoch=STEPS_PER_EPOCH, total_steps=TOTAL, lr=LR)
        for s in range(TOTAL)
    ]
    assert seen == pytest.approx(expected)
    assert seen[0] == pytest.approx(LR / 3)
    assert seen[-1] == pytest.approx(0.001)
    assert scheduler.last_epoch == TOTAL


@pytest.mark.parametrize(
    ("config", "lr"),
    [
        (OptimizerConfig(type="sgd", lr=0.1, momentum=0.9, nesterov=True), 0.1),
        (OptimizerConfig(type="adagrad", lr=0.3), 0.3),
        (OptimizerConfig(type="rmsprop", lr=0.01, momentum=0.5), 0.01),
        (OptimizerConfig(type="adam", lr=0.05, betas=(0.8, 0.99)), 0.05),
        (OptimizerConfig(type="adamw", lr=0.05, weight_decay=0.01), 0.05),
    ],
    ids=lambda v: getattr(v, "type", ""),
)
def test_every_optimizer_reduces_a_regression_loss(config, lr):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([1.0, -1.0, 2.0])
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = build_optimizer(model.parameters(), config)
    assert optimizer.param_groups[0]["lr"] == lr

    def loss() -> torch.Tensor:
        return torch.nn.functional.mse_loss(model(x)[:, 0], y)

    before = loss().item()
    for _ in range(60):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < 0.2 * before


def test_optimizer_hyperparameters_are_passed_through():
    params = [torch.nn.Parameter(torch.zeros(1))]
    sgd = build_optimizer(params, OptimizerConfig(type="sgd", momentum=0.9, nesterov=True))
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[0]["nesterov"]
    adamw = build_optimizer(
        params, OptimizerConfig(type="adamw", weight_decay=0.1, betas=(0.5, 0.6))
    )
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["weight_decay"] == 0.1
    assert tuple(adamw.param_groups[0]["betas"]) == (0.5, 0.6)
    rms = build_optimizer(params, OptimizerConfig(type="rmsprop", momentum=0.3))
    assert isinstance(rms, torch.optim.RMSprop) and rms.param_groups[0]["momentum"] == 0.3


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_fused_adam_steps_like_the_default(kind):
    torch.manual_seed(0)
    start = torch.randn(50, 20)
    grads = [torch.randn(50, 20) for _ in range(5)]
    config = OptimizerConfig(type=kind, lr=0.01, weight_decay=0.01)
    results = []
    for fused in (False, True):
        param = torch.nn.Parameter(start.clone())
        optimizer = build_optimizer([param], config, fused=fused)
        assert bool(optimizer.param_groups[0]["fused"]) is fused
        for g in grads:
            param.grad = g.clone()
            optimizer.step()
        results.append(param.detach())
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)
    sgd = build_optimizer([torch.nn.Parameter(start)], OptimizerConfig(type="sgd"), fused=True)
    assert isinstance(sgd, torch.optim.SGD)  # no fused kernel asked of what has none


def test_training_flushes_denormals_and_restores_them_after():
    from foundry.config.schema import TrainConfig
    from foundry.training.runtime import torch_settings

    tiny = torch.tensor([1e-39])  # a float32 denormal
    assert (tiny * 1.0).item() != 0.0
    with torch_settings(TrainConfig()):
        if torch.set_flush_denormal(True):  # the CPU supports flushing
            assert (tiny * 1.0).item() == 0.0
    assert (tiny * 1.0).item() != 0.0
