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


def arrow_lookup(arr: pa.Array, vocab: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """`lookup` and the missing mask of an Arrow column, with no pandas on the way:
    (position of each value's key in `vocab`, int64 [N], -1 for unseen or missing;
    missing, bool [N]). Equal to `lookup(category_keys(col), vocab)` and
    `category_keys(col).isna()` for `col = arr.to_pandas()`; None for a type with no
    Arrow path here (the caller converts the column to pandas instead).

    Strings are their own keys: one `index_in` over the column. Any other type (ints,
    floats, booleans, a dictionary) is looked up through its distinct values: their
    keys are made by `category_keys`, as the column's would be, so a million rows cost
    a hash pass in C plus a few thousand keys in pandas."""
    kind = arr.type
    if pa.types.is_dictionary(kind):
        positions, missing = _dictionary_lookup(arr.dictionary, vocab)
        # null indices point one past the values: at an entry "missing, not in vocab"
        # (which also serves a block of nulls only, whose dictionary is empty)
        positions, missing = np.append(positions, -1), np.append(missing, True)
        indices = arr.indices.fill_null(len(arr.dictionary))
        where = indices.to_numpy(zero_copy_only=False)
        return positions[where], missing[where]
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        found = pc.index_in(arr, value_set=pa.array(vocab, type=kind))
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64), _nulls(arr)
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        return None
    return arrow_lookup(distinct(arr), vocab)


def distinct(arr: pa.Array) -> pa.DictionaryArray:
    """`arr` as a dictionary of its distinct values, each of them held as `to_pandas`
    would hold it in the column (an int column with gaps becomes float64 in pandas, so
    its values are keyed, or scrubbed, as floats)."""
    if pa.types.is_dictionary(arr.type):
        return arr
    if arr.null_count and pa.types.is_integer(arr.type):
        arr = pc.cast(arr, pa.float64(), safe=False)
    return pc.dictionary_encode(arr)


def _dictionary_lookup(values: pa.Array, vocab: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Positions in `vocab` and missing mask of a dictionary's distinct values."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        found = arrow_lookup(values, vocab)
        assert found is not None
        return found
    keys = category_keys(values.to_pandas())
    return lookup(keys, vocab), keys.isna().to_numpy()


def _nulls(arr: pa.Array) -> np.ndarray:
    """bool [N]: where `arr` is null."""
    if not arr.null_count:
        return np.zeros(len(arr), dtype=bool)
    return arr.is_null().to_numpy(zero_copy_only=False)
