"""Seeded, optionally stratified train/val/test split of one frame."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from foundry.config.schema import SplitConfig
from foundry.errors import DataError


def split_frame(
    df: pd.DataFrame, split: SplitConfig, stratify_on: str | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split `df` into (train, val, test) with fractions from `split`, indexes reset.

    The same seed and data always give the same split. With `split.stratify` and a
    `stratify_on` column (the classification target) class proportions are kept; when a
    class is too small for that (< 2 rows, or fewer rows than a split needs) it falls back
    to a plain shuffle with a warning. A zero fraction gives an empty frame with the same
    columns.
    """
    n = len(df)
    labels = None
    if split.stratify and stratify_on is not None:
        if stratify_on not in df.columns:
            raise DataError(f"cannot stratify on '{stratify_on}': no such column")
        # Missing labels become their own stratum; the preprocessor rejects them later.
        labels = df[stratify_on].astype(str).fillna("__missing__").to_numpy()
        counts = pd.Series(labels).value_counts()
        if counts.min() < 2:
            warnings.warn(
                f"class {counts.idxmin()!r} of '{stratify_on}' has a single row; "
                "splitting without stratification",
                stacklevel=2,
            )
            labels = None

    positions = np.arange(n)
    try:
        train_val, test = _cut(positions, split.test, split.seed, labels)
        rest = labels[train_val] if labels is not None else None
        # val is a fraction of the whole frame; re-express it relative to what is left.
        val_share = split.val / (split.train + split.val)
        train, val = _cut(train_val, val_share, split.seed, rest)
    except ValueError as e:
        if labels is None:
            raise DataError(f"cannot split {n} rows into {_fractions(split)}: {e}") from e
        warnings.warn(
            f"stratified split on '{stratify_on}' impossible ({e}); splitting without it",
            stacklevel=2,
        )
        return split_frame(df, split.model_copy(update={"stratify": False}), None)
    if len(train) == 0:
        raise DataError(f"{n} rows leave no training rows with split {_fractions(split)}")
    return tuple(df.iloc[p].reset_index(drop=True) for p in (train, val, test))  # type: ignore[return-value]


def _cut(
    positions: np.ndarray, fraction: float, seed: int, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Split `positions` into (keep, held_out) with `fraction` held out."""
    if fraction <= 0:
        return positions, positions[:0]
    # Imported here: scikit-learn takes ~1 s to import and serving never splits.
    from sklearn.model_selection import train_test_split

    keep, held = train_test_split(
        positions, test_size=fraction, random_state=seed, shuffle=True, stratify=labels
    )
    return keep, held


def _fractions(split: SplitConfig) -> str:
    return f"train={split.train:g}, val={split.val:g}, test={split.test:g}"
