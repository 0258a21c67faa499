"""Streamed training rows: read from row groups by DataLoader workers, encoded there by
the run's fitted `Preprocessor`, shuffled through a bounded buffer, cut into batches.

    splits, resolved = stream_splits(loaded, table, say)   # one pass: fit + samples
    stream = splits.stream                                  # a StreamedTable
    for batch in stream.batches(epoch, batch_size, rank=0, world=1):   # Encoded dicts
        ...

Each epoch gets a fresh order of the pieces (row groups / text shards), seeded by
`train.seed` and the epoch. Under torchrun rank r reads the pieces r, r + world, ...
(a fixed, disjoint share; only their order changes per epoch), and inside a rank
DataLoader worker w reads every `workers`-th of those. A worker encodes a block of rows
at a time (`data.stream.block_rows`) into the same tensors the in-memory path builds,
keeps up to `shuffle_buffer / workers` of them, and hands back a random half of its
buffer whenever it fills: large blocks, so that the hand-over between processes costs
little per row. The training process cuts the blocks into batches (slices: no copy).

Rows per epoch are known from the fitting pass (`piece_rows`), so the training loop
knows its batch count up front, as it does in memory.

`prefetch` starts an epoch's workers ahead (epoch 1's during the run's preparation, the
next one's during validation), so that an epoch does not begin by waiting for a fork
and a first block; a later `batches` call for that epoch takes them over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from foundry.config import LoadedConfig
from foundry.config.schema import FoundryConfig
from foundry.console import Reporter
from foundry.data.encoders.keys import distinct
from foundry.data.preprocess import Preprocessor
from foundry.data.shards import ShardedTable
from foundry.errors import DataError

__all__ = ["Scrub", "StreamedTable", "rank_pieces", "stream_splits"]

Encoded = dict[str, torch.Tensor]


def rank_pieces(n_pieces: int, rank: int, world: int) -> list[int]:
    """The pieces rank `rank` of `world` reads: every `world`-th, from `rank`; the
    shares of all ranks are disjoint and cover every piece."""
    return list(range(rank, n_pieces, world))


class StreamedTable:
    """The training split of a sharded table, for `training.fit` (see the module
    docstring). Holds no rows: only where they are and how to encode them."""

    def __init__(
        self,
        table: ShardedTable,
        preprocessor: Preprocessor,
        cfg: FoundryConfig,
        scrub: Callable[[pd.DataFrame], pd.DataFrame],
        *,
        columns: list[str],
        piece_rows: list[int],
        masks: list[np.ndarray],
        rows: dict[str, int],
        fingerprint: str,
    ) -> None:
        self.table, self.preprocessor, self.scrub = table, preprocessor, scrub
        self.split, self.stream = cfg.data.split, cfg.data.stream
        self.columns = columns
        self.piece_rows = piece_rows
        self.masks = masks
        """Per piece, its training rows as packed bits (`stream_fit.StreamFit.masks`)."""
        self.rows = rows
        """Rows per split in the whole table (the manifest's `data.rows`)."""
        self.fingerprint = fingerprint
        self.seed = cfg.train.seed
        self._early: tuple[tuple[int, ...], _Epoch] | None = None
        """An epoch's batches started ahead by `prefetch`: (its arguments, the batches)."""
        resolved = preprocessor.resolved
        self.needed = [*resolved.input_names, resolved.target]
        """The columns encoding reads (the fitting pass read all of `columns`)."""
        self.keyed = [f.name for f in resolved.inputs if f.type in ("category", "binary")]
        """Columns encoded by their keys: read from Parquet as dictionaries."""
        if resolved.target_type != "number":
            self.keyed.append(resolved.target)
        schema = preprocessor.schema  # the Encoded keys (foundry.data.schema)
        self.input_keys = [
            *(["numeric"] if schema.numeric else []),
            *(["categorical"] if schema.categorical else []),
            *(f"text:{t.name}" for t in schema.text),
        ]

    @property
    def n_rows(self) -> int:
        """Training rows per epoch (all ranks together)."""
        return sum(self.piece_rows)

    def encoded_blocks(self, index: int) -> Iterator[Encoded]:
        """Piece `index`'s training rows, encoded, a block (`stream.block_rows` rows read)
        at a time, in file order.

        Straight from Arrow when the table is Parquet or CSV: only the input and target
        columns are read (key columns as dictionaries), the training rows selected by
        `filter` on the record batch, scrubbed by `Scrub.arrow` and encoded by
        `Preprocessor.transform_arrow`: bit for bit what the pandas route gives, at a
        fraction of its cost (docs/BENCHMARKS.md). JSONL shards go through pandas."""
        piece = self.table.pieces[index]
        # the fitting pass's split (and drop_row) decisions, one bit a row
        mask = np.unpackbits(self.masks[index]).view(bool)
        block_rows = self.stream.block_rows
        start = 0
        if self.table.arrow_readable:
            blocks = self.table.read_arrow(piece, self.needed, block_rows, dictionaries=self.keyed)
            for batch in blocks:
                keep = mask[start : start + batch.num_rows]
                start += batch.num_rows
                if keep.any():
                    train = self.scrub.arrow(batch.filter(keep), self.needed)
                    yield self.preprocessor.transform_arrow(train)
            return
        for frame in self.table.read(piece, self.columns, block_rows):
            keep = mask[start : start + len(frame)]
            start += len(frame)
            if keep.any():
                train = self.scrub(frame[keep]).reset_index(drop=True)
                yield self.preprocessor.transform(train)

    def rows_for(self, rank: int, world: int) -> int:
        """Training rows rank `rank` of `world` reads per epoch."""
        return sum(self.piece_rows[i] for i in rank_pieces(len(self.piece_rows), rank, world))

    def batches_per_epoch(self, batch_size: int, world: int) -> int:
        """Batches each rank trains per epoch when the batch is `batch_size` rows per
        rank. One rank: every row (a last batch of one row left out, which BatchNorm
        cannot train on). Several: the fewest full batches any rank has, so that every
        rank steps together (DDP); the rest of the other ranks' rows wait for the next
        epoch's order."""
        if world == 1:
            n = self.n_rows
            return (n + batch_size - 1) // batch_size - (1 if n > 1 and n % batch_size == 1 else 0)
        if len(self.piece_rows) < world:
            raise DataError(
                f"{len(self.piece_rows)} row groups / shards cannot feed {world} processes",
                hint="write the data in more shards or row groups than processes",
            )
        return min(self.rows_for(r, world) // batch_size for r in range(world))

    def batches(self, epoch: int, batch_size: int, *, rank: int = 0, world: int = 1) -> _Epoch:
        """This epoch's shuffled batches of `batch_size` rows (the last may be shorter),
        as CPU tensors: the caller stops after `batches_per_epoch` of them (closing the
        iterator stops the workers). The epoch `prefetch` started, if it is this one;
        any other started epoch is stopped."""
        # Starting a DataLoader draws its workers' base seed from the global RNG, which
        # dropout also draws from; these loaders draw from their own generator (the
        # workers shuffle with seeds of their own) so that starting one ahead changes
        # nothing, and this one draw keeps the global RNG where a loader started here
        # left it before: a seed trains the same model as it did without prefetching.
        torch.empty((), dtype=torch.int64).random_()
        early, self._early = self._early, None
        key = (epoch, batch_size, rank, world)
        if early is not None and early[0] == key:
            return early[1]
        if early is not None:
            early[1].close()
        return self._start(*key)

    def prefetch(self, epoch: int, batch_size: int, *, rank: int = 0, world: int = 1) -> None:
        """Start `batches(epoch, ...)` now: its DataLoader workers fork and read and
        encode their first blocks while this process does something else (the model's
        set-up, the previous epoch's validation). A later `batches` call with the same
        arguments takes them over; the same rows in the same order as without."""
        self.discard_prefetch()
        self._early = (
            (epoch, batch_size, rank, world),
            self._start(epoch, batch_size, rank, world),
        )

    def discard_prefetch(self) -> None:
        """Stop the workers `prefetch` started and no `batches` call took (a run that
        stopped early, or failed)."""
        early, self._early = self._early, None
        if early is not None:
            early[1].close()

    def __getstate__(self) -> dict[str, Any]:
        # a spawned DataLoader worker receives the table without the running loader
        return {**self.__dict__, "_early": None}

    def _start(self, epoch: int, batch_size: int, rank: int, world: int) -> _Epoch:
        mine = rank_pieces(len(self.table.pieces), rank, world)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(mine))
        blocks = _Blocks(self, [mine[i] for i in order], (self.seed, epoch, rank), batch_size)
        workers = self.stream.workers
        loader = DataLoader(
            blocks,
            batch_size=None,  # the workers hand over whole shuffled blocks
            num_workers=workers,
            prefetch_factor=2 if workers else None,
            generator=torch.Generator(),  # not the global RNG: see `batches`
        )
        # iter() forks the workers, and each starts on its first blocks at once (without
        # workers nothing is read before the first batch is asked for)
        return _Epoch(iter(loader), batch_size)


class _Epoch(Iterator[Encoded]):
    """One epoch's batches (`_cut`) over a running loader; `close` stops its workers
    now (a generator never started would not run its `finally`), rather than whenever
    the loader's iterator is collected."""

    def __init__(self, blocks: Iterator[Encoded], batch_size: int) -> None:
        self.blocks, self.batches = blocks, _cut(blocks, batch_size)

    def __next__(self) -> Encoded:
        return next(self.batches)

    def close(self) -> None:
        self.batches.close()
        shutdown = getattr(self.blocks, "_shutdown_workers", None)  # none without workers
        if shutdown is not None:
            shutdown()


def _cut(blocks: Iterator[Encoded], batch_size: int) -> Iterator[Encoded]:
    """Batches of `batch_size` rows out of the workers' blocks.

    Workers hand over whole batches' worth of rows, so a batch is a view of a block in
    shared memory; only each worker's last few rows are joined here. (Joining every
    block to the previous one's rest allocated a block-sized buffer per block in this
    process, which fragmented its heap: +60% RSS at 10M.)"""
    carry: Encoded | None = None
    for block in blocks:
        n = len(block["target"])
        full = n - n % batch_size
        for i in range(0, full, batch_size):
            yield {k: v[i : i + batch_size] for k, v in block.items()}
        if full < n:
            rest = {k: v[full:] for k, v in block.items()}
            carry = rest if carry is None else {k: torch.cat([carry[k], rest[k]]) for k in rest}
        if carry is not None and len(carry["target"]) >= batch_size:
            yield {k: v[:batch_size] for k, v in carry.items()}
            carry = {k: v[batch_size:] for k, v in carry.items()}
    if carry is not None and len(carry["target"]):
        yield carry


class _Blocks(IterableDataset):
    """One rank's pieces for one epoch, split over the DataLoader's workers."""

    def __init__(
        self, stream: StreamedTable, pieces: list[int], seed: tuple[int, ...], batch_size: int
    ) -> None:
        self.stream, self.pieces, self.seed, self.batch_size = stream, pieces, seed, batch_size

    def __iter__(self) -> Iterator[Encoded]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:  # a worker: the training process has the other cores
            torch.set_num_threads(1)
        s = self.stream
        capacity = max(s.stream.shuffle_buffer // workers, 1)
        # a hand-over comes once `capacity` rows are held, and a block may then arrive
        buffer = _ShuffleBuffer(
            max(capacity, self.batch_size) + s.stream.block_rows,
            np.random.default_rng([*self.seed, worker]),
        )
        handed = False
        for index in self.pieces[worker::workers]:
            for block in s.encoded_blocks(index):
                buffer.add(block)
                # the first hand-over comes after about a block, so training starts early
                threshold = capacity if handed else min(capacity, s.stream.block_rows // 2)
                if buffer.held >= max(threshold, self.batch_size):
                    handed = True
                    yield buffer.take(self.batch_size)
        if buffer.held:
            yield buffer.take(self.batch_size, everything=True)


class _ShuffleBuffer:
    """Up to `size` encoded rows in preallocated tensors, handed back a random half at a
    time. A block's rows are written into free slots once and leave by one gather:
    two copies a row. (Joining the held blocks and splitting them again at every
    hand-over made four, and allocated a buffer-sized tensor each time: with Arrow
    encoding that had become the largest cost of a worker, see docs/BENCHMARKS.md.)"""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.rng = size, rng
        self.store: Encoded = {}  # key → [size, ...] tensor; rows of `used` slots hold data
        self.free = np.arange(size, dtype=np.int64)
        self.used = np.zeros(0, dtype=np.int64)

    @property
    def held(self) -> int:
        return len(self.used)

    def add(self, block: Encoded) -> None:
        n = len(block["target"])
        if not self.store:
            self.store = {
                k: torch.empty((self.size, *v.shape[1:]), dtype=v.dtype) for k, v in block.items()
            }
        slots, self.free = self.free[:n], self.free[n:]
        where = torch.from_numpy(slots)
        for k, v in block.items():
            self.store[k].index_copy_(0, where, v)
        self.used = np.concatenate([self.used, slots])

    def take(self, multiple: int, everything: bool = False) -> Encoded:
        """A random half of the held rows in random order, rounded down to a `multiple`
        of rows (at least one multiple; or all of them)."""
        n = self.held
        cut = n if everything else max((n + 1) // 2 // multiple, 1) * multiple
        order = self.rng.permutation(n)
        chosen, self.used = self.used[order[:cut]], self.used[order[cut:]]
        self.free = np.concatenate([self.free, chosen])
        # index_select: the same rows as v[index] at a third of the cost (measured: 18
        # vs 51 ms for 262k rows of the benchmark's tensors, one thread)
        where = torch.from_numpy(chosen)
        return {k: v.index_select(0, where) for k, v in self.store.items()}


class Scrub:
    """`data.pii` applied to a block of rows (the fitted scrubber, or nothing): a class
    rather than a closure so that a spawned DataLoader worker can receive it."""

    def __init__(self, scrubber: Any = None) -> None:
        self.scrubber = scrubber

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame if self.scrubber is None else self.scrubber.scrub(frame)[0]

    def arrow(self, batch: pa.RecordBatch, columns: list[str]) -> pa.RecordBatch:
        """`batch` with `columns` scrubbed as `__call__` scrubs them in a frame. The
        scrubber replaces each distinct value on its own, so scrubbing a column's
        dictionary (its distinct values, as a small frame) and keeping its indices gives
        the same values: a block's few thousand distinct values pass through pandas,
        not its rows."""
        s = self.scrubber
        if s is None or not s.changes_values:
            return batch
        touched = set(s.scan_columns) if s.action != "report" else set()
        touched |= {d["column"] for d in s.identifier_columns if d["action"] != "report"}
        for name in [c for c in columns if c in touched and c in batch.schema.names]:
            i = batch.schema.get_field_index(name)
            arr = distinct(batch.column(i))
            scrubbed = s.scrub(pd.DataFrame({name: arr.dictionary.to_pandas()}))[0]
            if name not in scrubbed:  # a dropped identifier: gone, as from a frame
                batch = batch.drop_columns([name])
                continue
            values = pa.array(scrubbed[name], from_pandas=True)
            batch = batch.set_column(i, name, pa.DictionaryArray.from_arrays(arr.indices, values))
        return batch


def stream_splits(loaded: LoadedConfig, table: ShardedTable, say: Reporter) -> tuple[Any, Any]:
    """`data.dataset.load_splits` for streamed data: one pass fits everything (see
    `foundry.data.stream_fit`), and the `Splits` hold bounded uniform samples of each
    split, with `stream` the training rows to stream. Returns (splits, resolved)."""
    from foundry.data.dataset import Splits, scrub_pii
    from foundry.data.infer import infer_features
    from foundry.data.shards import open_shards
    from foundry.data.stream_fit import fit_stream

    cfg = loaded.config
    data = cfg.data
    holdout = {
        name: open_shards(loaded.data_source(path), data.format, data.delimiter)
        for name, path in (("val", data.val_path), ("test", data.test_path))
        if path
    }
    # Types, identifier columns and PII scanning are decided on the first rows.
    head = table.head(data.stream.sample_rows)
    columns = [str(c) for c in head.columns]
    head, _, _, pii, scrubber = scrub_pii(cfg, head, None, None, say)
    resolved = infer_features(head, cfg.features)
    scrub = Scrub(scrubber)
    fit = fit_stream(table, resolved, cfg, scrub, columns=columns, holdout=holdout)
    say.info(
        f"data: streaming {data.path} ({len(table.files)} shard(s), {len(table.pieces)} "
        f"piece(s)); one pass over {sum(fit.rows.values())} rows in {fit.seconds:.1f}s: "
        f"rows train/val/test = {fit.rows['train']}/{fit.rows['val']}/{fit.rows['test']}"
    )
    for what in fit.approximate:
        say.info(f"streaming: approximate {what}")
    stream = StreamedTable(
        table, fit.preprocessor, cfg, scrub, columns=columns, piece_rows=fit.piece_rows,
        masks=fit.masks, rows=fit.rows, fingerprint=fit.fingerprint,
    )  # fmt: skip
    samples = fit.samples
    splits = Splits(
        train=samples["train"],
        val=samples["val"],
        test=samples["test"],
        pii=pii,
        scrubber=scrubber,
        stream=stream,
    )
    return splits, resolved
