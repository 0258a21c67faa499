"""Tokenizers for language models: the `TokenizerLike` contract, and the byte-level BPE
tokenizer our GPT trains on its own corpus.

The contract (what data loading, training and generation need from a tokenizer; the
Hugging Face adapter mirrors it):

    tok.encode(text) -> list[int]     no BOS/EOS added; special-token strings in `text`
                                      (`<|user|>`, `<|end|>`) become their single ids
    tok.decode(ids) -> str            the exact text again; must be *prefix-stable*:
                                      decode(ids[:n]) is a prefix of decode(ids) except
                                      for trailing U+FFFD of a multi-byte character not
                                      yet complete (generation streams on this promise)
    tok.eos_id, tok.pad_id            end of a document, padding (never a target)
    tok.stop_ids                      ids that end a generation: eos plus end-of-turn
                                      markers (`<|end|>` here, `<|eot_id|>` for Llama 3)
    tok.vocab_size                    logits width the model needs (ids < vocab_size)
    tok.chat_template                 Jinja chat template, or None for the default

`BPETokenizer.train(texts, vocab_size)` learns merges on the training split only;
`to_json()` / `from_json()` round-trip it through the `tokenizers` library's
tokenizer.json (a model package stores that file; no pickle).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from foundry.errors import DataError, ModelError

__all__ = [
    "CHAT_ROLES",
    "END_OF_TURN",
    "EOS",
    "PAD",
    "SPECIAL_TOKENS",
    "BPETokenizer",
    "TokenizerLike",
]

EOS = "<|endoftext|>"
"""Ends a document (corpus) or an example (instructions)."""
PAD = "<|pad|>"
"""Fills batches to one length; its positions are never targets."""
END_OF_TURN = "<|end|>"
"""Ends one chat message in the default template; generation stops on it."""
CHAT_ROLES = ("system", "user", "assistant")
"""Roles of the default chat template; each is a special token `<|role|>`."""
SPECIAL_TOKENS = [EOS, PAD, *(f"<|{role}|>" for role in CHAT_ROLES), END_OF_TURN]
"""Ids 0.. in this order in every BPE tokenizer we train."""


@runtime_checkable
class TokenizerLike(Protocol):
    """What the LM data loader, training loop and generation engine need (see module doc)."""

    eos_id: int
    pad_id: int
    stop_ids: tuple[int, ...]
    vocab_size: int
    chat_template: str | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) over the `tokenizers` library.

    Byte-level means every string encodes (no unknown token): the base alphabet is the
    256 bytes, and merges learned on the corpus make common words one token.
    """

    chat_template: str | None = None  # the default template (foundry.lm.data)
    decodes_bytewise = True
    """decode(a + b) == decode(a) + decode(b) whenever decode(a) ends on a whole
    character: the ByteLevel decoder maps each token to its bytes and the bytes are
    read as UTF-8, nothing more (foundry.lm.generate.TextTracker relies on it)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
        missing = [token for token, i in ids.items() if i is None]
        if missing:
            raise ModelError(f"tokenizer.json lacks the special tokens {missing}")
        self.eos_id: int = ids[EOS]
        self.pad_id: int = ids[PAD]
        self.stop_ids: tuple[int, ...] = (ids[EOS], ids[END_OF_TURN])
        self.vocab_size: int = tokenizer.get_vocab_size()

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2
    ) -> BPETokenizer:
        """Learn up to `vocab_size` tokens (special tokens and 256 bytes included) on
        `texts`. A small corpus may stop short of `vocab_size`: merges of pairs seen fewer
        than `min_frequency` times are not learned (they would only memorise)."""
        if vocab_size < len(SPECIAL_TOKENS) + 256:
            raise DataError(
                f"model.vocab_size is {vocab_size}; a byte-level BPE needs at least "
                f"{len(SPECIAL_TOKENS) + 256} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)"
            )
        tokenizer = train_byte_level_bpe(texts, vocab_size, SPECIAL_TOKENS, min_frequency)
        return cls(tokenizer)

    @classmethod
    def from_json(cls, text: str, *, source: str = "tokenizer.json") -> BPETokenizer:
        """Load what `to_json` wrote; `source` names the file in errors."""
        try:
            return cls(Tokenizer.from_str(text))
        except Exception as exc:  # the Rust side raises plain Exception
            raise ModelError(f"{source}: not a readable tokenizer: {exc}") from exc

    def to_json(self) -> str:
        """The tokenizer as tokenizer.json text (the `tokenizers` library's format)."""
        return self._tok.to_str()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` of many texts at once (parallel in the Rust library)."""
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        # Special tokens are kept: the text is exactly what the ids say. Generation
        # never returns the stop token that ended it.
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def info(self) -> dict[str, object]:
        """What a model manifest records about this tokenizer."""
        return {
            "type": "bpe",
            "file": "tokenizer.json",
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "stop_ids": list(self.stop_ids),
            "special_tokens": SPECIAL_TOKENS,
        }


def train_byte_level_bpe(
    texts: Iterable[str], vocab_size: int, special_tokens: list[str], min_frequency: int = 2
) -> Tokenizer:
    """A byte-level BPE (GPT-2's scheme: any text encodes, nothing is unknown) learned on
    `texts`, with `special_tokens` first in the vocabulary."""
    tokenizer = Tokenizer(models.BPE())
    # add_prefix_space=False: "Hello" at the start of a prompt stays one token
    # without an invented leading space, and decode(encode(s)) == s exactly.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer
