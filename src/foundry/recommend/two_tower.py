"""A two-tower recommender over item features, in PyTorch.

    tokens = item_tokens(features_df, rec, items)        # per item: its feature tokens
    users, items = fit_two_tower(train, tokens, cfg, seed=...)

user tower   an id embedding                                    [n_users, dim]
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
from typing import Any

import numpy as np
import pandas as pd

from foundry.errors import DataError

__all__ = ["MAX_TOKENS", "fit_two_tower", "item_tokens"]

MAX_TOKENS = 32
"""Feature tokens read per item (the first ones): a few categories and genres fit; long
text would need a text encoder, which this model does not have."""


def item_tokens(
    df: pd.DataFrame, item_column: str, items: list[str], source: str = "recommend.item_features"
) -> list[list[str]]:
    """Per item of `items` (index order), its tokens `column=value` from `df` (empty for
    an item the table does not list)."""
    if item_column not in df.columns:
        raise DataError(
            f"{source} has no column '{item_column}' (recommend.item); its columns: "
            f"{', '.join(map(str, df.columns))}",
            hint="name the item column as in the interactions table",
        )
    index = {item: i for i, item in enumerate(items)}
    tokens: list[list[str]] = [[] for _ in items]
    columns = [c for c in df.columns if c != item_column]
    ids = df[item_column].astype(str).tolist()
    for column in columns:
        for row, value in enumerate(df[column].tolist()):
            i = index.get(ids[row])
            if i is None or value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            for part in str(value).split("|"):
                part = part.strip()
                if part:
                    tokens[i].append(f"{column}={part}")
    return tokens


def fit_two_tower(
    train: Any,
    tokens: list[list[str]],
    model: Any,
    *,
    seed: int,
    on_epoch: Any = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(user vectors [n_users, dim], item vectors [n_items, dim], training facts)."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n_users, n_items, dim = len(train.users), len(train.items), model.dim
    vocab = {t: j for j, t in enumerate(sorted({t for ts in tokens for t in ts}))}
    pad = len(vocab)  # the padding token's id: its embedding stays zero
    width = max(1, min(MAX_TOKENS, max((len(ts) for ts in tokens), default=0)))
    # [n_items, width] token ids, padded: a batch's feature vectors are one gather
    table = torch.full((n_items, width), pad, dtype=torch.long)
    for i, ts in enumerate(tokens):
        ids = [vocab[t] for t in ts[:MAX_TOKENS]]
        table[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    counts = (table != pad).sum(1, keepdim=True).clamp(min=1).float()  # [n_items, 1]

    user_emb = torch.nn.Embedding(n_users, dim)
    item_emb = torch.nn.Embedding(n_items, dim)
    token_emb = torch.nn.Embedding(len(vocab) + 1, dim, padding_idx=pad)
    for layer in (user_emb, item_emb, token_emb):
        torch.nn.init.normal_(layer.weight, std=0.05)
    with torch.no_grad():
        token_emb.weight[pad].zero_()
    params = [*user_emb.parameters(), *item_emb.parameters(), *token_emb.parameters()]
    optimizer = torch.optim.Adam(params, lr=model.lr)

    def feature_part(items: torch.Tensor) -> torch.Tensor:
        """[len(items), dim]: the mean of each item's token embeddings (zeros: none)."""
        return token_emb(table[items]).sum(1) / counts[items]

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
            users_v = F.normalize(user_emb(u), dim=1)
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
        users_v = F.normalize(user_emb.weight, dim=1)
    facts = {
        "tokens": len(vocab),
        "items_with_features": sum(1 for ts in tokens if ts),
        "new_items": int((~trained).sum()),
        "history": history,
    }
    return users_v.numpy().astype(np.float32), items_v.numpy().astype(np.float32), facts
