"""A registered GPT package as a `foundry.lm.api.LanguageModel`.

    package = Registry().load("tiny-gpt:1")
    lm = load_gpt_package(package, "tiny-gpt:1")
    [c] = lm.generate([lm.render_chat([{"role": "user", "content": "Hi"}])], params)

The package holds model.safetensors (the GPT's state dict), tokenizer.json, and a
manifest whose `model` entry rebuilds the architecture (see
foundry.families.gpt.family.build_manifest).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

import foundry.crypto as crypto
from foundry.config.schema import GenerationConfig, GPTConfig, LMConfig
from foundry.errors import ModelError
from foundry.lm.api import Completion, Delta
from foundry.lm.continuous import ContinuousBatcher
from foundry.lm.data import render_chat
from foundry.lm.generate import GenerationEngine
from foundry.lm.tokenizer import BPETokenizer
from foundry.models.gpt import GPT, KVCache
from foundry.registry.package import Package

__all__ = ["GPTCacheIO", "GPTLanguageModel", "load_gpt_package"]


class GPTLanguageModel:
    """Our GPT with its tokenizer and chat template behind the `LanguageModel` protocol.

    Safe to call from several threads at once: each call has its own KV cache, and the
    model's weights are only read.
    """

    def __init__(
        self,
        model: GPT,
        tokenizer: BPETokenizer,
        *,
        ref: str,
        chat_template: str | None = None,
        generation: GenerationConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.ref = ref
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.context_length = model.context_length
        self.chat_template = chat_template
        self.generation = generation or GenerationConfig()
        """The defaults the config's `lm.generation` set."""
        self.engine = GenerationEngine(
            self.model.step, tokenizer, context_length=self.context_length, device=device
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return render_chat(messages, self.chat_template, add_generation_prompt=True)

    def generate(self, prompts: list[str], params: GenerationConfig) -> list[Completion]:
        return self.engine.generate(prompts, params)

    def stream(self, prompt: str, params: GenerationConfig) -> Iterator[Delta]:
        return self.engine.stream(prompt, params)

    def continuous_batcher(self, **settings: Any) -> ContinuousBatcher:
        """A continuous-batching engine over this model (`foundry.lm.continuous`);
        `settings` are ContinuousBatcher's keyword arguments."""
        return ContinuousBatcher(self.engine, GPTCacheIO(), **settings)


class GPTCacheIO:
    """`foundry.lm.continuous.CacheIO` for our GPT's `KVCache`."""

    def build(self, layers: list[tuple[Tensor, Tensor]], filled: int) -> KVCache:
        return KVCache.from_tensors(layers, filled)

    def empty(self) -> KVCache:
        return KVCache.from_tensors([], 0)

    def read(self, cache: KVCache) -> list[tuple[Tensor, Tensor]]:
        return cache.tensors()


def load_gpt_package(
    package: Package, ref: str, *, device: str | torch.device = "cpu"
) -> GPTLanguageModel:
    """Rebuild the GPT a package describes, load its weights and tokenizer. An int8
    variant (`compression.method: int8`, from `foundry compress`) gets its Linear layers
    swapped for `Int8Linear` first, so its int8 weights and scales load into them."""
    manifest = package.manifest
    try:
        spec: dict[str, Any] = manifest["model"]
        config = GPTConfig.model_validate(spec["config"])
        vocab_size = int(spec["vocab_size"])
        lm = LMConfig.model_validate(manifest.get("lm", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(
            f"{package.path / 'foundry.json'}: not a GPT manifest (model.config, "
            f"model.vocab_size): {exc}"
        ) from exc
    tokenizer_file = package.path / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ModelError(f"model package {package.path} is missing tokenizer.json")
    tokenizer = BPETokenizer.from_json(
        crypto.read_text(tokenizer_file), source=str(tokenizer_file)
    )
    model = GPT(config, vocab_size)
    if (manifest.get("compression") or {}).get("method") == "int8":
        # an int8 variant (foundry compress): its Linear layers hold int8 weights and
        # scales; the tied head stays the embedding (quantize_linears skips it)
        from foundry.compression.quantize import quantize_linears

        quantize_linears(model)
    try:
        model.load_package_weights(package.weights)
    except RuntimeError as exc:
        raise ModelError(
            f"{package.path / 'model.safetensors'} does not fit the GPT in its manifest: {exc}"
        ) from exc
    return GPTLanguageModel(
        model,
        tokenizer,
        ref=ref,
        chat_template=lm.chat_template,
        generation=lm.generation,
        device=device,
    )
