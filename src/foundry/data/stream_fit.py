"""One streaming pass over a sharded table: the split of every row, the fitted
`Preprocessor`, and bounded uniform samples of each split.

    fit = fit_stream(table, resolved, cfg, scrubber)   # reads every row once
    fit.preprocessor      # the same class, and state, the in-memory path fits
    fit.samples["val"]    # <= data.stream.sample_rows rows, a uniform sample of the split
    fit.rows, fit.piece_rows, fit.fingerprint

**Splits** come from a seeded 64-bit hash of each row (`split_codes`): of the
`split.key` column, or of the whole raw row. The same row lands in the same split on
every pass, every epoch, every worker and every rank, with no list of row ids kept; a
row's split never depends on its neighbours, so validation and test rows can never
reach training. (Rows with the same key, or duplicate rows, share a split.)

**Statistics** are gathered over the training rows only, as in memory, in memory that
does not grow with the table:
- exact: row counts, number columns' mean and (population) std (Chan's pairwise merge
  of per-block moments), min and max; binary values; class labels; a regression
  target's mean and std; category counts while a column has at most
  `stream.max_categories` distinct values;
- approximate: a category column with more distinct values keeps the counts of its most
  frequent ones (pruned back to the cap after each block, a heavy-hitters sketch: a
  value frequent overall is frequent in enough blocks to stay); medians (`missing:
  median`) and text vocabularies come from the uniform training sample.

**Samples** are bottom-k samples: each row gets a second hash as its priority and a
split keeps the `sample_rows` rows of lowest priority. That is a uniform sample without
replacement, deterministic, independent of the shard order, and bounded while it runs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from foundry.config.schema import FoundryConfig, SplitConfig
from foundry.data.encoders.binary import BinaryEncoder
from foundry.data.encoders.category import CategoryEncoder
from foundry.data.encoders.keys import category_keys
from foundry.data.encoders.number import NumberEncoder, to_float
from foundry.data.encoders.target import TargetEncoder
from foundry.data.encoders.text import TextEncoder
from foundry.data.infer import ResolvedFeatures
from foundry.data.preprocess import Preprocessor, is_missing
from foundry.data.shards import ShardedTable
from foundry.errors import DataError

__all__ = ["SPLITS", "StreamFit", "fit_stream", "split_codes"]

SPLITS = ("train", "val", "test")
"""`split_codes` values 0, 1, 2."""
_MIX = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment (2**64 / golden ratio)


def split_codes(
    frame: pd.DataFrame, split: SplitConfig, columns: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's split (int8 [N]: 0 train, 1 val, 2 test) and sampling priority
    (uint64 [N]), from a hash seeded by `split.seed` of `split.key`'s value or, without a
    key, of `columns` (the raw row's columns in table order)."""
    if split.key is not None:
        if split.key not in frame.columns:
            raise DataError(
                f"data.split.key: column '{split.key}' is not in the data",
                hint="columns: " + ", ".join(map(str, frame.columns)),
            )
        keyed = frame[[split.key]]
    else:
        keyed = frame[columns] if columns is not None else frame
    try:
        h = pd.util.hash_pandas_object(keyed, index=False).to_numpy()
    except TypeError:  # unhashable cells (JSONL lists, dicts): their text
        h = pd.util.hash_pandas_object(keyed.astype(str), index=False).to_numpy()
    # pandas' hash key salts strings only, so the seed enters here: splitmix64 of
    # (hash + seed), then of that again for an independent sampling priority
    h = _splitmix(h + np.uint64(split.seed * int(_MIX) % 2**64))
    u = (h >> np.uint64(11)).astype(np.float64) / 2.0**53  # uniform in [0, 1)
    codes = np.full(len(h), 2, dtype=np.int8)
    codes[u < split.train + split.val] = 1
    codes[u < split.train] = 0
    return codes, _splitmix(h)


