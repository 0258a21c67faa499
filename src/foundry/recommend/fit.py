"""Fit a recommender on the training interactions, and score it on held-out ones.

    model   = fit_recommender(splits.train, cfg.model, cfg.recommend, seed=cfg.train.seed)
    metrics = evaluate_recommender(model, splits, "test", k=10)

The popularity model is every recommender's baseline: `evaluate_recommender` is run on
both, on the same split, and the card shows them side by side.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from foundry.recommend.data import Interactions, InteractionSplits
from foundry.recommend.index import ItemIndex
from foundry.recommend.metrics import ranking_metrics
from foundry.recommend.model import Recommender

__all__ = ["evaluate_recommender", "fit_recommender", "popularity_of"]

_EVAL_USERS_PER_BATCH = 1024
"""Users scored in one matrix product when evaluating ([1024, n_items] float32)."""


def popularity_of(train: Interactions) -> Recommender:
    """The popularity model of `train`: items ranked by how many users touched them."""
    matrix = train.matrix()
    binary = matrix.copy()
    binary.data[:] = 1.0
    popularity = np.asarray(binary.sum(axis=0)).ravel().astype(np.float32)
    return Recommender(
        "popularity",
        train.users,
        train.items,
        popularity,
        matrix.indptr.astype(np.int64),
        matrix.indices.astype(np.int64),
    )


def fit_recommender(
    train: Interactions,
    model: Any,
    rec: Any,
    *,
    seed: int,
    on_iteration: Any = None,
    tokens: list[list[str]] | None = None,
    users: Any = None,
) -> tuple[Recommender, float]:
    """(the fitted model, seconds). `model`: a `PopularityConfig`, `MFConfig` or
    `TwoTowerConfig` (which reads each item's feature `tokens`, and with `users`, a
    `UserFeatures`, each training user's). A learned model is the
    popularity model (its fallback list and each user's seen items) plus factors."""
    from foundry.recommend.als import fit_als

    started = time.perf_counter()
    base = popularity_of(train)
    base.exclude_seen = rec.exclude_seen
    if model.type == "popularity":
        return base, time.perf_counter() - started
    if model.type == "two_tower":
        from foundry.recommend.two_tower import fit_two_tower

        users_v, items, facts = fit_two_tower(
            train,
            tokens or [[] for _ in train.items],
            model,
            seed=model.seed if model.seed is not None else seed,
            on_epoch=None
            if on_iteration is None
            else (lambda e: on_iteration(e["epoch"], None, None, train_loss=e["train_loss"])),
            user_tokens=None if users is None else users.tokens,
            user_columns=None if users is None else users.columns,
        )
        fitted = replace(
            base,
            kind="two_tower",
            user_factors=users_v,
            item_factors=items,
            user_encoder=facts.get("user_encoder"),
        )
        fitted.index = index_for(items, users_v, rec, seed=seed)
        return fitted, time.perf_counter() - started
    seed = model.seed if model.seed is not None else seed
    if "auto" in (model.alpha, model.regularization):
        model = choose_als_settings(train, model, rec, seed=seed)
    users, items = fit_als(
        train.matrix(),
        factors=model.factors,
        iterations=model.iterations,
        regularization=model.regularization,
        alpha=model.alpha,
        seed=seed,
        on_iteration=on_iteration,
    )
    # regularization and alpha also fold in a user known only by recent items
    fitted = replace(
        base,
        kind="mf",
        user_factors=users,
        item_factors=items,
        regularization=model.regularization,
        alpha=model.alpha,
    )
    fitted.index = index_for(items, users, rec, seed=seed)
    return fitted, time.perf_counter() - started


AUTO_ALPHAS = (0.25, 1.0, 4.0, 16.0, 40.0)
AUTO_REGULARIZATIONS = (0.1, 3.0, 30.0)
AUTO_SWEEPS = 3
"""ALS sweeps of each candidate fit: rankings of candidates settle well before the
scores do. 3 picks what 5 picked on both benchmark tables (the ratings table: alpha 1,
reg 30; the Debian graph: alpha 40, reg 30) at 3/5 of the fitting; 2 picked alpha 4 on
the ratings table (test NDCG@10 ~25% lower). The whole search: 5.7 s against 9.3 s
with 5 on the ratings table (alternated runs, medians)."""


def choose_als_settings(train: Interactions, model: Any, rec: Any, *, seed: int) -> Any:
    """`model` with its `auto` alpha and regularization chosen on an inner split of
    `train` (each user's latest 10%, or a random 10% for `split: random`; test and val
    are never read), by NDCG@k over the whole grid of the auto ones: the best alpha
    moves with the regularization (on dense ratings 0.25 at 10 but 1 at 30, the best),
    so searching one after the other stopped 15% short of the grid's best."""
    from foundry.recommend.als import fit_als
    from foundry.recommend.data import split_interactions

    inner = split_interactions(
        train, rec.model_copy(update={"test": 0.1, "val": 0.0, "item_features": None})
    )

    matrix = inner.train.matrix()
    base = popularity_of(inner.train)
    base.exclude_seen = rec.exclude_seen

    def score(pair: tuple[float, float]) -> float:
        alpha, regularization = pair
        users, items = fit_als(
            matrix,
            factors=model.factors,
            iterations=min(AUTO_SWEEPS, model.iterations),
            regularization=regularization,
            alpha=alpha,
            seed=seed,
        )
        candidate = replace(base, user_factors=users, item_factors=items)
        return evaluate_recommender(candidate, inner, "test", k=rec.k)[f"ndcg@{rec.k}"]

    alphas = AUTO_ALPHAS if model.alpha == "auto" else (model.alpha,)
    regs = AUTO_REGULARIZATIONS if model.regularization == "auto" else (model.regularization,)
    alpha, regularization = max(((a, r) for a in alphas for r in regs), key=score)
    return model.model_copy(update={"alpha": alpha, "regularization": regularization})


def index_for(items: np.ndarray, users: np.ndarray, rec: Any, *, seed: int) -> ItemIndex | None:
    """The approximate index `rec.index` asks for (`auto`: from `rec.index_above` items),
    its recall checked on up to 200 training users' vectors; None: exact retrieval."""
    wanted = rec.index == "approximate" or (rec.index == "auto" and len(items) >= rec.index_above)
    if not wanted:
        return None
    from foundry.recommend.index import build_item_index

    rng = np.random.default_rng(seed)
    sample = users[rng.choice(len(users), min(200, len(users)), replace=False)]
    return build_item_index(items, queries=sample, recall=rec.index_recall, seed=seed)


def evaluate_recommender(
    model: Recommender, splits: InteractionSplits, split: str, *, k: int
) -> dict[str, Any]:
    """Ranking metrics of `model`'s top-k lists on `split`'s held-out items, for every
    user who has some. With `exclude_seen`, what the user did before the split (training,
    and validation when scoring test) is left out of their list, as serving does."""
    held = splits.held_out(split)
    before = [splits.train] + ([splits.val] if split == "test" else [])
    if split == "train":
        before = []
    n_users, n_items = len(model.users), len(model.items)
    seen = _csr(before, n_users, n_items) if model.exclude_seen else None
    target = _csr([held], n_users, n_items)
    users = np.flatnonzero(np.diff(target.indptr))

    def truth(u: int) -> set[int]:
        return set(target.indices[target.indptr[u] : target.indptr[u + 1]].tolist())

    def popular_lists():
        # one ranking for everyone: walk it past each user's seen items
        order = np.argsort(-model.popularity, kind="stable").tolist()
        for u in users.tolist():
            banned = (
                set(seen.indices[seen.indptr[u] : seen.indptr[u + 1]].tolist())
                if seen is not None
                else set()
            )
            top = []
            for i in order:
                if i not in banned:
                    top.append(i)
                    if len(top) == k:
                        break
            yield top, truth(u)

    def factor_lists():
        import torch

        for start in range(0, len(users), _EVAL_USERS_PER_BATCH):
            chunk = users[start : start + _EVAL_USERS_PER_BATCH]
            scores = model.user_factors[chunk] @ model.item_factors.T  # [B, n_items]
            if seen is not None:
                rows = seen[chunk]
                scores[
                    np.repeat(np.arange(len(chunk)), np.diff(rows.indptr)), rows.indices
                ] = -np.inf
            # torch.topk: 1.3 s → ~0.05 s a [1024, 38k] batch against np.argpartition
            # (measured on the Debian graph); -inf (seen) sorts last and is dropped
            values, part = torch.topk(torch.from_numpy(scores), min(k, n_items), dim=1)
            finite = torch.isfinite(values).numpy()
            for row, u in enumerate(chunk.tolist()):
                yield part[row].numpy()[finite[row]].tolist(), truth(u)

    lists = popular_lists if model.user_factors is None else factor_lists
    out = ranking_metrics(lists(), k=k, n_items=n_items)
    return out


def _csr(parts: list[Interactions], n_users: int, n_items: int) -> Any:
    from scipy.sparse import csr_matrix

    if not parts or not sum(len(p) for p in parts):
        return csr_matrix((n_users, n_items), dtype=np.float32)
    user = np.concatenate([p.user for p in parts])
    item = np.concatenate([p.item for p in parts])
    out = csr_matrix((np.ones(len(user), np.float32), (user, item)), shape=(n_users, n_items))
    out.sum_duplicates()
    return out
