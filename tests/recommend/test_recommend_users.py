"""The two-tower's user tower: a user feature table (recommend.user_features) places a
user unseen in training by their features (cold-start users); with neither features nor
items, popularity. The same answers from Python, the served route and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from tests.recommend.recommend_support import recommend_app
from tests.serve.serve_app_support import bearer, serving

import foundry
from foundry.errors import ModelError
from foundry.recommend.planted import planted_interactions, planted_user_features

pytestmark = pytest.mark.anyio

TRAINED_USERS = 80
"""Users u0..u79 train; u80..u119 are new: in the feature table, not in the events."""
ALL_USERS = 120


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("users")
    events = planted_interactions(ALL_USERS, seed=7)
    held = events[events.user.str[1:].astype(int) >= TRAINED_USERS]
    events[~events.index.isin(held.index)].to_csv(root / "events.csv", index=False)
    planted_user_features(ALL_USERS).to_csv(root / "users.csv", index=False)
    config = {
        "name": "usertower",
        "data": {"path": str(root / "events.csv")},
        "recommend": {
            "user": "user",
            "item": "item",
            "time": "ts",
            "user_features": str(root / "users.csv"),
        },
        "model": {"type": "two_tower", "dim": 16, "epochs": 10, "batch_size": 128, "lr": 0.02},
        "output_dir": str(root / "runs"),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(root / "home"))
        result = foundry.train(config, progress=False, quiet=True)
    features = planted_user_features(ALL_USERS).set_index("user")
    new_users = {
        user: (
            {"segment": features.loc[user, "segment"], "age": int(features.loc[user, "age"])},
            set(group.item),
        )
        for user, group in held.groupby("user")
    }
    return result, root / "home", new_users


def _same(answer: dict, expected: dict) -> None:
    """The same source and items, scores equal to float32 rounding."""
    assert answer["source"] == expected["source"]
    assert [r["item"] for r in answer["items"]] == [r["item"] for r in expected["items"]]
    assert [r["score"] for r in answer["items"]] == pytest.approx(
        [r["score"] for r in expected["items"]], rel=1e-5
    )


def _recall(lists: list[list[str]], truths: list[set[str]]) -> float:
    return float(
        np.mean([len(set(top) & t) / len(t) for top, t in zip(lists, truths, strict=True)])
    )


def test_new_users_with_features_beat_popularity_and_the_package_keeps_the_encoder(
    trained, monkeypatch
):
    result, home, new_users = trained
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    model = foundry.load(result.model_ref)
    tower, popular, truths = [], [], []
    for user, (features, items) in new_users.items():
        answer = model.recommend(user, user_features=features, k=10)
        assert answer["source"] == "model"
        tower.append([r["item"] for r in answer["items"]])
        nothing = model.recommend(user, k=10)
        assert nothing["source"] == "popularity"
        popular.append([r["item"] for r in nothing["items"]])
        truths.append(items)
    # a user's segment decides their block: the tower finds it, popularity cannot
    assert _recall(tower, truths) > _recall(popular, truths) + 0.3
    # the package's encoder is training's (JSON vocabulary + safetensors vectors)
    user, (features, _) = next(iter(new_users.items()))
    _same(
        model.recommend(user_features=features, k=5),
        result.model.recommend(user_features=features, k=5),
    )
    stored = json.loads((result.package_path / "user_features.json").read_text())
    assert stored["columns"] == {"segment": "text", "age": "number", "device": "text"}
    assert not list(result.package_path.rglob("*.pkl"))
    # recent items as well as features: still the model, their items left out
    both = model.recommend(items=["i0"], user_features=features, k=5)
    assert both["source"] == "model" and "i0" not in [r["item"] for r in both["items"]]
    with pytest.raises(ModelError, match="user_features.colour"):
        model.recommend(user_features={"colour": "red"})
    with pytest.raises(ModelError, match="user_features.age"):
        model.recommend(user_features={"age": "old"})


async def test_served_user_features_answer_as_python_and_bad_fields_are_422(trained, tmp_path):
    result, home, new_users = trained
    model = result.model
    app, gate = recommend_app(result.model_ref, home, tmp_path / "gate")
    key = gate.create_key("acme", "test").key
    (_, (features, _)), (_, (other, _)) = list(new_users.items())[:2]
    queries = [
        {"user_features": features, "k": 5},
        {"user_features": other, "items": ["i3"], "k": 4},
        {"user": "u1", "k": 3},
    ]
    url = "/v1/models/usertower/recommend"
    async with serving(app) as client:
        good = await client.post(url, json={"queries": queries}, headers=bearer(key))
        unknown = await client.post(
            url, json={"user_features": {"colour": "red"}}, headers=bearer(key)
        )
        wrong = await client.post(url, json={"user_features": {"age": "old"}}, headers=bearer(key))
    assert good.status_code == 200, good.text
    expected = [
        model.recommend(user_features=features, k=5),
        model.recommend(items=["i3"], user_features=other, k=4),
        model.recommend("u1", k=3),
    ]
    for served, local in zip(good.json()["recommendations"], expected, strict=True):
        assert served["source"] == "model"
        _same(served, local)
    assert unknown.status_code == 422 and unknown.json()["error"]["param"] == "user_features.colour"
    assert "segment" in unknown.json()["error"]["message"]  # the fields it does know
    assert wrong.status_code == 422 and wrong.json()["error"]["param"] == "user_features.age"


def test_cli_user_features(trained, monkeypatch):
    from typer.testing import CliRunner

    from foundry.cli import app

    result, home, new_users = trained
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    features = next(iter(new_users.values()))[0]
    out = CliRunner().invoke(
        app,
        ["recommend", result.model_ref, "--user-features", json.dumps(features), "-k", "4"]
        + ["--json"],
    )
    assert out.exit_code == 0, out.output
    answer = json.loads(out.stdout)
    assert answer["source"] == "model"
    _same(answer, result.model.recommend(user_features=features, k=4))


def test_init_writes_a_two_tower_config_with_the_user_table(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from foundry.cli import app

    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path / "home"))
    planted_interactions(40, seed=3).to_csv(tmp_path / "events.csv", index=False)
    planted_user_features(40).to_csv(tmp_path / "users.csv", index=False)
    (tmp_path / "conf").mkdir()
    args = ["init", str(tmp_path / "events.csv"), "--task", "recommend", "-q"]
    out = CliRunner().invoke(
        app,
        [
            *args,
            "--user-features",
            str(tmp_path / "users.csv"),
            "-o",
            str(tmp_path / "conf/c.yaml"),
        ],
    )
    assert out.exit_code == 0, out.output
    config = yaml.safe_load((tmp_path / "conf/c.yaml").read_text())
    assert config["recommend"]["user_features"] == "../users.csv"  # relative to the config
    assert config["model"]["type"] == "two_tower"
    result = foundry.train(tmp_path / "conf/c.yaml", progress=False, quiet=True)
    assert result.model.user_encoder is not None
    assert set(result.model.user_encoder.columns) == {"segment", "age", "device"}
    # a table keyed by another column is refused, naming the column it lacks
    planted_user_features(40).rename(columns={"user": "uid"}).to_csv(tmp_path / "bad.csv")
    refused = CliRunner().invoke(
        app, [*args, "--user-features", str(tmp_path / "bad.csv"), "-o", str(tmp_path / "d.yaml")]
    )
    assert refused.exit_code != 0 and "'user'" in str(refused.exception)
