"""An approximate item index for large catalogues: FAISS IVF over int8 item vectors,
candidates rescored exactly.

    index = build_item_index(item_factors, queries=user_factors[:200], recall=0.95, seed=0)
    rows  = index.search(item_factors, vectors, k=10, banned=[seen_u, ...])

Why: exact retrieval reads the whole [n_items, d] float32 matrix once a query; at 10⁶
items and d = 64 that is 256 MB and 49 ms p50 on the shared 2-core machine, memory
bandwidth bound (benchmarks/recommend.py). An inverted-file index (k-means cells; a
query reads the `nprobe` cells nearest it) reads ~1% of the catalogue instead.

Why FAISS (`faiss-cpu`) over hnswlib and usearch: it ships wheels (hnswlib 0.8 is a
source distribution that needs a C++ compiler on the user's machine), it is Meta's
well-kept library that `implicit` itself uses for approximate ALS, and its IVF index
builds in seconds on two cores (a 10⁶-item HNSW graph takes minutes there). Its own
binary format (`faiss.serialize_index`: flat arrays, no code) is stored in the package
as `items.faiss`, whose sha256 the package's manifest carries like every file's.

Cells hold the vectors as int8 (faiss's 8-bit scalar quantizer: a quarter of the
float32 matrix, so the file is 64 MB at 10⁶ × 64, not 256), and the index returns
`CANDIDATES_PER_K` × k candidates that are rescored with the float32 factors, so the
scores served are exact dot products and int8 rounding only matters at the cut.
`nprobe` is chosen at build: doubled from 4 until the index's top 10 overlaps exact
top 10 by at least `recall` on sample users (measured and recorded in the package).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["INDEX_FILE", "ItemIndex", "build_item_index", "import_faiss"]

INDEX_FILE = "items.faiss"
"""The package file holding the index, in FAISS's own serialization."""
CANDIDATES_PER_K = 4
"""Candidates fetched per wanted item, rescored exactly: int8 scores misorder near
neighbours, and 4k of them still read nothing but a few hundred rows."""
RECALL_AT = 10
"""The list length the build-time recall check measures (the metrics' default k)."""


def import_faiss() -> Any:
    """faiss, from the `recommend` extra: only large catalogues need it (else the one-line
    error naming the install; `recommend.index: exact` needs nothing)."""
    from foundry.extras import require

    return require("recommend", "faiss", "the approximate item index (recommend.index)")


@dataclass
class ItemIndex:
    index: Any
    """A faiss IndexIVFScalarQuantizer (inner product, 8-bit)."""
    nprobe: int
    recall: float
    """Measured at build: mean overlap of the index's top 10 with exact top 10."""
    build_seconds: float

    @property
    def cells(self) -> int:
        return int(self.index.nlist)

    def describe(self) -> dict[str, Any]:
        """What the manifest and card record about the index."""
        return {
            "kind": "faiss-ivf-sq8",
            "file": INDEX_FILE,
            "cells": self.cells,
            "nprobe": self.nprobe,
            f"recall@{RECALL_AT}_vs_exact": round(self.recall, 4),
            "build_seconds": round(self.build_seconds, 2),
        }

    def candidates(self, vectors: np.ndarray, n: int) -> np.ndarray:
        """int64 [B, n] item indices the index finds for `vectors` [B, d] (-1: none)."""
        self.index.nprobe = self.nprobe
        _, found = self.index.search(np.ascontiguousarray(vectors, np.float32), n)
        return found

    def search(
        self,
        item_factors: np.ndarray,
        vectors: np.ndarray,
        k: int,
        banned: list[np.ndarray | None],
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per row of `vectors` [B, d]: (item indices, exact scores) of its top `k`, best
        first, never one of its `banned` items."""
        extra = max((len(b) for b in banned if b is not None), default=0)
        n = min(len(item_factors), CANDIDATES_PER_K * k + extra)
        found = self.candidates(vectors, n)
        out = []
        for row, vector in enumerate(vectors):
            cand = found[row][found[row] >= 0]
            if banned[row] is not None and len(banned[row]):
                cand = cand[~np.isin(cand, banned[row])]
            scores = item_factors[cand] @ vector  # exact float32 dot products
            order = np.argsort(-scores, kind="stable")[:k]
            out.append((cand[order], scores[order]))
        return out

    def to_bytes(self) -> bytes:
        return import_faiss().serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, settings: dict[str, Any]) -> ItemIndex:
        faiss = import_faiss()
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        return cls(
            index,
            int(settings["nprobe"]),
            float(settings.get(f"recall@{RECALL_AT}_vs_exact", 0.0)),
            float(settings.get("build_seconds", 0.0)),
        )


def build_item_index(
    item_factors: np.ndarray,
    *,
    queries: np.ndarray,
    recall: float,
    seed: int,
) -> ItemIndex:
    """An IVF index over `item_factors` [n_items, d], its `nprobe` the smallest power of
    two (from 4) whose top 10 for `queries` [m, d] (sample user vectors) overlaps exact
    top 10 by at least `recall` on average."""
    faiss = import_faiss()
    started = time.perf_counter()
    items = np.ascontiguousarray(item_factors, np.float32)
    n, d = items.shape
    # 2·√n cells: 2,000 cells of ~500 items at 10⁶. FAISS's guide says 4·√n to 16·√n;
    # 4·√n measured p50 5.8 ms against 8.0 ms at 10⁶ items but built in 169 s against
    # 46 s on the shared 2-core machine (k-means cost grows with cells²)
    # (and at least 39 items a cell, the training sample FAISS's k-means asks for)
    cells = max(1, min(n // 39, int(2 * math.sqrt(n))))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, d, cells, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    index.cp.seed = seed
    index.cp.niter = 10  # k-means sweeps: cells only need to be roughly right
    rng = np.random.default_rng(seed)
    sample = items[rng.choice(n, min(n, 39 * cells), replace=False)]
    index.train(sample)
    index.add(items)

    queries = np.ascontiguousarray(queries, np.float32)
    k = min(RECALL_AT, n)
    exact = _exact_top(items, queries, k) if len(queries) else None
    built = ItemIndex(index, 4, 1.0, 0.0)
    while True:
        built.nprobe = min(built.nprobe, cells)
        if exact is None:
            break
        found = built.search(items, queries, k, [None] * len(queries))
        built.recall = float(
            np.mean(
                [
                    len(set(f.tolist()) & set(e.tolist())) / k
                    for (f, _), e in zip(found, exact, strict=True)
                ]
            )
        )
        if built.recall >= recall or built.nprobe >= cells:
            break
        built.nprobe *= 2
    built.build_seconds = time.perf_counter() - started
    return built


def _exact_top(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """int64 [m, k]: exact top k of `items` for each of `queries`, 16 queries a product
    (a [16, 10⁶] float32 block is 64 MB; all 200 at once would be 800 MB)."""
    import torch

    items_t = torch.from_numpy(items)
    out = []
    for start in range(0, len(queries), 16):
        block = torch.from_numpy(queries[start : start + 16]) @ items_t.T
        out.append(torch.topk(block, k, dim=1).indices.numpy())
    return np.concatenate(out)
