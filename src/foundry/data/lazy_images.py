"""Image columns decoded when a batch needs them, so memory does not grow with the folder.

The in-memory path (`ImageEncoder.transform`) builds one float32 [N, C, H, W] array:
12 KB per 32x32 RGB image, 600 KB per 224x224 one, so 200k photos need 120 GB before the
first step. `LazyImages` holds only the paths and reads like that array: `col[idx]`
decodes rows `idx` into float32 [len(idx), C, H, W], equal bit for bit to the same rows
of `transform` (the same decode, resize and normalisation, applied per row).

    col = LazyImages(encoder, paths, workers=2)
    col[torch.tensor([3, 0])]          # float32 [2, C, H, W], decoded now
    for inputs in epoch_inputs(train, keys, perm, batch_size, n_batches):
        ...                            # batches decoded ahead by DataLoader workers

The training loop reads its batches through `epoch_inputs`: tensor columns are indexed
as before, lazy columns come from a `torch.utils.data.DataLoader` whose worker processes
decode upcoming batches (in the loop's shuffled order) while the model trains on the
current one. Augmentation stays where it was, batched on the training device after the
batch arrives (one `grid_sample` per batch, with the loop's seeded generator), so a
seeded lazy run trains on exactly the tensors an in-memory run does and ends with the
same weights.

Only the training and validation splits of a run go through here; prediction and
evaluation already encode a bounded chunk of rows at a time (`Predictor`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from foundry.data.encoders.image import ImageEncoder

__all__ = [
    "IN_MEMORY_BYTES",
    "LazyImages",
    "decode_workers",
    "default_workers",
    "epoch_inputs",
    "release_unused_memory",
    "use_lazy",
]

IN_MEMORY_BYTES = 1 << 30
"""`data.images.loading: auto` keeps the decoded training images in memory up to this
many bytes of float32 pixels (1 GiB: ~87k 32x32 RGB images, ~1.7k 224x224 ones), where
decoding once beats decoding every epoch; above it, images are decoded per batch."""


def default_workers() -> int:
    """DataLoader workers when `data.images.workers` is not set: one core stays with
    the training process; at most 4, which keep a GPU fed with small images."""
    return max(1, min(4, (os.cpu_count() or 1) - 1))


class LazyImages:
    """A column of image paths that indexes like `encoder.transform(paths)`'s float32
    [N, C, H, W] array, decoding only the rows asked for."""

    def __init__(
        self,
        encoder: ImageEncoder,
        paths: Sequence[Path],
        *,
        workers: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.encoder = encoder
        # numpy bytes: one compact buffer instead of N Python objects, and forked workers
        # read it without touching reference counts (no copy-on-write growth). Bytes,
        # not numpy str: those take 4 bytes a character (22 MB for 100k paths of 59).
        self.paths = np.array([os.fsencode(p) for p in paths])
        self.workers = default_workers() if workers is None else workers
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        e = self.encoder
        return (len(self.paths), e.channels, e.height, e.width)

    def to(self, device: torch.device | str) -> LazyImages:
        """The same column, its rows returned on `device` (as `Tensor.to`)."""
        out = LazyImages.__new__(LazyImages)
        out.encoder, out.paths, out.workers = self.encoder, self.paths, self.workers
        out.device = torch.device(device)
        return out

    def __getitem__(self, idx: Tensor | slice | Sequence[int]) -> Tensor:
        """Rows `idx` (index tensor on any device, slice or list) → float32
        [len(idx), C, H, W] on this column's device, decoded now."""
        return self.decode_rows(self.rows(idx)).to(self.device)

    def rows(self, idx: Tensor | slice | Sequence[int]) -> np.ndarray:
        if isinstance(idx, slice):
            return np.arange(len(self.paths))[idx]
        if isinstance(idx, Tensor):
            return idx.cpu().numpy()
        return np.asarray(idx, dtype=np.int64)

    def decode_rows(self, rows: np.ndarray, *, threads: bool = True) -> Tensor:
        """float32 [len(rows), C, H, W] on the CPU. `threads=False` in DataLoader workers:
        there the workers themselves are the parallelism."""
        paths = [os.fsdecode(p) for p in self.paths[rows]]
        return torch.from_numpy(self.encoder.transform_paths(paths, threads=threads))


