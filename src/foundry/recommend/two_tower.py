"""A two-tower recommender over item features, in PyTorch.

    tokens = feature_tokens(features_df, rec.item, items)  # per item: its feature tokens
    users, items = fit_two_tower(train, tokens, cfg, seed=...)

user tower   an id embedding + the mean of the user's feature-token embeddings
             (`user_features`, optional), or for a user unseen in training, the
             feature part alone and/or the direction of their recent items
item tower   an id embedding + the mean of the item's feature-token embeddings
             (`item_features`: every column's value is a token, `a|b` two of them)

Trained with in-batch softmax: a batch of (user, item) interactions, each user's own
item the positive and the batch's other items its negatives (logits / temperature).
Each step leaves out the id part of a random `id_dropout` share of the batch's items,
so the feature part alone learns to place an item: that is all a new item has. After
training, an item without training interactions gets its feature part only (its id
embedding never moved from its random start), so new items with features are
recommended among the rest. The packaged vectors are plain float32 matrices: retrieval
and serving are those of matrix factorization (`Recommender`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from foundry.errors import DataError

__all__ = [
    "MAX_TOKENS",
    "UserEncoder",
    "UserFeatures",
    "column_kinds",
    "feature_tokens",
    "fit_two_tower",
    "user_features_of",
    "value_tokens",
]

MAX_TOKENS = 32
"""Feature tokens read per item (the first ones): a few categories and genres fit; long
text would need a text encoder, which this model does not have."""


def feature_tokens(
    df: pd.DataFrame,
    id_column: str,
    ids: list[str],
    source: str = "recommend.item_features",
    key: str = "recommend.item",
) -> list[list[str]]:
    """Per id of `ids` (index order), its tokens `column=value` from `df` (empty for an
    id the table does not list): the one encoding of item and user feature tables."""
    if id_column not in df.columns:
        raise DataError(
            f"{source} has no column '{id_column}' ({key}); its columns: "
            f"{', '.join(map(str, df.columns))}",
            hint=f"name the {key.split('.')[-1]} column as in the interactions table",
        )
    index = {v: i for i, v in enumerate(ids)}
    tokens: list[list[str]] = [[] for _ in ids]
    rows = df[id_column].astype(str).tolist()
    for column in (c for c in df.columns if c != id_column):
        for row, value in enumerate(df[column].tolist()):
            i = index.get(rows[row])
            if i is not None:
                tokens[i].extend(value_tokens(str(column), value))
    return tokens


def value_tokens(column: str, value: Any) -> list[str]:
    """One cell's tokens: `column=value`, `a|b` two of them, none for a missing value.
    A whole float reads as an integer (30.0 → `age=30`): pandas reads an integer column
    with a gap as floats, and a request sends 30."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    parts = (part.strip() for part in str(value).split("|"))
    return [f"{column}={part}" for part in parts if part]


def column_kinds(df: pd.DataFrame, id_column: str) -> dict[str, str]:
    """Each feature column's kind, `number` or `text`: what a request's value is
    checked against when a new user brings their features."""
    return {
        str(c): "number" if pd.api.types.is_numeric_dtype(df[c]) else "text"
        for c in df.columns
        if c != id_column
    }


@dataclass(frozen=True)
class UserFeatures:
    """A user feature table as training reads it (`user_features_of`)."""

    tokens: list[list[str]]
    """Per training user (index order), their feature tokens."""
    columns: dict[str, str]
    """feature column → `number` or `text`."""


def user_features_of(
    df: pd.DataFrame, user_column: str, users: list[str], source: str
) -> UserFeatures:
    """The table `df` (`recommend.user_features`) read for training `users`."""
    tokens = feature_tokens(df, user_column, users, source=source, key="recommend.user")
    return UserFeatures(tokens, column_kinds(df, user_column))