def _splitmix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 [N] (arithmetic wraps mod 2**64): every output
    bit depends on every input bit."""
    z = z + _MIX
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class StreamFit:
    preprocessor: Preprocessor
    samples: dict[str, pd.DataFrame]
    """"train" / "val" / "test" → a uniform sample (raw rows, scrubbed, index reset)."""
    rows: dict[str, int]
    """Rows per split in the whole table ("train" after drop_row policies)."""
    piece_rows: list[int]
    """Training rows (after drop_row) in each of `table.pieces`, in order."""
    masks: list[np.ndarray]
    """Per piece, which of its rows train (after drop_row), one bit a row
    (`np.packbits`): the epochs read it instead of hashing every row again. The one
    thing here that grows with the table: 4 MB per 30M rows."""
    fingerprint: str
    approximate: list[str]
    """What was estimated rather than computed exactly, for the console and the docs."""
    seconds: float


def fit_stream(
    table: ShardedTable,
    resolved: ResolvedFeatures,
    cfg: FoundryConfig,
    scrub: Callable[[pd.DataFrame], pd.DataFrame],
    *,
    columns: list[str],
    holdout: dict[str, ShardedTable] | None = None,
) -> StreamFit:
    """Read `table` once (`columns`: what is read, the raw table's columns) and fit.
    `scrub(frame)` applies `data.pii` to a block. `holdout` ("val" / "test" →
    table): explicit validation / test files, sampled whole; their fractions of
    `data.split` then belong to training (as in memory)."""
    started = time.perf_counter()
    stream, split = cfg.data.stream, cfg.data.split
    holdout = holdout or {}
    if holdout:  # explicit files: the hash only decides between train and what is left
        fractions = {
            "train": split.train
            + (split.val if "val" in holdout else 0)
            + (split.test if "test" in holdout else 0),
            "val": 0.0 if "val" in holdout else split.val,
            "test": 0.0 if "test" in holdout else split.test,
        }
        split = split.model_copy(update=fractions)
    stats = _Statistics(resolved, stream.max_categories)
    samples = {name: _BottomK(stream.sample_rows) for name in SPLITS}
    rows = dict.fromkeys(SPLITS, 0)
    piece_rows = []
    digest = hashlib.sha256(repr(columns).encode())
    masks = []
    for piece in table.pieces:
        in_piece, start, kept = 0, 0, []
        for frame in table.read(piece, columns, stream.block_rows):
            where = _row_namer(table, piece, start)
            start += len(frame)
            codes, priority = split_codes(frame, split, columns)
            digest.update(priority.tobytes())
            frame = scrub(frame)
            for code, name in enumerate(SPLITS):
                mask = codes == code
                rows[name] += int(mask.sum())
                samples[name].add(frame[mask], priority[mask])
            keep = stats.add(frame, codes == 0, where)
            in_piece += int(keep.sum())
            kept.append(keep)
        piece_rows.append(in_piece)
        masks.append(np.packbits(np.concatenate(kept)) if kept else np.zeros(0, np.uint8))
    rows["train"] = sum(piece_rows)
    for name, other in holdout.items():
        samples[name] = _BottomK(stream.sample_rows)
        rows[name] = 0
        for piece in other.pieces:
            for frame in other.read(piece, columns, stream.block_rows):
                _, priority = split_codes(frame, split, columns)
                digest.update(priority.tobytes())
                samples[name].add(scrub(frame), priority)
                rows[name] += len(frame)
    if rows["train"] == 0:
        raise DataError(
            f"no training rows in {table.folder}: every row is held out or "
            "dropped (missing: drop_row)"
        )
    train_sample = samples["train"].frame()
    preprocessor, approximate = stats.preprocessor(train_sample)
    return StreamFit(
        preprocessor=preprocessor,
        samples={name: samples[name].frame() for name in SPLITS},
        rows=rows,
        piece_rows=piece_rows,
        masks=masks,
        fingerprint=digest.hexdigest(),
        approximate=approximate,
        seconds=time.perf_counter() - started,
    )


# ------------------------------------------------------------------------ statistics


class _Moments:
    """Count, mean, sum of squared deviations, min and max of a stream of floats, merged
    block by block (Chan et al.): as exact as numpy's two-pass formula to ~1e-12."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.low, self.high = np.inf, -np.inf

    def add(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        n_b, mean_b = x.size, float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n
        self.low, self.high = min(self.low, float(x.min())), max(self.high, float(x.max()))

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n else 0.0


class _Counts:
    """Key → count of a category column, pruned to the `cap` most frequent keys when it
    grows past it (then `pruned` is set: the vocabulary is approximate). Blocks' counts
    wait in `pending` and are summed together now and then: one group-by over many
    blocks costs far less than aligning two indexes per block."""

    def __init__(self, cap: int) -> None:
        self._counts = pd.Series(dtype=np.int64)
        self.pending: list[pd.Series] = []
        self.waiting = 0
        self.missing, self.cap, self.pruned = 0, cap, False

    def add(self, keys: pd.Series) -> None:
        self.missing += int(keys.isna().sum())
        block = keys.value_counts()
        self.pending.append(block)
        self.waiting += len(block)
        if self.waiting > 4 * self.cap or len(self.pending) >= 64:
            self._merge()

    @property
    def counts(self) -> pd.Series:
        self._merge()
        return self._counts

    def _merge(self) -> None:
        if not self.pending:
            return
        merged = pd.concat([self._counts, *self.pending]).groupby(level=0, sort=False).sum()
        self.pending, self.waiting = [], 0
        if len(merged) > self.cap:
            merged = merged.nlargest(self.cap)
            self.pruned = True
        self._counts = merged.astype(np.int64)


class _Statistics:
    """The training rows' statistics of every input and the target, block by block."""

    def __init__(self, resolved: ResolvedFeatures, cap: int) -> None:
        self.resolved = resolved
        self.numbers = {f.name: _Moments() for f in resolved.inputs if f.type == "number"}
        self.counts = {
            f.name: _Counts(cap) for f in resolved.inputs if f.type in ("category", "binary")
        }
        self.target = _Moments() if resolved.target_type == "number" else _Counts(10**9)
        images = [f.name for f in resolved.inputs if f.type == "image"]
        if images:
            raise DataError(
                f"image input '{images[0]}' cannot be streamed from a table",
                hint="set data.streaming: false",
            )
        self.drop_row = [
            f.name
            for f in resolved.inputs
            if (f.type == "number" and f.number.missing == "drop_row")
            or (f.type in ("binary", "category") and f.category.missing == "drop_row")
        ]

    def add(
        self, frame: pd.DataFrame, train: np.ndarray, where: Callable[[int], str]
    ) -> np.ndarray:
        """Count `frame`'s training rows (bool mask `train`) in; returns the mask of
        those kept after drop_row policies. Every row's number cells are checked, as
        the in-memory path checks the whole file before splitting."""
        numbers = {name: to_float(frame[name], name, row_name=where) for name in self.numbers}
        target = self.resolved.target
        if self.resolved.target_type == "number":
            numbers[target] = to_float(frame[target], target, row_name=where)
        keep = train.copy()
        for name in self.drop_row:
            keep &= ~is_missing(frame[name])
        labels = frame[target][keep]
        if labels.isna().any():
            position = int(np.flatnonzero(keep)[int(np.argmax(labels.isna().to_numpy()))])
            raise DataError(
                f"target column '{target}' is missing at {where(position)}; drop or fill it"
            )
        for name, moments in self.numbers.items():
            x = numbers[name][keep]
            moments.add(x[~np.isnan(x)])
        kept = frame[list(self.counts)][keep] if self.counts else None  # one take
        for name, counts in self.counts.items():
            counts.add(category_keys(kept[name]))
        if isinstance(self.target, _Moments):
            self.target.add(numbers[target][keep])
        else:
            self.target.add(category_keys(labels))
        return keep

    def preprocessor(self, sample: pd.DataFrame) -> tuple[Preprocessor, list[str]]:
        """The fitted `Preprocessor`; `sample` (uniform, training rows) gives the
        medians and the text vocabularies."""
        encoders: list[Any] = []
        approximate = []
        kept = sample
        for name in self.drop_row:
            kept = kept[~is_missing(kept[name])]
        for f in self.resolved.inputs:
            if f.type == "number":
                m = self.numbers[f.name]
                if m.n == 0:
                    raise DataError(f"number column '{f.name}' has no values in the training rows")
                median = None
                if f.number.missing == "median":
                    x = to_float(kept[f.name], f.name)
                    median = float(np.nanmedian(x)) if np.isfinite(x).any() else m.mean
                    approximate.append(f"median of '{f.name}' (from the training sample)")
                encoders.append(
                    NumberEncoder.from_stats(
                        f.name, f.number, mean=m.mean, std=m.std, low=m.low, high=m.high,
                        median=median,
                    )
                )  # fmt: skip
            elif f.type == "binary":
                encoders.append(
                    BinaryEncoder.from_counts(f.name, f.category, self.counts[f.name].counts)
                )
            elif f.type == "category":
                c = self.counts[f.name]
                encoders.append(
                    CategoryEncoder.from_counts(f.name, f.category, c.counts, missing=c.missing)
                )
                if c.pruned:
                    approximate.append(
                        f"vocabulary of '{f.name}' (over {c.cap} distinct values: the most "
                        "frequent kept by a heavy-hitters sketch)"
                    )
            elif f.type == "text":
                encoders.append(TextEncoder.fit(kept[f.name], f.name, f.text))
                approximate.append(f"text vocabulary of '{f.name}' (from the training sample)")
        name = self.resolved.target
        if isinstance(self.target, _Moments):
            target = TargetEncoder.regression(name, mean=self.target.mean, std=self.target.std)
        else:
            labels = [str(k) for k in self.target.counts.index]
            target = TargetEncoder.classification(name, labels, self.resolved.target_type)
        return Preprocessor(self.resolved, encoders, target), approximate


# --------------------------------------------------------------------------- samples


class _BottomK:
    """The `k` rows of lowest priority seen so far: a uniform sample of a stream that
    never holds more than ~2k rows. Rows at or above the current k-th priority are
    skipped before anything is copied, so once full it costs one comparison per row."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.parts: list[pd.DataFrame] = []
        self.priorities: list[np.ndarray] = []
        self.held = 0
        self.threshold = np.uint64(np.iinfo(np.uint64).max)
        self.empty = pd.DataFrame()  # the columns, for a split no row fell into

    def add(self, frame: pd.DataFrame, priority: np.ndarray) -> None:
        if not len(self.empty.columns):
            self.empty = frame.iloc[:0]
        below = priority < self.threshold
        if not below.any():
            return
        self.parts.append(frame[below])
        self.priorities.append(priority[below])
        self.held += int(below.sum())
        if self.held > 2 * self.k:
            self._compact()

    def _compact(self) -> None:
        frame = pd.concat(self.parts, ignore_index=True)
        priority = np.concatenate(self.priorities)
        if len(priority) > self.k:
            order = np.argsort(priority, kind="stable")[: self.k]
            frame, priority = frame.iloc[order].reset_index(drop=True), priority[order]
            self.threshold = priority[-1]  # only rows below the k-th can still enter
        self.parts, self.priorities, self.held = [frame], [priority], len(priority)

    def frame(self) -> pd.DataFrame:
        """The sample in priority order (deterministic), index reset."""
        if not self.parts:
            return self.empty.reset_index(drop=True)
        self._compact()
        order = np.argsort(self.priorities[0], kind="stable")
        return self.parts[0].iloc[order].reset_index(drop=True)


def _row_namer(table: ShardedTable, piece: Any, start: int) -> Callable[[int], str]:
    """How an error names a block's row: its place in its shard file (1-based, data
    rows counted without the header)."""
    before = 0
    if piece.row_group:
        before = sum(p.rows for p in table.pieces if p.shard == piece.shard
                     and p.row_group is not None and p.row_group < piece.row_group)  # fmt: skip
    file = table.files[piece.shard]
    return lambda i: f"row {before + start + i + 1} of {file}"
