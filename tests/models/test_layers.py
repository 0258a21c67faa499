from __future__ import annotations

import pytest
import torch
from torch import nn

from foundry.errors import ModelError
from foundry.models.layers import activation, dense_stack


@pytest.mark.parametrize(
    ("name", "cls"),
    [("relu", nn.ReLU), ("gelu", nn.GELU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid)],
)
def test_activation(name, cls):
    assert isinstance(activation(name), cls)


def test_unknown_activation():
    with pytest.raises(ModelError, match="swish"):
        activation("swish")


def test_dense_stack_plain():
    stack, out_dim = dense_stack(5, [8, 3])
    assert out_dim == 3
    assert [type(m) for m in stack] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]
    assert stack(torch.randn(2, 5)).shape == (2, 3)


def test_dense_stack_all_options():
    stack, _ = dense_stack(5, [8], activation="tanh", dropout=0.5, batch_norm=True)
    assert [type(m) for m in stack] == [nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Dropout]
    assert stack[3].p == 0.5


def test_dense_stack_empty_is_identity():
    stack, out_dim = dense_stack(5, [])
    x = torch.randn(2, 5)
    assert out_dim == 5 and len(stack) == 0
    assert torch.equal(stack(x), x)
