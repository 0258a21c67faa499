"""A recommender end to end: `foundry init --task recommend` infers the columns, the
config trains, `foundry recommend` answers on the CLI, and POST /v1/models/{name}/recommend
answers through the real app (key, metering, batcher) what the loaded model does."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from tests.recommend.recommend_support import planted_config, recommend_app
from tests.serve.serve_app_support import bearer, serving

import foundry
from foundry.errors import ConfigError, ModelError
from foundry.recommend.init import infer_interaction_columns
from foundry.recommend.planted import planted_interactions

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


# ------------------------------------------------------------------ init


def test_init_infers_named_columns():
    df = pd.DataFrame(
        {
            "userId": [1, 1, 2, 2],
            "movieId": [10, 11, 10, 12],
            "rating": [4.0, 3.5, 5.0, 1.0],
            "timestamp": [964982703, 964981247, 964982224, 964983815],
        }
    )
    assert infer_interaction_columns(df) == {
        "user": "userId",
        "item": "movieId",
        "weight": "rating",
        "time": "timestamp",
    }


def test_init_infers_unnamed_columns_by_shape():
    # a: 2 ids with 3 rows each (the users); b: 4 ids; when: dates
    df = pd.DataFrame(
        {
            "b": ["x", "y", "z", "x", "w", "y"],
            "a": ["p", "p", "p", "q", "q", "q"],
            "when": pd.date_range("2024-01-01", periods=6).astype(str),
        }
    )
    got = infer_interaction_columns(df)
    assert got == {"user": "a", "item": "b", "weight": None, "time": "when"}


def test_init_writes_a_config_that_trains(tmp_path):
    planted_interactions(60, seed=4).rename(columns={"ts": "time"}).to_csv(
        tmp_path / "events.csv", index=False
    )
    path = foundry.init(
        tmp_path / "events.csv", None, task="recommend", output=tmp_path / "config.yaml"
    )
    config = yaml.safe_load(path.read_text())
    wanted = {
        "user": "user",
        "item": "item",
        "weight": "weight",
        "time": "time",
        "split": "temporal",
    }
    assert {k: config["recommend"][k] for k in wanted} == wanted
    config["model"].update(factors=4, iterations=2)
    config["output_dir"] = str(tmp_path / "runs")
    result = foundry.train(
        config | {"data": {"path": str(tmp_path / "events.csv")}}, progress=False, quiet=True
    )
    assert result.metrics["users"] > 0


def test_init_refuses_an_unknown_task_and_a_missing_target(tmp_path):
    planted_interactions(10).to_csv(tmp_path / "e.csv", index=False)
    with pytest.raises(ConfigError, match="--task ranking"):
        foundry.init(tmp_path / "e.csv", None, task="ranking", output=tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="--target"):
        foundry.init(tmp_path / "e.csv", None, output=tmp_path / "c.yaml")


# ------------------------------------------------------------------ serving and CLI


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("recommend")
    model = {"type": "mf", "factors": 4, "iterations": 4}
    config = planted_config(root, "picks", model, n_users=80, seed=5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(root / "home"))
        result = foundry.train(config, progress=False, quiet=True)
    return result, root / "home"


async def test_recommend_route_answers_as_the_model_and_is_metered(trained, tmp_path):
    result, home = trained
    model = result.model
    app, gate = recommend_app(result.model_ref, home, tmp_path / "gate")
    key = gate.create_key("acme", "test").key
    queries = [
        {"user": "u1", "k": 5},
        {"user": "stranger", "k": 3},
        {"items": ["i0", "i1"], "k": 4},
        {"user": "u2", "k": 3, "exclude_seen": False},
    ]
    async with serving(app) as client:
        one = await client.post("/v1/models/picks/recommend", json=queries[0], headers=bearer(key))
        many = await client.post(
            "/v1/models/picks/recommend", json={"queries": queries}, headers=bearer(key)
        )
        usage = (await client.get("/v1/usage", headers=bearer(key))).json()
        no_key = await client.post("/v1/models/picks/recommend", json=queries[0])
        predict = await client.post(
            "/v1/models/picks/predict", json=queries[0], headers=bearer(key)
        )
        bad = await client.post(
            "/v1/models/picks/recommend", json={"user": "u1", "k": 0}, headers=bearer(key)
        )
    assert one.status_code == 200, one.text
    assert one.json()["usage"] == {"units": 1}
    assert len(one.json()["recommendations"][0]["items"]) == 5
    body = many.json()
    assert body["model"] == result.model_ref and body["usage"] == {"units": 4}
    expected = [
        model.recommend("u1", k=5),
        model.recommend("stranger", k=3),
        model.recommend(items=["i0", "i1"], k=4),
        model.recommend("u2", k=3, exclude_seen=False),
    ]
    for served, local in zip(body["recommendations"], expected, strict=True):
        assert served["source"] == local["source"]
        assert [r["item"] for r in served["items"]] == [r["item"] for r in local["items"]]
        assert [r["score"] for r in served["items"]] == pytest.approx(
            [r["score"] for r in local["items"]], rel=1e-5
        )
    assert body["recommendations"][1]["source"] == "popularity"
    seen = {model.items[i] for i in model.seen(model.user_index["u1"])}
    assert not seen & {r["item"] for r in body["recommendations"][0]["items"]}
    assert usage["units_used"] == 1 + 4 and usage["requests"] == 2  # one unit a query
    assert no_key.status_code == 401
    assert predict.status_code == 400 and "recommend" in predict.json()["error"]["message"]
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "k"


def test_cli_recommends_for_a_user_and_for_recent_items(trained, monkeypatch):
    from typer.testing import CliRunner

    from foundry.cli import app

    result, home = trained
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    runner = CliRunner()
    out = runner.invoke(app, ["recommend", result.model_ref, "--user", "u3", "-k", "4", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["items"] == result.model.recommend("u3", k=4)["items"]
    text = runner.invoke(app, ["recommend", result.model_ref, "--items", "i0,i1", "-k", "2"])
    expected = result.model.recommend(items=["i0", "i1"], k=2)["items"]
    assert [line.split()[1] for line in text.stdout.splitlines()[1:]] == [
        r["item"] for r in expected
    ]
    refused = runner.invoke(app, ["recommend", result.model_ref])
    assert refused.exit_code != 0 and "--user" in str(refused.exception)
    # mf reads no user features: refused, naming the field, not silently ignored
    with pytest.raises(ModelError, match="user_features.age.*reads no user features"):
        result.model.recommend("u3", user_features={"age": 30})


def test_cost_prices_a_recommendation(tmp_path):
    from foundry.config.schema import CostConfig
    from foundry.economics import estimate

    config = planted_config(tmp_path, "rec-cost", {"type": "popularity"}, n_users=40, seed=6)
    ref = foundry.train(config, progress=False, quiet=True).model_ref
    cost = CostConfig(measure_seconds=0.3)
    # in process (measure: server starts `foundry serve`, ~40 s on the loaded CI machine)
    economics = estimate(ref, cost, measure="model")
    assert economics.kind == "recommend" and economics.unit == "prediction"
    assert economics.throughput.single > 0 and economics.cost_per_1k > 0
    assert "training users" in economics.throughput.source
