"""Which family trains a `model.type`: families register themselves, in their folder.

    @register_family("gpt")                       # trains model.type: gpt
    class GPTFamily: ...

    @register_family("neural", model_types=registered_models)   # every architecture
    class NeuralFamily: ...                       # `models.register_model` registers

A family is a subpackage of `foundry.families`; `family_for` imports them all the first
time it is asked (so there is no list of families to keep), and family modules import
their heavy libraries (torch, transformers) inside the stages, so that is cheap.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from foundry.errors import ModelError

__all__ = ["family_for", "family_of_package", "register_family", "registered_families"]

F = TypeVar("F", bound=type)

_FAMILIES: dict[str, Any] = {}
"""family name → its instance. Filled only by `register_family`."""
_TYPES: dict[str, Callable[[], Iterable[str]]] = {}
"""family name → the `model.type` values it trains (a function: the neural family's
list is whatever architectures are registered when it is asked)."""


def register_family(
    name: str, *, model_types: Callable[[], Iterable[str]] | Iterable[str] | None = None
) -> Callable[[F], F]:
    """Class decorator: one instance of the class trains `model_types` (default: `name`)."""
    types = model_types if model_types is not None else (name,)
    listed = types if callable(types) else (lambda: tuple(types))

    def decorate(cls: F) -> F:
        previous = _FAMILIES.get(name)
        # Re-importing the same module (reloads) is fine; two classes claiming a name is not.
        if previous is not None and _qualname(type(previous)) != _qualname(cls):
            raise ValueError(f"model family {name!r} is already registered by {previous!r}")
        instance = cls()
        instance.name = name
        _FAMILIES[name] = instance
        _TYPES[name] = listed
        return cls

    return decorate


def registered_families() -> dict[str, list[str]]:
    """family name → the `model.type` values it trains, every family imported."""
    _discover()
    return {name: sorted(_TYPES[name]()) for name in sorted(_FAMILIES)}


def family_for(model_type: str | None) -> Any:
    """The family that trains `model.type: <model_type>`."""
    for name, types in registered_families().items():
        if model_type in types:
            return _FAMILIES[name]
    known = sorted(t for types in registered_families().values() for t in types)
    raise ModelError(
        f"unknown model type {model_type!r} (model.type)",
        hint=f"registered types: {', '.join(known) or 'none'}",
    )


def family_of_package(manifest: dict[str, Any]) -> Any:
    """The family a package's manifest says trained it (`config.model.type`)."""
    model = (manifest.get("config") or {}).get("model") or manifest.get("model") or {}
    kind = model.get("type") if isinstance(model, dict) else None
    return family_for(kind if isinstance(kind, str) else None)


def _discover() -> None:
    """Import every family subpackage of `foundry.families` (their decorators run)."""
    package = __name__.rpartition(".")[0]  # foundry.families, which holds this module
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.ispkg:
            importlib.import_module(f"{package}.{info.name}")


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
