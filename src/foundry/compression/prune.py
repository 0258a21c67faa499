"""Pruning: structured (really smaller layers) and unstructured (zeros in the weights).

    new_config, smaller = prune_model(model, config.model, 0.5, schema=..., n_outputs=...)
    stats = magnitude_prune(model, 0.5)     # {"sparsity": 0.5, "parameters": ...}

Structured pruning removes whole hidden units of `mlp` models and whole conv filters and
dense units of `cnn` models: the result is an ordinary model of the same type built from
a config with smaller widths, so it saves and loads like any other and is faster on
dense kernels. A short fine-tune afterwards (the compress stage runs `training.fit`)
recovers most of the accuracy lost.

Unstructured magnitude pruning only zeroes weights: shapes stay, so dense CPU/GPU kernels
run exactly as fast; only a compressed copy of the file gets smaller.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import Tensor, nn

from foundry.compression.quantize import Int8Linear
from foundry.data.schema import InputSchema
from foundry.errors import ModelError
from foundry.models import CNN, MLP, build_model

__all__ = ["kept_width", "magnitude_prune", "prune_model"]

_PRUNABLE = {"mlp": MLP, "cnn": CNN}
"""Model types `prune_model` knows the layer structure of."""
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def kept_width(width: int, amount: float) -> int:
    """Units left of a layer of `width` after pruning `amount` of them: round((1 - amount)
    * width), at least 1."""
    return max(1, round((1.0 - amount) * width))


def prune_model(
    model: nn.Module,
    model_config: Any,
    amount: float,
    *,
    schema: InputSchema,
    n_outputs: int,
) -> tuple[Any, nn.Module]:
    """Remove the `amount` fraction (0 <= amount < 1) of least important units of every
    hidden layer; returns `(new_model_config, new_model)`.

    `mlp`: the hidden units of each `layers` entry. `cnn`: the filters of each `conv`
    block and the units of each dense `layers` entry. Each layer keeps
    `kept_width(width, amount)` units, those with the largest importance: the L2 norm of
    the unit's incoming weights (from the units the previous layer kept), times
    |gamma| / sqrt(running_var + eps) when the layer has BatchNorm (the norm of the
    incoming weights with BatchNorm folded in). Kept units stay in their order; their
    weights, biases and BatchNorm entries are copied, and the next layer keeps the
    matching input columns. Inputs (numbers, category embeddings) and the output head's
    rows are unchanged.

    `new_model` is `build_model(new_model_config, schema, n_outputs)` holding those
    weights, on the original's device and in its train/eval mode. Units whose output is
    exactly zero contribute nothing, so pruning only those leaves outputs unchanged.
    Raises `ModelError` for other model types (text, gpt, hf).
    """
    kind = getattr(model_config, "type", None)
    expected = _PRUNABLE.get(kind) if isinstance(kind, str) else None
    if expected is None:
        raise ModelError(
            f"structured pruning does not support model type {kind!r}",
            hint=f"it supports {', '.join(map(repr, _PRUNABLE))}; quantize or distill "
            "other models instead",
        )
    if not isinstance(model, expected):
        raise ModelError(
            f"model.type is {kind!r} but the model is a {type(model).__name__}, "
            f"not a {expected.__name__}"
        )
    if any(isinstance(m, Int8Linear) for m in model.modules()):
        raise ModelError(
            "cannot prune a model whose Linear layers are already int8",
            hint="prune the float model, then quantize the pruned one",
        )
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"The 'amount' parameter must be in [0, 1). Got {amount} instead.")

    device = next(model.parameters()).device
    # Sliced on the CPU (index tensors and all), moved back once at the end.
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    if isinstance(model, MLP):
        widths = _prune_chain(state, model.body, "body", nn.Linear, amount, None)
        _slice_columns(state, "head", _last(widths, None))
        new_config = _revalidate(model_config, layers=[len(k) for k in widths])
    else:
        assert isinstance(model, CNN)
        filters = _prune_chain(state, model.features, "features", nn.Conv2d, amount, None)
        columns = _image_columns(model, _last(filters, None))
        widths = _prune_chain(state, model.body, "body", nn.Linear, amount, columns)
        _slice_columns(state, "head", _last(widths, columns))
        conv = [
            block.model_copy(update={"filters": len(keep)})
            for block, keep in zip(model_config.conv, filters, strict=True)
        ]
        new_config = _revalidate(model_config, conv=conv, layers=[len(k) for k in widths])

    # The new model's random initialisation is overwritten below: keep the caller's RNG
    # where it was, so pruning does not shift later seeded work.
    with torch.random.fork_rng(devices=[]):
        pruned = build_model(new_config, schema, n_outputs)
    pruned.load_state_dict(state)  # strict: every tensor of the new model is accounted for
    return new_config, pruned.to(device).train(model.training)


# ------------------------------------------------------------------ structured helpers


def _prune_chain(
    state: dict[str, Tensor],
    seq: nn.Sequential,
    prefix: str,
    layer_type: type[nn.Module],
    amount: float,
    in_columns: Tensor | None,
) -> list[Tensor]:
    """Slice, in `state`, each `layer_type` of `seq` (and the BatchNorm right after it) to
    its most important units; the first layer keeps only `in_columns` of its input (None:
    all). Returns the kept unit indices of each layer, ascending."""
    modules = list(seq.named_children())
    kept: list[Tensor] = []
    columns = in_columns
    for i, (name, module) in enumerate(modules):
        if not isinstance(module, layer_type):
            continue
        key = f"{prefix}.{name}"
        _slice_columns(state, key, columns)
        weight = state[f"{key}.weight"]  # [out, in, *kernel]
        importance = weight.flatten(1).norm(dim=1)  # [out]
        bn = None
        if i + 1 < len(modules) and isinstance(modules[i + 1][1], _BATCH_NORMS):
            bn_name, bn = modules[i + 1]
            bn_key = f"{prefix}.{bn_name}"
            gamma = state.get(f"{bn_key}.weight", torch.ones_like(importance))
            var = state.get(f"{bn_key}.running_var", torch.ones_like(importance))
            importance = importance * gamma.abs() / (var + bn.eps).sqrt()
        k = kept_width(weight.shape[0], amount)
        # stable sort: among equal importances the earlier unit wins, deterministically
        order = torch.sort(importance, descending=True, stable=True).indices
        keep = order[:k].sort().values
        _slice_rows(state, key, keep)
        if bn is not None:
            _slice_rows(state, bn_key, keep)
        kept.append(keep)
        columns = keep
    return kept


def _image_columns(model: CNN, channels: Tensor | None) -> Tensor | None:
    """Input columns of the first dense layer after keeping conv `channels` of the last
    block: [B, C, H, W] → pooled [B, C] or flattened [B, C*H*W] (channel-major), then the
    tabular features, all kept."""
    if channels is None:
        return None
    first = model.body[0] if len(model.body) else model.head
    assert isinstance(first, nn.Linear)
    image_dim = first.in_features - model.tabular.out_dim
    old_channels = model.features[_last_index(model.features, nn.Conv2d)].out_channels
    per_channel = 1 if model.global_pool else image_dim // old_channels  # H' * W'
    image = (channels[:, None] * per_channel + torch.arange(per_channel)).flatten()
    tabular = image_dim + torch.arange(model.tabular.out_dim)
    return torch.cat([image, tabular])


def _slice_rows(state: dict[str, Tensor], key: str, keep: Tensor) -> None:
    """Keep output units `keep` of the layer at `key`: every per-unit tensor (weight rows,
    bias, BatchNorm scale/shift/statistics); counters such as num_batches_tracked stay."""
    for name in ("weight", "bias", "running_mean", "running_var"):
        full = f"{key}.{name}"
        if full in state:
            state[full] = state[full][keep].contiguous()


def _slice_columns(state: dict[str, Tensor], key: str, columns: Tensor | None) -> None:
    if columns is not None:
        state[f"{key}.weight"] = state[f"{key}.weight"][:, columns].contiguous()


def _last(kept: list[Tensor], default: Tensor | None) -> Tensor | None:
    return kept[-1] if kept else default


def _last_index(seq: nn.Sequential, layer_type: type[nn.Module]) -> int:
    return max(i for i, m in enumerate(seq) if isinstance(m, layer_type))


def _revalidate(config: Any, **changes: Any) -> Any:
    """`config` with `changes`, validated again by its pydantic class."""
    return type(config).model_validate({**config.model_dump(), **changes})


# ---------------------------------------------------------------------- unstructured


@torch.no_grad()
def magnitude_prune(model: nn.Module, amount: float) -> dict[str, float]:
    """Zero the `amount` fraction of smallest-magnitude weights across all Linear and Conv
    weights of `model` together (global unstructured pruning), in place.

    The zeros are written into the plain weight tensors (no masks or hooks stay behind),
    so the model saves and loads as before. This does NOT speed up inference: dense CPU
    and GPU kernels multiply zeros as fast as any other number; it only makes a
    compressed copy of the file smaller. Biases, BatchNorm, embeddings, attention's packed
    `in_proj_weight` and weights tied to another module are left alone.

    Returns {"sparsity": fraction of zeros among those weights (zeros already there
    count), "parameters": how many weights that is}.
    """
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"The 'amount' parameter must be in [0, 1]. Got {amount} instead.")
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    weights = [
        m.weight
        for m in model.modules()
        if isinstance(m, (nn.Linear, *_CONVS))
        and isinstance(m.weight, Tensor)
        and uses[id(m.weight)] == 1
    ]
    total = sum(w.numel() for w in weights)
    if total == 0:
        return {"sparsity": 0.0, "parameters": 0}
    scores = torch.cat([w.detach().abs().flatten().float().cpu() for w in weights])
    n_zero = round(amount * total)
    if n_zero:
        # topk picks exactly n_zero entries even when magnitudes tie at the threshold.
        mask = torch.ones(total, dtype=torch.bool)
        mask[torch.topk(scores, n_zero, largest=False).indices] = False
        for w, m in zip(weights, mask.split([w.numel() for w in weights]), strict=True):
            w.mul_(m.view_as(w).to(device=w.device, dtype=w.dtype))
    zeros = sum(int((w == 0).sum()) for w in weights)
    return {"sparsity": zeros / total, "parameters": total}
