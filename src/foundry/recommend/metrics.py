"""Ranking metrics of top-k lists against each user's held-out items.

For a user with held-out set H and a recommended list L of length k (best first):

    HitRate@k  1 if any item of L is in H, else 0
    Recall@k   |L ∩ H| / min(|H|, k)           (so a perfect list scores 1 when |H| > k)
    NDCG@k     DCG(L) / DCG(ideal),  DCG = Σ_{r: L[r] ∈ H} 1 / log2(r + 2)   (r from 0)
    MAP@k      (1 / min(|H|, k)) Σ_{r: L[r] ∈ H} precision@(r + 1)

each averaged over the users who have held-out items; catalog coverage@k is the share
of all items that appear in at least one user's list. These are the definitions of
`implicit.evaluation` and RecBole (Recall normalised by min(|H|, k)), so figures
compare with theirs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["ranking_metrics"]


def ranking_metrics(
    lists: Iterable[tuple[Sequence[int], set[int]]], *, k: int, n_items: int
) -> dict[str, float]:
    """`lists`: (recommended item indices best first, held-out item indices) per user.
    Returns recall@k, ndcg@k, hit_rate@k, map@k, coverage@k and users (how many were
    scored)."""
    totals = {"recall": 0.0, "ndcg": 0.0, "hit_rate": 0.0, "map": 0.0}
    shown: set[int] = set()
    users = 0
    discounts = [1.0 / math.log2(r + 2) for r in range(k)]
    for recommended, held in lists:
        top = list(recommended)[:k]
        shown.update(top)
        if not held:
            continue
        users += 1
        hits = 0
        dcg = 0.0
        precision_sum = 0.0
        for rank, item in enumerate(top):
            if item in held:
                hits += 1
                dcg += discounts[rank]
                precision_sum += hits / (rank + 1)
        denominator = min(len(held), k)
        ideal = sum(discounts[:denominator])
        totals["recall"] += hits / denominator
        totals["ndcg"] += dcg / ideal
        totals["hit_rate"] += 1.0 if hits else 0.0
        totals["map"] += precision_sum / denominator
    out = {f"{name}@{k}": (value / users if users else 0.0) for name, value in totals.items()}
    out[f"coverage@{k}"] = len(shown) / n_items if n_items else 0.0
    out["users"] = users
    return out
