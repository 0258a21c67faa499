"""Canonical string keys for category, binary and class-label values.

Vocabularies are stored as JSON strings, and the same value must give the same key
whether it arrives as int64 from a CSV, float64 because a NaN sits in the column, a Python
int from a JSON request, or a bool. So: integral numbers → "3", other floats → "2.5",
booleans → "True"/"False", strings as they are; missing stays missing (NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_EXACT_INT = 2.0**53  # beyond this a float64 no longer holds every integer


def category_keys(col: pd.Series) -> pd.Series:
    """Column → Series of str keys with the same index; missing values stay NaN."""
    dtype = col.dtype
    if isinstance(dtype, pd.StringDtype):
        return col
    if isinstance(dtype, np.dtype) and dtype.kind in "biu":
        # numpy bool / int columns hold no missing values and print canonically.
        return col.astype(str)
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        x = col.to_numpy(dtype=np.float64, na_value=np.nan)
        keys = x.astype(str).astype(object)
        integral = np.isfinite(x) & (x == np.round(x)) & (np.abs(x) < _EXACT_INT)
        keys[integral] = x[integral].astype(np.int64).astype(str)
        keys[np.isnan(x)] = np.nan
        return pd.Series(keys, index=col.index, dtype="str")
    # object (mixed Python values, e.g. from JSON requests) or categorical: per value.
    return pd.Series(
        [scalar_key(v) for v in col.to_numpy(dtype=object)], index=col.index, dtype="str"
    )


def scalar_key(value: object) -> str | float:
    """One value's key (NaN when missing); agrees with `category_keys` on every dtype."""
    if value is None or value is pd.NA or value is pd.NaT:
        return np.nan
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return np.nan
        if math.isfinite(v) and v == round(v) and abs(v) < _EXACT_INT:
            return str(int(v))
        return str(np.float64(v))
    return str(value)


def sort_keys(keys: list[str]) -> list[str]:
    """Keys in a stable, human order: numerically when every key is a number ("2" < "10"),
    else as strings (so False < True, no < yes)."""
    try:
        return sorted(keys, key=lambda k: (float(k), k))
    except ValueError:
        return sorted(keys)


def first_row(mask: pd.Series | np.ndarray, index: pd.Index | Sequence[object]) -> object:
    """Index label of the first True in `mask`, for error messages ("first at row 7");
    `index` is a frame's index, or `range(n)` for a list of records."""
    return index[int(np.argmax(np.asarray(mask)))]


def lookup(keys: pd.Series, vocab: list[str]) -> np.ndarray:
    """Position of each key in `vocab` as int64 [N]; -1 for unseen or missing keys.

    Arrow's `index_in` hashes the vocabulary once and scans the column in C: about 5x
    faster than `pd.Index.get_indexer` on a million strings.
    """
    arr = pa.array(keys.astype(str), from_pandas=True)
    found = pc.index_in(arr, value_set=pa.array(vocab, type=arr.type))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
