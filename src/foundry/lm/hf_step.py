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

__all__ = ["HFCacheIO", "HFCausalLMStep"]


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
    slots become the cache's layers, and the layers' keys and values are read back."""

    def build(self, layers: list[tuple[Tensor, Tensor]], filled: int) -> Any:
        from transformers import DynamicCache

        return DynamicCache(
            ddp_cache_data=[(k[:, :, :filled], v[:, :, :filled]) for k, v in layers]
        )

    def empty(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache()

    def read(self, cache: Any) -> list[tuple[Tensor, Tensor]]:
        return [(layer.keys, layer.values) for layer in cache.layers]