def use_lazy(setting: str, encoders: Sequence[ImageEncoder], n_rows: int) -> bool:
    """`data.images.loading`: lazy, memory, or auto (lazy when the decoded training
    images would take more than `IN_MEMORY_BYTES`)."""
    if not encoders or setting == "memory":
        return False
    if setting == "lazy":
        return True
    per_row = sum(e.channels * e.height * e.width * 4 for e in encoders)  # float32
    return n_rows * per_row > IN_MEMORY_BYTES


def release_unused_memory() -> None:
    """Hand back to the OS the memory that reading, scrubbing and fingerprinting the
    table freed but allocators kept: pyarrow's pool (pandas' strings live in Arrow)
    held ~37 MB after a 100k-image folder, and reference cycles ~14 MB more. Once,
    before training: otherwise that memory grows with the folder like the decoded array
    it replaces, only less, and forked workers inherit it."""
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()


def decode_workers(train: Any) -> int:
    """DataLoader worker processes that will decode `train`'s lazy image columns during
    the training loop (0 when none is lazy): the loop leaves them their cores
    (`foundry.training.runtime.torch_settings`)."""
    if not isinstance(train, dict):
        return 0
    return max((c.workers for c in train.values() if isinstance(c, LazyImages)), default=0)


class _Batches(Dataset):
    """Item b = batch b of the epoch: every lazy column's rows decoded. A DataLoader
    with `batch_size=None` hands these out in order, decoded ahead by its workers."""

    def __init__(
        self, columns: dict[str, LazyImages], batches: list[np.ndarray], *, threads: bool
    ) -> None:
        self.columns, self.batches, self.threads = columns, batches, threads

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> dict[str, Tensor]:
        rows = self.batches[b]
        return {k: col.decode_rows(rows, threads=self.threads) for k, col in self.columns.items()}


def epoch_inputs(
    data: dict[str, Any], keys: Sequence[str], perm: Tensor, batch_size: int, n_batches: int
) -> Iterator[dict[str, Tensor]]:
    """The inputs of each of the epoch's batches: batch b holds rows
    `perm[b * batch_size : (b + 1) * batch_size]` of every column in `keys`.

    Tensor columns are one index operation each (on their device); `LazyImages` columns
    are decoded ahead by DataLoader workers (`LazyImages.workers`; 0 decodes in this
    process when the batch is asked for).
    """
    lazy = {k: data[k] for k in keys if isinstance(data[k], LazyImages)}
    eager = [k for k in keys if k not in lazy]
    if not lazy:
        for b in range(n_batches):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            yield {k: data[k][idx] for k in eager}
        return
    order = perm.cpu().numpy()
    batches = [order[b * batch_size : (b + 1) * batch_size] for b in range(n_batches)]
    workers = max(col.workers for col in lazy.values())
    device = next(iter(lazy.values())).device
    loader = DataLoader(
        _Batches(lazy, batches, threads=workers == 0),  # no workers: a thread pool
        batch_size=None,  # each item is already a whole batch
        num_workers=workers,
        # a few batches ahead per worker: enough to hide decode jitter, memory bounded
        prefetch_factor=4 if workers else None,
        pin_memory=device.type == "cuda",  # page-locked: the copy below runs async
    )
    for b, decoded in enumerate(loader):
        idx = perm[b * batch_size : (b + 1) * batch_size]
        inputs = {k: data[k][idx] for k in eager}
        for k, x in decoded.items():
            inputs[k] = x.to(device, non_blocking=True)
        yield inputs
