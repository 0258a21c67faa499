"""Tiny data and models for the training tests: a small MLP on Encoded["numeric"].

(Not a conftest.py: tests import these by name, and tests/conftest.py exists.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from foundry.config.schema import TrainConfig
from foundry.data.schema import TaskInfo


class TinyMLP(nn.Module):
    """Encoded dict → [batch, n_outputs]; dropout exercises the global RNG."""

    def __init__(self, n_in: int = 4, n_outputs: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, n_outputs)
        )

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.net(inputs["numeric"])


def make_classification(n: int, seed: int, n_classes: int = 2) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    score = x[:, 0] + 0.5 * x[:, 1]
    if n_classes == 2:
        y = (score > 0).long()
    else:
        y = torch.bucketize(score, torch.tensor([-0.5, 0.5])).clamp(max=n_classes - 1)
    return {"numeric": x, "target": y}


def make_regression(n: int, seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.1 * torch.randn(n, generator=g)
    return {"numeric": x, "target": y}


def small_config(**overrides) -> TrainConfig:
    """Few epochs, small batches, one thread (the test machine is shared)."""
    values = {"epochs": 4, "batch_size": 32, "num_threads": 1, "seed": 0, "optimizer": {"lr": 0.02}}
    values.update(overrides)
    return TrainConfig(**values)


BINARY = TaskInfo(target="y", task="binary", classes=["no", "yes"])
MULTICLASS = TaskInfo(target="y", task="multiclass", classes=["a", "b", "c"])
REGRESSION = TaskInfo(target="y", task="regression", target_mean=10.0, target_std=2.0)


def new_model(seed: int = 0, **kwargs) -> TinyMLP:
    torch.manual_seed(seed)
    return TinyMLP(**kwargs)
