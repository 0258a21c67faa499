"""`foundry compress` for a recommender: int8 item vectors, with the ranking-metric change.

    compress_recommender(record, package, config, registry=..., out_dir=..., say=...)

The item matrix is what grows with the catalogue (10⁶ items × 64 float32 = 256 MB), so
the one method is `int8`: each item's vector stored as int8 with its own scale
(max |v| / 127: symmetric, per row, so a rare item's small vector keeps its precision).
The variant's package holds `item_factors_int8` and `item_scales` instead of
`item_factors`; `Recommender.from_state` multiplies them back to float32 at load, so
serving is as fast as the parent's and the package (and its download) is smaller. Both
models are scored on the training config's `evaluate.split` with the same split, and
the table shows recall / NDCG / MAP / coverage @k beside the parent's.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from foundry.errors import DataError

__all__ = ["compress_recommender", "dequantize_rows", "quantize_rows"]


def quantize_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 [n, d] → (int8 [n, d], float32 scales [n]): row ≈ int8 × scale."""
    scales = np.abs(matrix).max(axis=1) / 127.0
    scales = np.where(scales > 0, scales, 1.0).astype(np.float32)
    codes = np.clip(np.round(matrix / scales[:, None]), -127, 127).astype(np.int8)
    return codes, scales


def dequantize_rows(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    return codes.astype(np.float32) * scales[:, None]


def compress_recommender(
    record: Any, package: Any, config: Any, *, registry: Any, out_dir: Path | None, say: Any
) -> Any:
    from foundry.compression.stage import Variant, _Built, _deltas, _register, finish, report_dir
    from foundry.config.load import LoadedConfig
    from foundry.config.schema import FoundryConfig
    from foundry.families import family_of_package
    from foundry.families.recommend.family import IDS_FILE
    from foundry.recommend.data import read_interactions, split_interactions
    from foundry.recommend.fit import evaluate_recommender
    from foundry.recommend.index import INDEX_FILE

    started = time.perf_counter()
    manifest = package.manifest
    cfg = FoundryConfig.model_validate(manifest["config"])
    config = config or cfg.compress
    parent = family_of_package(manifest).load(package, record.ref)
    skipped = {
        m: "a recommender is a pair of factor matrices: int8 item vectors is its one method"
        for m in config.methods
        if m != "int8"
    }
    if parent.item_factors is None:
        skipped["int8"] = "the popularity model has no item vectors"
    base_dir = Path((manifest.get("data") or {}).get("base_dir") or Path.cwd())
    loaded = LoadedConfig(cfg, base_dir)
    path = loaded.resolve(cfg.data.path)
    data = read_interactions(path, cfg.recommend, fmt=cfg.data.format, delimiter=cfg.data.delimiter)
    # the catalogue the model was trained on: the file's items, then items known only
    # from the feature table (two_tower's new items), in that order
    if data.users != parent.users or parent.items[: len(data.items)] != data.items:
        raise DataError(
            f"{path} is not the interactions table {record.ref} was trained on (its users "
            "or items differ)",
            hint="restore the training data, or compress a model trained on this file",
        )
    data = replace(data, items=parent.items)
    splits = split_interactions(data, cfg.recommend)
    split, k = cfg.evaluate.split, cfg.recommend.k
    out_dir = report_dir(out_dir, base_dir, cfg)

    models: list[tuple[str, Any, str, str]] = [("parent", parent, record.ref, "")]
    built = None
    if "int8" not in skipped:
        assert parent.item_factors is not None
        codes, scales = quantize_rows(parent.item_factors)
        weights = {
            key: value for key, value in parent.state_dict().items() if key != "item_factors"
        }
        weights["item_factors_int8"] = torch.from_numpy(codes)
        weights["item_scales"] = torch.from_numpy(scales)
        files = {IDS_FILE: package.path / IDS_FILE}
        if parent.index is not None:
            files[INDEX_FILE] = package.path / INDEX_FILE
        built = _Built(
            "int8",
            None,
            weights,
            {"method": "int8", "what": "item vectors, per-row symmetric scale"},
            files=files,
            notes="int8 item vectors; float32 again at load",
        )
        variant = replace(parent, item_factors=dequantize_rows(codes, scales))
        models.append(("int8", variant, "", built.notes))
    scored = {}
    for method, model, _, _ in models:
        got = evaluate_recommender(model, splits, split, k=k)
        scored[method] = {key: v for key, v in got.items() if key != "users"}
    if built is not None:
        ref = _register(registry, record.ref, manifest, built, cfg, scored["int8"], out_dir)
        models[1] = ("int8", models[1][1], ref, built.notes)
        say.info(f"registered {ref} (int8)")
    latency = _latency(models, splits)
    variants = [
        Variant(
            method=method,
            ref=ref,
            size_bytes=registry.resolve(ref).size_bytes,
            parameters=int(sum(v.numel() for v in model.state_dict().values())),
            latency_ms={"1": latency[method]},
            throughput=round(1000 / latency[method], 1),
            metrics=scored[method],
            deltas=_deltas(scored[method], scored["parent"]),
            notes=notes,
        )
        for method, model, ref, notes in models
    ]
    return finish(
        variants,
        parent_ref=record.ref,
        name=cfg.name,
        registry=registry,
        budget=None,
        classification=False,
        skipped=skipped,
        out_dir=out_dir,
        data=f"{path} ({split} split, {scored['parent'].get(f'recall@{k}', 0):.4f} recall@{k})",
        started=started,
        say=say,
        units={
            "latency": f"median milliseconds of recommend(user, k={k}) for one user",
            "throughput": "queries per second, one at a time",
            "selection_metric": "none: int8 is offered with its ranking-metric change",
        },
    )


def _latency(models: list[tuple[str, Any, str, str]], splits: Any) -> dict[str, float]:
    """Median ms of one `recommend` per model, the models alternated user by user."""
    users = [splits.train.users[u] for u in np.unique(splits.train.user)[:200].tolist()]
    times: dict[str, list[float]] = {method: [] for method, *_ in models}
    for i, user in enumerate(users + users[:20]):  # the last 20 are the first again: warm
        for method, model, _, _ in models:
            t0 = time.perf_counter()
            model.recommend(user, k=10)
            if i >= 20 or len(users) <= 20:
                times[method].append((time.perf_counter() - t0) * 1e3)
    return {method: round(statistics.median(t), 4) for method, t in times.items()}