@dataclass(frozen=True)
class UserEncoder:
    """The user tower's feature part, as the package keeps it (user_features.json: the
    columns and token vocabulary; model.safetensors: `user_token_vectors`): a user unseen
    in training is placed by the mean of their feature tokens' vectors."""

    columns: dict[str, str]
    """feature column → `number` or `text` (`column_kinds`)."""
    tokens: list[str]
    """The token vocabulary, row order of `vectors`."""
    vectors: np.ndarray
    """float32 [len(tokens), dim]."""
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    """token → row of `vectors`, built once (not per query)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {t: j for j, t in enumerate(self.tokens)})

    def problem(self, features: Any) -> tuple[str | None, str] | None:
        """(the field at fault, what is wrong) with a request's `features`, or None."""
        if not isinstance(features, dict):
            return None, "user_features must be an object of feature column → value"
        for name, value in features.items():
            kind = self.columns.get(name)
            if kind is None:
                return name, (
                    f"unknown user feature '{name}'; the model's user features are "
                    f"{', '.join(self.columns) or 'none'}"
                )
            if value is None:
                continue
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if kind == "number" and not number:
                return name, f"user feature '{name}' must be a number; got {value!r}"
            if kind == "text" and not isinstance(value, str):
                return name, f"user feature '{name}' must be a string; got {value!r}"
        return None

    def vector(self, features: dict[str, Any]) -> np.ndarray | None:
        """The unit direction of `features`' known tokens, or None (none known)."""
        tokens = [t for name, value in features.items() for t in value_tokens(name, value)]
        rows = [self.index[t] for t in tokens[:MAX_TOKENS] if t in self.index]  # as training
        if not rows:
            return None
        mean = self.vectors[rows].mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def fit_two_tower(
    train: Any,
    tokens: list[list[str]],
    model: Any,
    *,
    seed: int,
    on_epoch: Any = None,
    user_tokens: list[list[str]] | None = None,
    user_columns: dict[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(user vectors [n_users, dim], item vectors [n_items, dim], training facts; with
    `user_tokens`, per training user, facts["user_encoder"] is the `UserEncoder`)."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n_users, n_items, dim = len(train.users), len(train.items), model.dim
    vocab, table, counts = _token_table(tokens)
    user_vocab, user_table, user_counts = _token_table(user_tokens or [[] for _ in train.users])

    user_emb = torch.nn.Embedding(n_users, dim)
    item_emb = torch.nn.Embedding(n_items, dim)
    token_emb = torch.nn.Embedding(len(vocab) + 1, dim, padding_idx=len(vocab))
    user_token_emb = torch.nn.Embedding(len(user_vocab) + 1, dim, padding_idx=len(user_vocab))
    layers = (user_emb, item_emb, token_emb, user_token_emb)
    for layer in layers:
        torch.nn.init.normal_(layer.weight, std=0.05)
    with torch.no_grad():
        token_emb.weight[len(vocab)].zero_()
        user_token_emb.weight[len(user_vocab)].zero_()
    optimizer = torch.optim.Adam([p for layer in layers for p in layer.parameters()], lr=model.lr)
    # a user with features drops their id part as items do (`id_dropout`), so the
    # feature part alone learns to place a user: all a new user with features has
    user_has_features = (user_table != len(user_vocab)).any(1)

    def feature_part(items: torch.Tensor) -> torch.Tensor:
        """[len(items), dim]: the mean of each item's token embeddings (zeros: none)."""
        return token_emb(table[items]).sum(1) / counts[items]

    def user_feature_part(users: torch.Tensor) -> torch.Tensor:
        return user_token_emb(user_table[users]).sum(1) / user_counts[users]

    pairs_u = torch.from_numpy(train.user.astype(np.int64))
    pairs_i = torch.from_numpy(train.item.astype(np.int64))
    # logQ correction (Yi et al. 2019): in-batch negatives are drawn as often as items
    # are interacted with, so without it the softmax pushes popular items down (on the
    # Debian graph: Recall@10 0.147, below popularity's 0.229)
    frequency = torch.bincount(pairs_i, minlength=n_items).float()
    log_q = torch.log(frequency.clamp(min=1) / len(pairs_i))
    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    for epoch in range(model.epochs):
        order = torch.randperm(len(pairs_u), generator=generator)
        total, steps = 0.0, 0
        for start in range(0, len(order), model.batch_size):
            batch = order[start : start + model.batch_size]
            if len(batch) < 2:
                continue
            u, i = pairs_u[batch], pairs_i[batch]
            features = feature_part(i)
            keep = (torch.rand(len(i), 1, generator=generator) >= model.id_dropout).float()
            items_v = F.normalize(item_emb(i) * keep + features, dim=1)
            users_v = user_emb(u)
            if user_vocab:  # (no draw without user features: item-only runs unchanged)
                drop = torch.rand(len(u), 1, generator=generator) < model.id_dropout
                users_v = users_v * (~(drop & user_has_features[u][:, None])).float()
            users_v = F.normalize(users_v + user_feature_part(u), dim=1)
            logits = users_v @ items_v.T / model.temperature - log_q[i][None, :]  # [B, B]
            # an item twice in a batch is a positive for both rows: mask the duplicate
            same = (i[:, None] == i[None, :]) & ~torch.eye(len(i), dtype=torch.bool)
            logits = logits.masked_fill(same, float("-inf"))
            loss = F.cross_entropy(logits, torch.arange(len(i)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
            steps += 1
        entry = {
            "epoch": epoch + 1,
            "train_loss": total / max(1, steps),
            "seconds": round(time.perf_counter() - started, 4),
        }
        history.append(entry)
        if on_epoch is not None:
            on_epoch(entry)
    with torch.no_grad():
        trained = torch.zeros(n_items, dtype=torch.bool)
        trained[pairs_i] = True
        ids = item_emb.weight * trained.float()[:, None]  # a new item: features alone
        items_v = F.normalize(ids + feature_part(torch.arange(n_items)), dim=1)
        users_v = F.normalize(user_emb.weight + user_feature_part(torch.arange(n_users)), dim=1)
    facts = {
        "tokens": len(vocab),
        "items_with_features": sum(1 for ts in tokens if ts),
        "new_items": int((~trained).sum()),
        "history": history,
    }
    if user_tokens is not None:
        facts["user_encoder"] = UserEncoder(
            dict(user_columns or {}),
            user_vocab,
            user_token_emb.weight[: len(user_vocab)].detach().numpy().astype(np.float32),
        )
    return users_v.numpy().astype(np.float32), items_v.numpy().astype(np.float32), facts


def _token_table(tokens: list[list[str]]) -> tuple[list[str], Any, Any]:
    """(vocabulary, [n, width] token ids padded with len(vocabulary), [n, 1] counts):
    a batch's feature vectors are one gather."""
    import torch

    vocab = sorted({t for ts in tokens for t in ts})
    ids = {t: j for j, t in enumerate(vocab)}
    width = max(1, min(MAX_TOKENS, max((len(ts) for ts in tokens), default=0)))
    table = torch.full((len(tokens), width), len(vocab), dtype=torch.long)
    for i, ts in enumerate(tokens):
        row = [ids[t] for t in ts[:MAX_TOKENS]]
        table[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    counts = (table != len(vocab)).sum(1, keepdim=True).clamp(min=1).float()
    return vocab, table, counts
