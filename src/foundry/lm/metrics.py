"""Held-out metrics of a language model, and the baseline they are read against.

Perplexity alone says little (it depends on the tokenizer); next to the perplexity of
a unigram model (each token's frequency in the training split, nothing else) on the very
same held-out tokens, it says how much the model learned from context.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from foundry.lm.data import TokenData
from foundry.lm.train import evaluate_tokens, exp_loss

__all__ = ["lm_metrics", "unigram_perplexity"]


def unigram_perplexity(train: TokenData, heldout: TokenData, vocab_size: int) -> float:
    """Perplexity on `heldout`'s targets of p(token) = (count in train targets + 1) /
    (train targets + vocab_size): add-one smoothing, so unseen tokens are not infinite."""
    # counts, not the tokens themselves: token shards (lm.token_shards) are read a chunk
    # at a time rather than gathered whole
    counts = train.target_counts(vocab_size)
    log_p = torch.log((counts + 1) / (counts.sum() + vocab_size))
    held = heldout.target_counts(vocab_size)
    if held.sum() == 0:
        return float("nan")
    return math.exp(-(held * log_p).sum().item() / held.sum().item())


def lm_metrics(
    model: nn.Module,
    splits: dict[str, TokenData],
    *,
    evaluate_split: str,
    vocab_size: int,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Loss and perplexity of every non-empty held-out split (`val_loss`, `test_perplexity`
    ...), plus for `evaluate_split`: `loss`, `perplexity`, `unigram_perplexity` (baseline
    from `splits["train"]`), `tokens` and `split` (its name). An empty `evaluate_split`
    falls back to val, then train; `split` says which was used."""
    metrics: dict[str, Any] = {}
    for name in ("val", "test"):
        data = splits.get(name)
        if data is not None and data.n_targets:
            loss, _ = evaluate_tokens(model, data, batch_size=batch_size)
            metrics[f"{name}_loss"] = loss
            metrics[f"{name}_perplexity"] = exp_loss(loss)
    chosen = next(
        name
        for name in (evaluate_split, "val", "train")
        if splits.get(name) is not None and splits[name].n_targets
    )
    data = splits[chosen]
    loss, tokens = evaluate_tokens(model, data, batch_size=batch_size)
    metrics.update(
        loss=loss,
        perplexity=exp_loss(loss),
        unigram_perplexity=unigram_perplexity(splits["train"], data, vocab_size),
        tokens=tokens,
        split=chosen,
    )
    return metrics
