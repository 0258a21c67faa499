"""Building blocks shared by the architectures."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from foundry.errors import ModelError

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module: relu, gelu, tanh or sigmoid."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ModelError(
            f"unknown activation {name!r}", hint=f"use one of {', '.join(_ACTIVATIONS)}"
        ) from None


def dense_stack(
    in_dim: int,
    widths: Sequence[int],
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> tuple[nn.Sequential, int]:
    """Hidden layers `Linear → [BatchNorm1d] → activation → [Dropout]`, one per width.

    Maps `[batch, in_dim]` to `[batch, out_dim]`; returns `(stack, out_dim)`. No widths
    gives an empty (identity) stack and `out_dim == in_dim`.
    """
    layers: list[nn.Module] = []
    width = in_dim
    for out in widths:
        layers.append(nn.Linear(width, out))
        if batch_norm:
            layers.append(nn.BatchNorm1d(out))
        layers.append(_new_activation(activation))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = out
    return nn.Sequential(*layers), width


# `dense_stack`'s `activation` argument shadows the function inside it.
_new_activation = activation
