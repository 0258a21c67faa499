"""Load a registered language model (or embedding model) for generation or serving.

    lm = foundry.lm.load("tiny-gpt")          # a LanguageModel (foundry.lm.api)
    emb = foundry.lm.load("minilm-embed:1")   # an Embedder

The package's manifest says what it is (`config.model.type`); the family that trained it
loads it (`foundry.families`: `gpt` through `foundry.lm.gpt_model`, `hf` through
`foundry.lm.hf_model`).
"""

from __future__ import annotations

from typing import Any

from foundry.errors import ConfigError, ModelError
from foundry.registry import Package, Registry

LANGUAGE_MODEL_TYPES = ("gpt", "hf")


def model_type(manifest: dict[str, Any]) -> str | None:
    """The `model.type` a package was trained with (mlp, cnn, text, gpt, hf)."""
    model = (manifest.get("config") or {}).get("model") or manifest.get("model") or {}
    kind = model.get("type") if isinstance(model, dict) else None
    return kind if isinstance(kind, str) else None


def is_language_package(manifest: dict[str, Any]) -> bool:
    """Served by the OpenAI-compatible routes (generation or embeddings) rather than
    /v1/models/{name}/predict."""
    return model_type(manifest) in LANGUAGE_MODEL_TYPES


def read_manifest(ref: str, *, registry: Registry | None = None) -> tuple[str, dict[str, Any]]:
    """(pinned ref, manifest) without reading the weights; the manifest is checked
    against the registry's record of it (ModelError if changed after registration)."""
    registry = registry or Registry()
    record = registry.resolve(ref)
    return record.ref, registry.read_manifest(record)


def load(ref: str, *, registry: Registry | None = None) -> Any:
    """The LanguageModel or Embedder of a registered `gpt` / `hf` model."""
    registry = registry or Registry()
    record = registry.resolve(ref)
    return load_package(registry.load(record.ref), record.ref)


def load_package(package: Package, ref: str) -> Any:
    """What `load` returns, for a package already read."""
    if not is_language_package(package.manifest):
        kind = model_type(package.manifest)
        raise ModelError(
            f"model {ref} is a {kind or 'tabular'} model, not a language model: use "
            f"`foundry predict` / POST /v1/models/{ref.split(':')[0]}/predict for it"
        )
    from foundry.families import family_of_package

    return family_of_package(package.manifest).load(package, ref)


def place(model: Any, device: str, dtype: str) -> None:
    """Move a loaded language model (its `model` module and `engine`) to `serve.lm`'s
    device and dtype; the packages load on the CPU in float32."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and dtype == "float32":
        return
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "serve.lm.device is cuda but PyTorch sees no CUDA device here: "
            "set serve.lm.device: cpu (or auto)"
        )
    module, engine = getattr(model, "model", None), getattr(model, "engine", None)
    if module is None or engine is None:  # an embedder: stays where it loaded
        return
    module.to(device=torch.device(device), dtype=getattr(torch, dtype))
    engine.device = torch.device(device)
