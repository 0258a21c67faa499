"""Text features: a `tokenizers` word-level or BPE tokenizer trained on the training rows.

Ids: 0 = [PAD], 1 = [UNK]; every row is padded / truncated to `max_length`, so the
output is one int64 [N, max_length] array.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from foundry.config.schema import TextPreprocessing

PAD, UNK = "[PAD]", "[UNK]"
_TRAIN_BATCH = 1000  # texts handed to the Rust trainer per call


def texts_of(col: pd.Series) -> list[str]:
    """Column → list of str; missing text is the empty string (all padding)."""
    return col.astype(object).where(col.notna(), "").astype(str).tolist()


def _text_of(value: object) -> str:
    """One value as `texts_of` converts it."""
    if type(value) is str:
        return value
    missing = pd.api.types.is_scalar(value) and pd.isna(value)  # None, NaN, pd.NA
    return "" if missing else str(value)


def build_tokenizer(config: TextPreprocessing) -> tuple[Tokenizer, trainers.Trainer]:
    special = [PAD, UNK]  # listed first, so they get ids 0 and 1
    if config.tokenizer == "word":
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        trainer = trainers.WordLevelTrainer(
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            special_tokens=special,
            show_progress=False,
        )
    else:
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            special_tokens=special,
            show_progress=False,
        )
    if config.lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer, trainer


@dataclass(frozen=True)
class TextEncoder:
    name: str
    tokenizer: Tokenizer
    max_length: int

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @classmethod
    def fit(cls, col: pd.Series, name: str, config: TextPreprocessing) -> TextEncoder:
        tokenizer, trainer = build_tokenizer(config)
        texts = texts_of(col)

        def batches() -> Iterator[list[str]]:
            for i in range(0, len(texts), _TRAIN_BATCH):
                yield texts[i : i + _TRAIN_BATCH]

        tokenizer.train_from_iterator(batches(), trainer=trainer, length=len(texts))
        # Padding and truncation live in the tokenizer, so to_str() carries them too.
        tokenizer.enable_padding(pad_id=0, pad_token=PAD, length=config.max_length)
        tokenizer.enable_truncation(max_length=config.max_length)
        return cls(name=name, tokenizer=tokenizer, max_length=config.max_length)

    def transform(self, col: pd.Series) -> np.ndarray:
        """Column [N] → int64 [N, max_length] token ids."""
        return self._ids(texts_of(col))

    def transform_arrow(self, arr: pa.Array) -> np.ndarray | None:
        """Arrow column [N] → `transform(arr.to_pandas())`, bit for bit, without pandas;
        None unless the column holds strings."""
        if pa.types.is_dictionary(arr.type):  # e.g. scrubbed (`data.pii`) per value
            arr = arr.dictionary_decode()
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            return None
        return self._ids(arr.fill_null("").to_pylist())  # missing text: "" (all padding)

    def encode_list(self, values: Sequence[str | None]) -> np.ndarray:
        """Python strings [N] (None missing) → int64 [N, max_length], equal to `transform`
        on a column of the same values."""
        return self._ids([_text_of(v) for v in values])

    def _ids(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        return ids.reshape(len(encodings), self.max_length)

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tokenizer": self.tokenizer.to_str(),
            "max_length": self.max_length,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> TextEncoder:
        return cls(
            name=d["name"], tokenizer=Tokenizer.from_str(d["tokenizer"]), max_length=d["max_length"]
        )
