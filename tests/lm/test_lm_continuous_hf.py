"""Hugging Face causal LMs (Llama, GPT-2; with a LoRA adapter, merged or not) through
the continuous-batching engine: greedy tokens equal transformers' own `generate`, and a
row's tokens are the same alone or batched."""

from __future__ import annotations

import threading

import pytest
import torch
from tests.lm.hf_tiny import gpt2_dir, llama_dir

from foundry.config.schema import GenerationConfig
from foundry.lm.continuous import ContinuousBatcher
from foundry.lm.hf_model import HFLanguageModel
from foundry.models.hf import HFTokenizer, load_tokenizer

transformers = pytest.importorskip("transformers")

PROMPTS = [[5 + i, 40 + 3 * i, 7, 90 + i][: 2 + i % 3] for i in range(9)]


@pytest.fixture(autouse=True)
def one_thread():  # small tensors: one thread is fastest, and steady on shared cores
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batcher(directory, *, lora: bool = False) -> tuple[ContinuousBatcher, torch.nn.Module]:
    model = transformers.AutoModelForCausalLM.from_pretrained(str(directory)).eval()
    if lora:  # an adapter left unmerged: the engine drives the PEFT wrapper itself
        peft = pytest.importorskip("peft")
        config = peft.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
        torch.manual_seed(1)
        model = peft.get_peft_model(model, config).eval()
    tokenizer = HFTokenizer(load_tokenizer(str(directory)))
    lm = HFLanguageModel("tiny:1", model, tokenizer, {"context_length": 64})
    batcher = lm.continuous_batcher(max_concurrent=12, prefill_chunk=3, max_batch_tokens=8)
    batcher.start()
    return batcher, model


def _tokens(
    batcher: ContinuousBatcher, prompts: list[list[int]], params: GenerationConfig
) -> list[list[int]]:
    """Every prompt submitted at once (as ids); each row's generated ids."""
    ended = threading.Semaphore(0)
    handles = [batcher.submit(p, params, lambda d: d is None and ended.release()) for p in prompts]
    for _ in handles:
        assert ended.acquire(timeout=120)
    return [h.row.tokens for h in handles]


@pytest.mark.parametrize(
    ("make", "lora"), [(llama_dir, False), (gpt2_dir, False), (llama_dir, True)]
)
def test_hf_models_batch_to_their_own_greedy_tokens(tmp_path, make, lora):
    batcher, model = _batcher(make(tmp_path), lora=lora)
    try:
        greedy = GenerationConfig(max_tokens=8, temperature=0)
        got = _tokens(batcher, PROMPTS, greedy)
        sampled = GenerationConfig(max_tokens=8, temperature=1.0, seed=4)
        alone = [_tokens(batcher, [p], sampled)[0] for p in PROMPTS]
        together = _tokens(batcher, PROMPTS, sampled)
    finally:
        batcher.close()
    stop = set(batcher.engine.stop_ids)
    for prompt, tokens in zip(PROMPTS, got, strict=True):
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=8, do_sample=False, pad_token_id=0
        )
        expected = out[0, len(prompt) :].tolist()
        cut = next((i for i, t in enumerate(expected) if t in stop), len(expected))
        assert tokens == expected[:cut]
    assert together == alone
