"""Small, real pieces for the LM tests: a byte tokenizer, a scripted step, a tiny GPT.

(Not a conftest.py: tests import these by name, and tests/conftest.py exists.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from foundry.config.schema import GPTConfig
from foundry.models.gpt import GPT

EOS, PAD, END = 256, 257, 258


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, plus EOS / PAD / END: a complete `TokenizerLike` whose
    multi-byte characters span several tokens (what UTF-8-safe streaming must handle)."""

    eos_id, pad_id = EOS, PAD
    stop_ids = (EOS, END)
    vocab_size = 259
    chat_template = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class ScriptedStep:
    """A step whose logits put one token far ahead of the others: row i's k-th generated
    token is `scripts[i][k]` (and `after` once the script runs out). The unit under test
    is the engine; this is its input, chosen so the expected output is known."""

    def __init__(self, scripts: list[list[int]], vocab_size: int = 259, after: int = EOS) -> None:
        self.scripts = scripts
        self.vocab_size = vocab_size
        self.after = after
        self.calls: list[dict[str, Tensor | None]] = []

    def __call__(self, input_ids, *, cache, attention_mask, position_ids, use_cache):
        k = len(self.calls)  # the k-th call produces every row's k-th generated token
        self.calls.append(
            {"input_ids": input_ids, "attention_mask": attention_mask, "positions": position_ids}
        )
        logits = torch.zeros(input_ids.shape[0], 1, self.vocab_size)
        for row in range(input_ids.shape[0]):
            script = self.scripts[row % len(self.scripts)]
            logits[row, 0, script[k] if k < len(script) else self.after] = 10.0
        return logits, (cache or 0) + 1


def tiny_gpt(positions: str = "rope", vocab_size: int = 97, seed: int = 0, **overrides) -> GPT:
    values = dict(
        n_layers=2,
        d_model=32,
        n_heads=4,
        context_length=48,
        positions=positions,
        dropout=0.0,
        vocab_size=vocab_size,
    )
    values.update(overrides)
    torch.manual_seed(seed)
    return GPT(GPTConfig(**values), vocab_size=vocab_size).eval()
