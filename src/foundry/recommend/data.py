"""Interactions data: read the table the `recommend` section describes, index its users
and items, and hold out each user's latest (or random) interactions.

    table  = read_interactions(path, cfg.recommend)      # user, item, weight, time columns
    splits = split_interactions(table, cfg.recommend)    # per user: train / val / test

Users and items become dense indices (`users[u]`, `items[i]` give the ids back) in order
of first appearance in the file, so the same file gives the same indices. Repeated
(user, item) rows are added up into one weight in training; a held-out set is the items
a user interacted with, whatever the weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from foundry.errors import DataError

__all__ = ["Interactions", "InteractionSplits", "read_interactions", "split_interactions"]


@dataclass(frozen=True)
class Interactions:
    """One row per event; arrays of equal length."""

    users: list[str]
    """user index → id."""
    items: list[str]
    """item index → id."""
    user: np.ndarray
    """int64 [n]: the user index of each event."""
    item: np.ndarray
    """int64 [n]: the item index of each event."""
    weight: np.ndarray
    """float32 [n]: the weight column, or ones."""
    time: np.ndarray | None
    """float64 [n] (dates as seconds since 1970), or None without a time column."""

    def __len__(self) -> int:
        return len(self.user)

    def rows(self, mask: np.ndarray) -> Interactions:
        """The events where `mask` is true, with the same user and item indices."""
        time = self.time[mask] if self.time is not None else None
        return Interactions(
            self.users, self.items, self.user[mask], self.item[mask], self.weight[mask], time
        )

    def matrix(self) -> Any:
        """scipy CSR float32 [n_users, n_items]: weights, repeated pairs summed."""
        from scipy.sparse import csr_matrix

        shape = (len(self.users), len(self.items))
        out = csr_matrix((self.weight, (self.user, self.item)), shape=shape, dtype=np.float32)
        out.sum_duplicates()
        return out


@dataclass(frozen=True)
class InteractionSplits:
    train: Interactions
    val: Interactions
    test: Interactions
    method: str
    """`temporal` or `random`, as configured (recorded in the package)."""

    @property
    def rows(self) -> dict[str, int]:
        """Interactions per split (the manifest's `data.rows`, as tabular splits give)."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def held_out(self, split: str) -> Interactions:
        return {"train": self.train, "val": self.val, "test": self.test}[split]


def read_interactions(
    path: str | Path, rec: Any, *, fmt: str = "auto", delimiter: str | None = None
) -> Interactions:
    """The interactions table at `path` with the columns `rec` (a `RecommendConfig`)
    names; rows with a missing user or item are dropped (said in `DataError` if none is
    left)."""
    from foundry.data import read_table

    df = read_table(path, fmt, delimiter)
    return interactions_from_frame(df, rec, source=str(path))


def interactions_from_frame(
    df: pd.DataFrame, rec: Any, *, source: str = "the data"
) -> Interactions:
    """`df`'s interactions (see `read_interactions`); `source` names it in errors."""
    columns = {
        "recommend.user": rec.user,
        "recommend.item": rec.item,
        "recommend.weight": rec.weight,
        "recommend.time": rec.time,
    }
    for key, column in columns.items():
        if column is not None and column not in df.columns:
            raise DataError(
                f"{source} has no column '{column}' ({key}); its columns: "
                f"{', '.join(map(str, df.columns))}",
                hint=f"set {key} to one of them (foundry init DATA --task recommend infers them)",
            )
    df = df.dropna(subset=[rec.user, rec.item])
    if df.empty:
        raise DataError(
            f"{source} has no row with both a user ('{rec.user}') and an item ('{rec.item}')"
        )
    user_codes, users = pd.factorize(_ids(df[rec.user]), sort=False)
    item_codes, items = pd.factorize(_ids(df[rec.item]), sort=False)
    if rec.weight is not None:
        weight = pd.to_numeric(df[rec.weight], errors="coerce")
        if weight.isna().any() or (weight < 0).any():
            bad = df.loc[weight.isna() | (weight < 0), rec.weight].iloc[0]
            raise DataError(
                f"{source}: recommend.weight column '{rec.weight}' must hold "
                f"numbers >= 0; found {bad!r}",
                hint="fix the value, or set recommend.weight: null (each row counts 1)",
            )
        weights = weight.to_numpy(np.float32)
    else:
        weights = np.ones(len(df), np.float32)
    time = _times(df[rec.time], rec.time, source) if rec.time is not None else None
    return Interactions(
        [str(u) for u in users],
        [str(i) for i in items],
        user_codes.astype(np.int64),
        item_codes.astype(np.int64),
        weights,
        time,
    )


def split_interactions(data: Interactions, rec: Any) -> InteractionSplits:
    """Per user, hold out `rec.test` of their interactions for test and `rec.val` for
    validation: the latest ones (`temporal`; test after val) or a seeded random sample
    (`random`). A user keeps at least one interaction in training."""
    if rec.split == "temporal" and data.time is None:
        raise DataError(
            "recommend.split is temporal (each user's latest interactions held out) but "
            "recommend.time names no column",
            hint="set recommend.time to the timestamp column, or recommend.split: random",
        )
    rng = np.random.default_rng(rec.seed)
    # A random key breaks ties in time the same way for the same seed.
    tiebreak = rng.random(len(data))
    if rec.split == "temporal":
        order = np.lexsort((tiebreak, data.time, data.user))  # by user, then time
    else:
        order = np.lexsort((tiebreak, data.user))
    part = np.zeros(len(data), np.int8)  # 0 train, 1 val, 2 test
    users_sorted = data.user[order]
    starts = np.flatnonzero(np.r_[True, users_sorted[1:] != users_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        n = end - start
        if n < 2:
            continue
        n_test = max(1, int(round(rec.test * n)))
        n_val = int(round(rec.val * n))
        n_test = min(n_test, n - 1)
        n_val = min(n_val, n - 1 - n_test)
        part[order[end - n_test : end]] = 2
        part[order[end - n_test - n_val : end - n_test]] = 1
    return InteractionSplits(
        data.rows(part == 0), data.rows(part == 1), data.rows(part == 2), rec.split
    )


def held_out_sets(data: Interactions) -> dict[int, set[int]]:
    """user index → the item indices they interacted with in `data`."""
    out: dict[int, set[int]] = {}
    for u, i in zip(data.user.tolist(), data.item.tolist(), strict=True):
        out.setdefault(u, set()).add(i)
    return out


def _ids(column: pd.Series) -> pd.Series:
    """Ids as text: 42.0 (a number column pandas read as float, e.g. with a gap) reads
    as 42. Whole-column conversions: a Python call per row cost seconds on 10⁵ rows."""
    if pd.api.types.is_float_dtype(column):
        whole = column == np.floor(column)
        return column.astype("Int64").astype(str).where(whole, column.astype(str))
    return column.astype(str)


def _times(column: pd.Series, name: str, source: str) -> np.ndarray:
    """A time column as float64 seconds (numbers as they are, dates parsed)."""
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().all():
        return numbers.to_numpy(np.float64)
    dates = pd.to_datetime(column, errors="coerce", utc=True)
    if dates.isna().any():
        bad = column[dates.isna()].iloc[0]
        raise DataError(
            f"{source}: recommend.time column '{name}' must hold numbers or dates; found {bad!r}",
            hint="fix the value, or set recommend.split: random and recommend.time: null",
        )
    return (dates.astype("int64") / 1e9).to_numpy(np.float64)
