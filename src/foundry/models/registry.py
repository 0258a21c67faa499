"""Model registry: architectures register themselves with a decorator, in one place.

    @register_model("mlp")
    class MLP(nn.Module):
        def __init__(self, config: MLPConfig, schema: InputSchema, n_outputs: int): ...

`build_model(config, schema, n_outputs)` picks the class by `config.type`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from foundry.data.schema import InputSchema
from foundry.errors import ModelError

M = TypeVar("M", bound=type[nn.Module])

_MODELS: dict[str, type[nn.Module]] = {}
"""`config.type` → model class. Filled only by `register_model`."""


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator registering an `nn.Module` under `name` (the config's `type`)."""

    def decorate(cls: M) -> M:
        previous = _MODELS.get(name)
        # Re-importing the same module (reloads) is fine; two classes claiming a name is not.
        if previous is not None and _qualname(previous) != _qualname(cls):
            raise ValueError(f"model type {name!r} is already registered by {_qualname(previous)}")
        _MODELS[name] = cls
        return cls

    return decorate


def registered_models() -> list[str]:
    """Names of every registered model type, sorted."""
    return sorted(_MODELS)


def build_model(config: Any, schema: InputSchema, n_outputs: int) -> nn.Module:
    """Instantiate the model registered as `config.type` for `schema` inputs.

    `n_outputs` is 1 for regression and binary-with-bce, else the number of classes;
    the model maps an `Encoded` batch to `[batch, n_outputs]` logits or values.
    """
    name = getattr(config, "type", None)
    cls = _MODELS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ModelError(
            f"unknown model type {name!r} (model.type)",
            hint=f"registered types: {', '.join(registered_models()) or 'none'}",
        )
    if n_outputs < 1:
        raise ModelError(f"a model needs at least one output, got n_outputs={n_outputs}")
    return cls(config, schema, n_outputs)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
