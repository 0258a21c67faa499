"""The generation step for a Hugging Face causal LM, so our engine drives GPT-2, Llama,
Qwen... the same way it drives our own GPT.

    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    engine = GenerationEngine(HFCausalLMStep(model), tokenizer, context_length=...)

`HFCausalLMStep(model)(input_ids, cache=, attention_mask=, position_ids=, use_cache=)`
follows `foundry.lm.generate.StepFn`: the cache is the model's own `past_key_values`
(a transformers `Cache` object, created by the model on the first call), and only the
last position's logits are computed (`logits_to_keep=1`), as `model.generate` does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["HFCacheIO", "HFCausalLMStep", "batch_invariant_attention"]

GROUPED_ATTENTION = "foundry_grouped"
"""transformers attention implementation name of `_grouped_attention`."""
GROUPED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
"""Models whose eager attention is Llama's (`repeat_kv`, scale, additive mask, float32
softmax), so `_grouped_attention` computes the same thing."""


class HFCausalLMStep:
    """Adapts a transformers causal LM (any `*ForCausalLM`) to the engine's step contract.

    The model should be in eval mode; the engine calls the step under `torch.no_grad()`.
    Logits come back in float32 whatever the model's dtype, so sampling is the same for
    bf16 and fp32 weights.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(
        self,
        input_ids: Tensor,
        *,
        cache: Any,
        attention_mask: Tensor | None,
        position_ids: Tensor,
        use_cache: bool = True,
    ) -> tuple[Tensor, Any]:
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache if use_cache else None,
            use_cache=use_cache,
            logits_to_keep=1,  # the engine reads the last position only
        )
        logits = out.logits.float() if out.logits.dtype != torch.float32 else out.logits
        return logits, (out.past_key_values if use_cache else None)


class HFCacheIO:
    """`foundry.lm.continuous.CacheIO` for transformers' `DynamicCache`: the engine's
    slots become the cache's layers (`_SlotLayer`: written in place, not copied), and the
    layers' keys and values are read back."""

    def build(self, layers: list[tuple[Tensor, Tensor]], filled: int) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache()
        cache.layers = [_slot_layer(k, v, filled) for k, v in layers]
        return cache

    def empty(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache()

    def read(self, cache: Any) -> list[tuple[Tensor, Tensor]]:
        out = []
        for layer in cache.layers:
            n = layer.get_seq_length()
            out.append((layer.keys[:, :, :n], layer.values[:, :, :n]))
        return out


_SLOT_LAYER: type | None = None


def _slot_layer(keys: Tensor, values: Tensor, filled: int) -> Any:
    """A transformers cache layer over the engine's slot buffers [B, H, W, Dh] whose first
    `filled` positions are the tokens seen. transformers' own `DynamicLayer` copies them
    once when the cache is built and again per step (`torch.cat` with the new token):
    two copies of the whole cache per layer per decode step, ~17% of a 32-row step of a
    4-layer Llama here. This one writes the step's tokens into the buffer's spare columns
    in place (the engine reads them back from there, as with foundry's GPT `KVCache`);
    with no room left (a long prompt's next chunk) it concatenates, as DynamicLayer does."""
    global _SLOT_LAYER
    if _SLOT_LAYER is None:  # defined once transformers is imported (it is optional here)
        from transformers.cache_utils import DynamicLayer

        class SlotLayer(DynamicLayer):
            filled = 0

            def update(
                self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any
            ) -> tuple[Tensor, Tensor]:
                n, t = self.filled, key_states.shape[-2]
                if n + t > self.keys.shape[-2]:
                    self.keys = torch.cat([self.keys[:, :, :n], key_states], dim=-2)
                    self.values = torch.cat([self.values[:, :, :n], value_states], dim=-2)
                else:
                    self.keys[:, :, n : n + t] = key_states
                    self.values[:, :, n : n + t] = value_states
                self.filled = n + t
                return self.keys[:, :, : n + t], self.values[:, :, : n + t]

            def get_seq_length(self) -> int:
                return self.filled

        _SLOT_LAYER = SlotLayer
    layer = _SLOT_LAYER()
    layer.keys, layer.values, layer.filled = keys, values, filled
    layer.is_initialized, layer.device = True, keys.device
    return layer


def batch_invariant_attention(model: nn.Module) -> None:
    """Switch `model` to attention whose result for a row does not depend on the batch:
    plain matmul + softmax (`eager`), as the continuous-batching engine needs (the SDPA
    kernel on CPU splits its work by batch size; see foundry.lm.continuous). For models
    with grouped key/value heads of Llama's kind, the grouped variant below."""
    if not hasattr(model, "set_attn_implementation"):
        return
    config = model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if config.model_type in GROUPED_MODEL_TYPES and kv_heads < heads:
        from transformers import AttentionInterface, AttentionMaskInterface
        from transformers.masking_utils import eager_mask

        AttentionInterface.register(GROUPED_ATTENTION, _grouped_attention)
        AttentionMaskInterface.register(GROUPED_ATTENTION, eager_mask)
        model.set_attn_implementation(GROUPED_ATTENTION)
    else:
        model.set_attn_implementation("eager")


def _grouped_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """Llama's eager attention without `repeat_kv`: the query heads that share a key/value
    head are stacked as rows of one matmul against it, instead of copying every key and
    value head `heads / kv_heads` times (the whole cache, twice per layer per step: ~20%
    of a 32-row decode step of a 4-layer Llama with 2 key/value heads for 4 here).

    query [B, H, t, Dh]; key, value [B, Hkv, T, Dh]; attention_mask additive [B, 1, t, T]
    → ([B, t, H, Dh], weights [B, H, t, T]). Query head h reads key/value head
    h // (H / Hkv), as after repeat_kv."""
    b, heads, t, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    q = query.reshape(b, kv_heads, group * t, dim)  # rows: (head in group, position)
    scores = (torch.matmul(q, key.transpose(2, 3)) * scaling).view(b, heads, t, -1)
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights.view(b, kv_heads, group * t, -1), value)
    return out.view(b, heads, t, dim).transpose(1, 2).contiguous(), weights
