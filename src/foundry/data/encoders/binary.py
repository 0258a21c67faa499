"""Binary features: the two training values become 0.0 and 1.0 in the "numeric" tensor.

The values are ordered with `sort_keys` (False < True, no < yes, 0 < 1), so the second
one is 1.0. A value not seen in training, or a missing value under the `category`
policy, is 0.5: halfway, favouring neither side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from foundry.config.schema import CategoryPreprocessing
from foundry.data.encoders.keys import arrow_lookup, category_keys, scalar_key, sort_keys
from foundry.errors import DataError

UNKNOWN = 0.5


@dataclass(frozen=True)
class BinaryEncoder:
    name: str
    values: list[str]
    """One or two training keys; values[i] encodes as float(i)."""
    fill: float
    """Code used for missing values."""

    @classmethod
    def fit(cls, col: pd.Series, name: str, config: CategoryPreprocessing) -> BinaryEncoder:
        return cls.from_counts(name, config, category_keys(col).value_counts())

    @classmethod
    def from_counts(
        cls, name: str, config: CategoryPreprocessing, counts: pd.Series
    ) -> BinaryEncoder:
        """The encoder from the training rows' key counts (key → count, missing left
        out): what `fit` counts in memory and `foundry.data.stream_fit` when streaming."""
        if len(counts) > 2:
            shown = ", ".join(map(repr, sort_keys(list(counts.index))[:5]))
            raise DataError(
                f"binary column '{name}' has {len(counts)} distinct values ({shown}...); "
                "use type: category"
            )
        values = sort_keys(list(counts.index))
        fill = UNKNOWN
        if config.missing == "most_frequent" and len(counts):
            # Ties go to the first value in sorted order, so refitting gives the same fill.
            top = counts[counts == counts.max()].index
            fill = float(values.index(sort_keys(list(top))[0]))
        return cls(name=name, values=values, fill=fill)

    def transform(self, col: pd.Series) -> np.ndarray:
        """Column [N] → float32 [N] of 0.0 / 1.0 (0.5 unknown, `fill` missing)."""
        keys = category_keys(col)
        codes = np.full(len(keys), UNKNOWN, dtype=np.float32)
        for i, value in enumerate(self.values):
            codes[(keys == value).to_numpy(dtype=bool, na_value=False)] = i
        codes[keys.isna().to_numpy()] = self.fill
        return codes

    def transform_arrow(self, arr: pa.Array) -> np.ndarray | None:
        """Arrow column [N] → `transform(arr.to_pandas())`, bit for bit, without pandas;
        None for a type `arrow_lookup` does not take."""
        found = arrow_lookup(arr, self.values)
        if found is None:
            return None
        positions, missing = found
        codes = np.full(len(positions), UNKNOWN, dtype=np.float32)
        seen = positions >= 0
        codes[seen] = positions[seen]
        codes[missing] = self.fill
        return codes

    def encode_list(self, values: Sequence[Any]) -> np.ndarray:
        """Python values [N] (keys, numbers, booleans; None missing) → float32 [N], equal
        to `transform` on a column of the same values.

        A dict lookup per value: for the few records of an API request this is ~100x
        cheaper than building a Series (the same keys, by `scalar_key`).
        """
        codes = self._codes
        # Strings are keys already (the API's validator casts numbers and booleans to
        # theirs): one dict lookup, no call.
        out = [codes.get(v, UNKNOWN) if type(v) is str else self._code(v) for v in values]
        return np.array(out, dtype=np.float32)

    def _code(self, value: Any) -> float:
        key = scalar_key(value)
        return self._codes.get(key, UNKNOWN) if type(key) is str else self.fill  # NaN: missing

    @cached_property
    def _codes(self) -> dict[str, float]:
        """key → code; built on first use (a frozen dataclass may still cache in __dict__)."""
        return {value: float(i) for i, value in enumerate(self.values)}

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> BinaryEncoder:
        return cls(**d)
