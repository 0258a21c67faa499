"""The compress stage: smaller, faster variants of a trained model, each registered with
its parent and measured against it.

    from foundry.compression import compress
    result = compress("adult:3")            # CompressResult: one Variant per method

Modules: `stage` (the stage function and the comparison table), `quantize` (int8 Linear
layers), `onnx` (export, ONNX Runtime, int8), `prune` (structured and magnitude
pruning), `distill` (a student trained on a teacher's outputs). Submodules import
lazily: `foundry.predictor` loads int8 and ONNX variants through them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["CompressResult", "Variant", "compress"]

if TYPE_CHECKING:
    from foundry.compression.stage import CompressResult, Variant


def compress(ref: str, config: Any = None, **kwargs: Any) -> CompressResult:
    """Build, register and measure the compressed variants of model `ref`."""
    from foundry.compression.stage import compress as _compress

    return _compress(ref, config, **kwargs)


def __getattr__(name: str) -> Any:
    if name in ("CompressResult", "Variant"):
        from foundry.compression import stage

        return getattr(stage, name)
    raise AttributeError(name)
