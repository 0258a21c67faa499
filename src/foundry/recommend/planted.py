"""Generated interactions with a planted structure, for tests and quick demos.

Users fall into `groups`; each group draws most of its items from its own block of the
catalogue and a few from a shared "popular" block, in a random order that is the time
column. A model that learns the groups recommends a user's own block (Recall@10 near 1);
popularity recommends the shared block to everyone, so it scores far lower: the gap a
working recommender must show.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "planted_interactions",
    "planted_item_features",
    "planted_user_features",
    "ratings_table",
]


def planted_interactions(
    n_users: int = 200,
    *,
    groups: int = 4,
    block: int = 10,
    shared: int = 20,
    per_user: int = 6,
    popular_per_user: int = 2,
    seed: int = 0,
) -> pd.DataFrame:
    """Columns user (`u<n>`), item (`i<n>`), weight (1-3) and ts (order per user)."""
    rng = np.random.default_rng(seed)
    shared_items = np.arange(groups * block, groups * block + shared)
    rows = []
    for u in range(n_users):
        own = np.arange((u % groups) * block, (u % groups + 1) * block)
        chosen = np.r_[
            rng.choice(own, per_user, replace=False),
            rng.choice(shared_items, popular_per_user, replace=False),
        ]
        for t, item in enumerate(rng.permutation(chosen).tolist()):
            rows.append((f"u{u}", f"i{item}", int(rng.integers(1, 4)), t))
    return pd.DataFrame(rows, columns=["user", "item", "weight", "ts"])


def planted_item_features(
    *, groups: int = 4, block: int = 10, shared: int = 20, new_per_group: int = 2
) -> pd.DataFrame:
    """Columns item and genre for `planted_interactions`' items (genre `g<group>` for a
    group's block, `shared` for the shared ones) plus `new_per_group` new items per group
    (`n<group>_<j>`, in no interaction): a model reading features should rank a group's
    new items high for that group's users."""
    rows = [(f"i{i}", f"g{i // block}") for i in range(groups * block)]
    rows += [(f"i{groups * block + j}", "shared") for j in range(shared)]
    rows += [(f"n{g}_{j}", f"g{g}") for g in range(groups) for j in range(new_per_group)]
    return pd.DataFrame(rows, columns=["item", "genre"])


def planted_user_features(n_users: int = 200, *, groups: int = 4, seed: int = 0) -> pd.DataFrame:
    """Columns user, segment (`s<group>`: the group of `planted_interactions`' user, which
    decides the block they like), age (a number unrelated to taste) and device (text,
    noise) for users `u0`..: a model reading user features should recommend a new user
    their segment's block, where popularity recommends the shared one."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user": [f"u{u}" for u in range(n_users)],
            "segment": [f"s{u % groups}" for u in range(n_users)],
            "age": rng.integers(18, 70, n_users),
            "device": rng.choice(["phone", "tablet", "desktop"], n_users),
        }
    )


def ratings_table(
    n_users: int = 1000,
    n_items: int = 1700,
    *,
    per_user: int = 100,
    dim: int = 8,
    seed: int = 0,
) -> pd.DataFrame:
    """A MovieLens-shaped table, columns userId, movieId, rating (1-5), timestamp (Unix
    seconds): the shape of public ratings data, for `foundry init` and its defaults.

    Each user and movie has a taste vector; a user rates about `per_user` movies (a
    long-tailed count, at least 20 as MovieLens keeps), drawn without replacement with
    odds ∝ popularity (Zipf) × exp(taste match), each at a time after the movie's
    release (movies come out over the whole period, so the latest are held out by a
    temporal split as in real logs); the rating rises with the taste match."""
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((n_users, dim)) / np.sqrt(dim)
    movies = rng.standard_normal((n_items, dim)) / np.sqrt(dim)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    release = rng.uniform(0, 0.8, n_items)  # a share of the logged period
    start = 9.0e8  # 1998, in Unix seconds; the log covers three years
    span = 3 * 365 * 86400
    rows = []
    for u in range(n_users):
        match = movies @ users[u] * 6.0
        odds = popularity * np.exp(match)
        n = int(min(n_items // 2, max(20, rng.lognormal(np.log(per_user) - 0.5, 1.0))))
        chosen = rng.choice(n_items, n, replace=False, p=odds / odds.sum())
        joined = rng.uniform(0, 0.6)
        when = np.maximum(release[chosen], joined) + rng.exponential(0.1, n)
        stars = np.clip(np.round(3.2 + 0.5 * match[chosen] + rng.normal(0, 0.9, n)), 1, 5)
        for m, t, r in zip(chosen.tolist(), when.tolist(), stars.tolist(), strict=True):
            rows.append((u + 1, m + 1, int(r), int(start + t * span)))
    return pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"])
