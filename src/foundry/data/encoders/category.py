"""Category features: a training vocabulary, index 0 reserved for unknown and rare values."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from foundry.config.schema import CategoryPreprocessing
from foundry.data.encoders.keys import category_keys, lookup

MISSING = "__missing__"
"""Key of the missing-value category under the `category` policy."""


def ranked_counts(keys: pd.Series) -> pd.Series:
    """value → count, most frequent first, ties broken by the value (deterministic)."""
    counts = keys.value_counts()
    order = np.lexsort((counts.index.to_numpy(dtype=str), -counts.to_numpy()))
    return counts.iloc[order]


@dataclass(frozen=True)
class CategoryEncoder:
    name: str
    vocab: list[str]
    """Kept keys; vocab[i] encodes as i + 1."""
    fill: str | None
    """Key substituted for missing values (None: missing stays missing → 0)."""

    @property
    def cardinality(self) -> int:
        return len(self.vocab) + 1  # + the unknown index 0

    @classmethod
    def fit(cls, col: pd.Series, name: str, config: CategoryPreprocessing) -> CategoryEncoder:
        keys = category_keys(col)
        fill = None
        if config.missing == "category":
            fill = MISSING
        elif config.missing == "most_frequent":
            ranked = ranked_counts(keys)
            fill = str(ranked.index[0]) if len(ranked) else MISSING
        if fill is not None:
            keys = keys.fillna(fill)
        counts = ranked_counts(keys)
        counts = counts[counts >= config.min_frequency]
        if config.max_categories is not None:
            counts = counts.iloc[: config.max_categories]
        return cls(name=name, vocab=[str(k) for k in counts.index], fill=fill)

    def transform(self, col: pd.Series) -> np.ndarray:
        """Column [N] → int64 [N] in [0, cardinality); unseen and rare values → 0."""
        keys = category_keys(col)
        if self.fill is not None:
            keys = keys.fillna(self.fill)
        return lookup(keys, self.vocab) + 1  # -1 (unseen, rare or missing) + 1 = 0

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> CategoryEncoder:
        return cls(**d)
