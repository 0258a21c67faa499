"""The two-tower model: item features, new (cold-start) items recommended from their
features, the same package / serving path as matrix factorization."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import foundry
from foundry.errors import DataError
from foundry.recommend.planted import planted_interactions, planted_item_features
from foundry.recommend.two_tower import feature_tokens


def _config(root, **model):
    planted_interactions(160, seed=6).to_csv(root / "events.csv", index=False)
    planted_item_features().to_csv(root / "items.csv", index=False)
    return {
        "name": "towers",
        "data": {"path": str(root / "events.csv")},
        "recommend": {
            "user": "user",
            "item": "item",
            "time": "ts",
            "item_features": str(root / "items.csv"),
        },
        "model": {
            "type": "two_tower",
            "dim": 16,
            "epochs": 30,
            "batch_size": 128,
            "lr": 0.02,
            **model,
        },
        "output_dir": str(root / "runs"),
    }


def test_feature_tokens_split_values_and_skip_missing():
    df = pd.DataFrame({"item": ["a", "b", "c"], "genre": ["x|y", None, "z"]})
    assert feature_tokens(df, "item", ["b", "a", "d"]) == [[], ["genre=x", "genre=y"], []]
    with pytest.raises(DataError, match="'sku'"):
        feature_tokens(df, "sku", ["a"])


def test_two_tower_beats_popularity_and_recommends_new_items_by_features(tmp_path):
    result = foundry.train(_config(tmp_path), progress=False, quiet=True)
    metrics = result.metrics
    assert metrics["recall@10"] > metrics["popularity"]["recall@10"] + 0.2
    model = foundry.load(result.model_ref)
    assert "n0_0" in model.items and model.popularity[model.item_index["n0_0"]] == 0
    # group-0 users (u0, u4, ...): their group's new items above every other group's
    wins = 0
    users = [f"u{u}" for u in range(0, 160, 4)]
    for user in users:
        ranked = [r["item"] for r in model.recommend(user, k=len(model.items))["items"]]
        new = [i for i in ranked if i.startswith("n")]
        wins += set(new[:2]) == {"n0_0", "n0_1"}
    assert wins >= 0.8 * len(users)
    # and the package gives what training gave
    np.testing.assert_array_equal(
        result.model.score_matrix(users[:3]), model.score_matrix(users[:3])
    )
    newcomer = model.recommend(items=["i0", "i1", "i2"], k=5)
    assert newcomer["source"] == "model"
    group0 = [
        i
        for i in (r["item"] for r in newcomer["items"])
        if i.startswith("n0") or (i.startswith("i") and int(i[1:]) < 10)
    ]
    assert len(group0) >= 4
