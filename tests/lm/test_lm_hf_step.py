"""Our engine drives a Hugging Face causal LM and decodes what `model.generate` does."""

from __future__ import annotations

import pytest
import torch

from foundry.config.schema import GenerationConfig
from foundry.lm.generate import GenerationEngine
from foundry.lm.hf_step import HFCausalLMStep

transformers = pytest.importorskip("transformers")

VOCAB, PAD = 300, 0


@pytest.fixture(scope="module")
def gpt2():
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=4,
        vocab_size=VOCAB,
        n_positions=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=PAD,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def _hf_greedy(model, prompts: list[list[int]], n: int) -> list[list[int]]:
    """transformers' own greedy decoding, left-padded batch, EOS disabled."""
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=n,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=PAD,
    )
    return out[:, width:].tolist()


def test_greedy_tokens_match_model_generate(gpt2):
    engine = GenerationEngine(HFCausalLMStep(gpt2), context_length=128, pad_id=PAD, stop_ids=[])
    params = GenerationConfig(temperature=0, max_tokens=24)
    prompts = [[5, 17, 42, 99, 7], [11, 12], [250, 3, 3]]
    for prompt in prompts:
        assert engine.generate_ids([prompt], params) == _hf_greedy(gpt2, [prompt], 24)
    # a left-padded batch: the same tokens as transformers' batch, and as each alone
    batched = engine.generate_ids(prompts, params)
    assert batched == _hf_greedy(gpt2, prompts, 24)
    assert batched == [engine.generate_ids([p], params)[0] for p in prompts]


def test_recompute_path_matches_the_cache(gpt2):
    params = GenerationConfig(temperature=0, max_tokens=10)
    cached = GenerationEngine(HFCausalLMStep(gpt2), context_length=128, pad_id=PAD, stop_ids=[])
    full = GenerationEngine(
        HFCausalLMStep(gpt2), context_length=128, pad_id=PAD, stop_ids=[], use_cache=False
    )
    prompts = [[5, 6, 7], [8]]
    assert cached.generate_ids(prompts, params) == full.generate_ids(prompts, params)


def test_step_returns_last_position_float32_logits_and_a_cache(gpt2):
    step = HFCausalLMStep(gpt2.to(torch.bfloat16))
    try:
        logits, cache = step(
            torch.tensor([[5, 6, 7]]),
            cache=None,
            attention_mask=torch.ones(1, 3, dtype=torch.int64),
            position_ids=torch.arange(3)[None],
        )
    finally:
        gpt2.to(torch.float32)
    assert logits.shape == (1, 1, VOCAB) and logits.dtype == torch.float32
    assert cache is not None and cache.get_seq_length() == 3
