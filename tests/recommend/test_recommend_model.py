"""Interactions data, splits, ranking metrics and the popularity / mf models, on tiny
tables (the served route: test_recommend_serve.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from tests.recommend.recommend_support import planted_config

import foundry
from foundry.config.schema import MFConfig, PopularityConfig, RecommendConfig
from foundry.errors import DataError, FoundryError
from foundry.recommend.data import interactions_from_frame, split_interactions
from foundry.recommend.fit import evaluate_recommender, fit_recommender
from foundry.recommend.metrics import ranking_metrics
from foundry.recommend.model import top_k
from foundry.recommend.planted import planted_interactions

REC = RecommendConfig(user="user", item="item", weight="weight", time="ts")


def _table(rows):
    return pd.DataFrame(rows, columns=["user", "item", "weight", "ts"])


# ------------------------------------------------------------------ data and splits


def test_temporal_split_holds_out_each_users_latest():
    rows = [("a", f"x{t}", 1, t) for t in (5, 1, 4, 2, 3)]  # out of order in the file
    rows += [("b", "x1", 1, 10), ("b", "x9", 1, 30), ("b", "x2", 1, 20)]
    rows += [("c", "x3", 1, 7)]  # one interaction: stays in training
    data = interactions_from_frame(_table(rows), REC)
    rec = RecommendConfig(user="user", item="item", time="ts", test=0.4, val=0.2)
    splits = split_interactions(data, rec)

    def events(part):
        return sorted(
            (part.users[u], part.items[i]) for u, i in zip(part.user, part.item, strict=True)
        )

    assert events(splits.test) == [("a", "x4"), ("a", "x5"), ("b", "x9")]
    assert events(splits.val) == [("a", "x3"), ("b", "x2")]
    assert events(splits.train) == [("a", "x1"), ("a", "x2"), ("b", "x1"), ("c", "x3")]


def test_random_split_is_seeded_and_keeps_a_training_interaction_per_user():
    df = planted_interactions(40, seed=1)
    data = interactions_from_frame(df, REC)
    first = split_interactions(data, RecommendConfig(split="random", seed=3))
    again = split_interactions(data, RecommendConfig(split="random", seed=3))
    other = split_interactions(data, RecommendConfig(split="random", seed=4))
    np.testing.assert_array_equal(first.test.item, again.test.item)
    assert not np.array_equal(first.test.item, other.test.item)
    assert set(first.train.user.tolist()) == set(range(len(data.users)))
    assert len(first.test) == 40 * 2  # 20% of 8 per user, rounded


def test_temporal_split_without_a_time_column_names_the_key():
    data = interactions_from_frame(_table([("a", "x", 1, 0)]), RecommendConfig())
    with pytest.raises(DataError, match="recommend.time"):
        split_interactions(data, RecommendConfig())


def test_a_missing_column_is_named_with_its_key():
    with pytest.raises(DataError, match=r"'product' \(recommend.item\)"):
        interactions_from_frame(_table([("a", "x", 1, 0)]), RecommendConfig(item="product"))


def test_dates_and_numeric_ids_are_read():
    df = pd.DataFrame(
        {
            "user": [1, 1, 2],
            "item": [10.0, 11.0, 10.0],
            "ts": ["2024-01-02", "2024-01-01", "2024-03-01"],
        }
    )
    data = interactions_from_frame(df, RecommendConfig(time="ts"))
    assert data.users == ["1", "2"] and data.items == ["10", "11"]
    assert data.time[0] > data.time[1]


# ------------------------------------------------------------------ metrics


def test_metrics_match_hand_computed_values():
    # user 1: held {1, 5}, list [1, 2, 5] -> hits at ranks 0 and 2
    # user 2: held {9}, list [3, 4, 6]    -> no hit
    got = ranking_metrics([([1, 2, 5], {1, 5}), ([3, 4, 6], {9})], k=3, n_items=10)
    d = [1 / math.log2(r + 2) for r in range(3)]
    ndcg1 = (d[0] + d[2]) / (d[0] + d[1])
    assert got["recall@3"] == pytest.approx((2 / 2 + 0) / 2)
    assert got["ndcg@3"] == pytest.approx(ndcg1 / 2)
    assert got["hit_rate@3"] == pytest.approx(0.5)
    assert got["map@3"] == pytest.approx(((1 / 1 + 2 / 3) / 2) / 2)
    assert got["coverage@3"] == pytest.approx(6 / 10)
    assert got["users"] == 2


def test_recall_is_normalised_by_k_when_more_items_are_held_out():
    got = ranking_metrics([([0, 1], {0, 1, 2, 3})], k=2, n_items=4)
    assert got["recall@2"] == 1.0 and got["ndcg@2"] == pytest.approx(1.0)


def test_top_k_excludes_banned_items_and_sorts():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3], np.float32)
    top, values = top_k(scores, 3, np.array([1]))
    assert top.tolist() == [3, 2, 4]
    np.testing.assert_allclose(values, [0.7, 0.5, 0.3])
    assert top_k(scores, 10, np.array([0, 1]))[0].tolist() == [3, 2, 4]


# ------------------------------------------------------------------ models


def _planted_splits():
    data = interactions_from_frame(planted_interactions(160, seed=2), REC)
    return split_interactions(data, REC)


def test_mf_beats_popularity_on_planted_data():
    splits = _planted_splits()
    mf, _ = fit_recommender(splits.train, MFConfig(factors=8, iterations=8), REC, seed=0)
    pop, _ = fit_recommender(splits.train, PopularityConfig(), REC, seed=0)
    got = evaluate_recommender(mf, splits, "test", k=10)
    base = evaluate_recommender(pop, splits, "test", k=10)
    assert got["recall@10"] > 0.6
    assert got["recall@10"] > base["recall@10"] + 0.3
    assert got["ndcg@10"] > base["ndcg@10"]


def test_seen_items_are_excluded_and_unknown_users_get_popularity():
    splits = _planted_splits()
    mf, _ = fit_recommender(splits.train, MFConfig(factors=8, iterations=4), REC, seed=0)
    user = mf.users[0]
    seen = {mf.items[i] for i in mf.seen(0)}
    listed = [r["item"] for r in mf.recommend(user, k=len(mf.items))["items"]]
    assert seen and not seen & set(listed)
    assert len(listed) == len(mf.items) - len(seen)
    kept = [r["item"] for r in mf.recommend(user, k=len(mf.items), exclude_seen=False)["items"]]
    assert seen <= set(kept)
    stranger = mf.recommend("nobody", k=5)
    assert stranger["source"] == "popularity"
    order = np.argsort(-mf.popularity, kind="stable")
    assert [r["score"] for r in stranger["items"]] == mf.popularity[order[:5]].tolist()


def test_recent_items_fold_a_new_user_into_their_group():
    splits = _planted_splits()
    mf, _ = fit_recommender(splits.train, MFConfig(factors=8, iterations=8), REC, seed=0)
    # i0..i9 are group 0's block: a newcomer who took three of them gets the rest
    answer = mf.recommend(items=["i0", "i1", "i2"], k=5)
    assert answer["source"] == "model"
    got = [r["item"] for r in answer["items"]]
    assert not {"i0", "i1", "i2"} & set(got)
    assert sum(int(i[1:]) < 10 for i in got) >= 4


def test_train_package_load_gives_the_same_scores(tmp_path):
    model = {"type": "mf", "factors": 4, "iterations": 3}
    config = planted_config(tmp_path, "rec-pkg", model, n_users=60, seed=3)
    df = pd.read_csv(tmp_path / "events.csv")
    result = foundry.train(config, progress=False, quiet=True)
    assert result.metrics["recall@10"] >= 0 and "recall@10" in result.metrics["popularity"]
    loaded = foundry.load(result.model_ref)
    users = ["u0", "u5", "unknown"]
    np.testing.assert_array_equal(result.model.score_matrix(users), loaded.score_matrix(users))
    assert loaded.recommend("u5", k=4) == result.model.recommend("u5", k=4)
    with pytest.raises(FoundryError, match="recommender"):
        loaded.predict(df)
    card = (result.package_path / "card.md").read_text()
    assert "| recall@10 |" in card and "popularity" in card


def test_a_recommender_config_needs_no_target_but_a_table_model_does():
    from foundry.config import load_config

    cfg = load_config({"data": {"path": "x.csv"}, "model": {"type": "popularity"}}).config
    assert cfg.is_recommender
    with pytest.raises(FoundryError, match="features.target"):
        load_config({"data": {"path": "x.csv"}, "model": {"type": "mlp"}})


def test_approximate_index_is_packaged_checksummed_and_ranks_as_exact(tmp_path):
    pytest.importorskip("faiss")
    from dataclasses import replace

    from foundry.recommend.index import INDEX_FILE

    model = {"type": "mf", "factors": 8, "iterations": 3}
    config = planted_config(tmp_path, "rec-ann", model, n_users=120, seed=5)
    # recall 1.0: probe until the index's top 10 is exact top 10 on the sample users
    config["recommend"].update({"index": "approximate", "index_recall": 1.0})
    result = foundry.train(config, progress=False, quiet=True)
    described = json.loads((result.package_path / "foundry.json").read_text())["recommend"]
    assert described["index"]["recall@10_vs_exact"] == 1.0
    loaded = foundry.load(result.model_ref)
    assert loaded.index is not None
    exact = replace(loaded, index=None)
    for user in ("u0", "u7", "u33"):
        got = loaded.recommend(user, k=5)
        assert [e["item"] for e in got["items"]] == [
            e["item"] for e in exact.recommend(user, k=5)["items"]
        ]
        seen = {loaded.items[i] for i in loaded.seen(loaded.user_index[user]).tolist()}
        assert not seen & {e["item"] for e in got["items"]}
    # a served batch goes through the index too, each query cut to its own k
    from foundry.serve.served_recommender import ServedRecommender

    served = ServedRecommender.from_model(loaded)
    answers = served.forward_records([{"user": "u0", "k": 5}, {"user": "u7", "k": 3}])
    assert answers == [loaded.recommend("u0", k=5), loaded.recommend("u7", k=3)]
    # the index file is covered by the package's checksums like the weights
    path = result.package_path / INDEX_FILE
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(FoundryError, match=INDEX_FILE):
        foundry.load(result.model_ref)


def test_index_probes_enough_cells_for_the_recall_asked():
    pytest.importorskip("faiss")
    from foundry.recommend.index import build_item_index

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((40, 16), dtype=np.float32)
    items = centers[rng.integers(0, 40, 4000)] + 0.7 * rng.standard_normal((4000, 16), np.float32)
    users = rng.standard_normal((300, 16), dtype=np.float32)
    index = build_item_index(items, queries=users[:100], recall=0.9, seed=0)
    assert index.cells > 1 and index.recall >= 0.9
    # on users it was not tuned on, close to what it measured, and exact scores
    found = index.search(items, users[100:], 10, [None] * 200)
    exact = np.argsort(-(users[100:] @ items.T), axis=1)[:, :10]
    overlap = np.mean(
        [
            len(set(f.tolist()) & set(e.tolist())) / 10
            for (f, _), e in zip(found, exact, strict=True)
        ]
    )
    assert overlap >= 0.85
    top, scores = found[0]
    np.testing.assert_allclose(scores, items[top] @ users[100], rtol=1e-5)


def test_tune_searches_recommender_settings_on_validation_ndcg(tmp_path):
    from foundry.tuning import tune

    model = {"type": "mf", "factors": 4, "iterations": 2}
    config = planted_config(tmp_path, "rec-tune", model, n_users=60, seed=2)
    config["recommend"]["val"] = 0.2
    config["tune"] = {
        "metric": "ndcg@10",
        "n_trials": 2,
        "sampler": "grid",
        "params": {"model.alpha": {"type": "choice", "values": [1.0, 40.0]}},
    }
    result = tune(config, quiet=True)
    assert result.metric == "val_ndcg@10" and result.direction == "maximize"
    values = sorted(t["value"] for t in result.trials)
    assert len(values) == 2 and all(0 <= v <= 1 for v in values)
    best = next(t for t in result.trials if t["trial"] == result.best_trial)
    assert best["value"] == values[-1]


def test_init_on_a_movielens_shaped_table_trains_past_popularity(tmp_path):
    import yaml

    from foundry.recommend.fit import AUTO_ALPHAS, AUTO_REGULARIZATIONS
    from foundry.recommend.init import init_recommend_config
    from foundry.recommend.planted import ratings_table

    ratings_table(200, 300, per_user=30, seed=1).to_csv(tmp_path / "ratings.csv", index=False)
    path = init_recommend_config(tmp_path / "ratings.csv", output=tmp_path / "config.yaml")
    config = yaml.safe_load(path.read_text())
    assert config["recommend"] == {
        "user": "userId",
        "item": "movieId",
        "weight": "rating",
        "time": "timestamp",
        "split": "temporal",
        "test": 0.2,
        "val": 0.0,
        "k": 10,
    }
    result = foundry.train(
        str(path), ["output_dir=" + str(tmp_path / "runs")], progress=False, quiet=True
    )
    assert result.metrics["ndcg@10"] > 1.2 * result.metrics["popularity"]["ndcg@10"]
    chosen = json.loads((result.package_path / "foundry.json").read_text())["recommend"]
    assert chosen["alpha"] in AUTO_ALPHAS
    assert chosen["regularization"] in AUTO_REGULARIZATIONS


def test_compress_report_and_dashboard_show_the_ranking_metrics(tmp_path):
    from foundry.compression import compress
    from foundry.config.schema import CompressConfig

    model = {"type": "mf", "factors": 64, "iterations": 3}  # item vectors outweigh the rest
    config = planted_config(tmp_path, "rec-int8", model, n_users=80, seed=4)
    trained = foundry.train(config, progress=False, quiet=True)
    result = compress(
        trained.model_ref, CompressConfig(methods=["int8", "onnx"]), out_dir=tmp_path / "c"
    )
    parent, int8 = result.variants
    assert int8.method == "int8" and "onnx" in result.skipped
    assert parent.metrics["ndcg@10"] == trained.metrics["ndcg@10"]
    assert int8.deltas["ndcg@10"] == pytest.approx(
        int8.metrics["ndcg@10"] - parent.metrics["ndcg@10"], abs=1e-6
    )
    assert int8.size_bytes < parent.size_bytes
    loaded = foundry.load(int8.ref)
    original = foundry.load(trained.model_ref)
    # within int8 rounding of the parent's vectors, and it recommends
    np.testing.assert_allclose(loaded.item_factors, original.item_factors, atol=0.01)
    assert len(loaded.recommend("u1", k=5)["items"]) == 5
    assert "ndcg@10" in (result.report_dir / "compress.md").read_text()
    # the report and the dashboard show the ranking metrics beside the baseline's
    from foundry.registry import Registry
    from foundry.report import write_report
    from foundry.serve.dashboard_models import bare_summary

    report = write_report(trained.model_ref, tmp_path / "report.html")
    page = report.path.read_text()
    assert "popularity baseline (test split)" in page and "ndcg@10" in page
    summary = bare_summary(Registry().resolve(trained.model_ref))
    assert summary["key_metric"] == {
        "name": "ndcg@10",
        "value": trained.metrics["ndcg@10"],
        "baseline": trained.metrics["popularity"]["ndcg@10"],
    }
