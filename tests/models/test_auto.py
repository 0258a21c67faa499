"""model.type auto (foundry.families.auto): the time-budgeted model search.

The registered package is the winner's own (its family's conformance covers it; the
`auto` example in family_examples.py runs the suite through a search). These tests cover
what is particular to the search: every candidate trained on the same split and scored
on the same validation rows, the best registered, the budget respected, the leaderboard
in the run's JSON, the report and the dashboard."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.report.report_html import read_page
from tests.serve.serve_app_support import bearer, serving
from typer.testing import CliRunner

import foundry
from foundry.config import load_config
from foundry.errors import ConfigError
from foundry.registry import Registry

ADMIN = "dashboard-admin-token-0123456789"


def _table(path: Path, n: int = 240) -> Path:
    """tier from age and color, with noise: neither candidate is perfect."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "age": rng.normal(40, 10, n).round(1),
            "color": rng.choice(["red", "green", "blue"], n),
            "score": rng.normal(0, 1, n).round(3),
        }
    )
    signal = df.age + (df.color == "red") * 10 + rng.normal(0, 4, n)
    df["tier"] = np.where(signal > 45, "high", "low")
    df.to_csv(path, index=False)
    return path


def _config(root: Path, **model) -> dict:
    return {
        "name": "search",
        "data": {"path": str(_table(root / "table.csv"))},
        "features": {"target": "tier"},
        "model": {
            "type": "auto",
            "overrides": {"mlp": {"layers": [8]}, "gbm": {"n_estimators": 60}},
            **model,
        },
        "train": {"epochs": 3, "batch_size": 32, "num_threads": 1},
        "output_dir": str(root / "runs"),
    }


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """(TrainResult, registry home) of one search over gbm and mlp with room for both."""
    root = tmp_path_factory.mktemp("auto")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(home))
        result = foundry.train(_config(root, budget="10m"), progress=False, quiet=True)
    return result, home


def _board(result) -> dict:
    return json.loads((result.package_path / "foundry.json").read_text())["leaderboard"]


@pytest.mark.slow
def test_the_best_candidate_by_validation_accuracy_is_registered_as_itself(searched, monkeypatch):
    from foundry.console import Reporter
    from foundry.data.dataset import load_splits

    result, home = searched
    board = _board(result)
    assert board["metric"] == "accuracy" and board["goal"] == "max"
    rows = {row["model"]: row for row in board["rows"]}
    assert set(rows) == {"gbm", "mlp", "ensemble"}  # the ensemble of the two, if_better
    assert all(row["status"] in ("best", "trained") for row in rows.values())
    # each candidate's own package, scored again here on the validation rows the run used
    ran = load_config(json.loads((result.run_dir / "config.json").read_text()))
    splits, _ = load_splits(ran, Reporter(quiet=True))
    accuracy = {}
    for name in rows:
        model = foundry.load(result.run_dir / "candidates" / name / "package")
        predicted = model.predict(splits.val)["tier"]
        accuracy[name] = float(np.mean(predicted.to_numpy() == splits.val["tier"].to_numpy()))
        assert rows[name]["metric"] == pytest.approx(accuracy[name])
        assert rows[name]["fit_seconds"] > 0 and rows[name]["predict_ms_per_1k"] > 0
        assert rows[name]["package_bytes"] > 0
    winner = board["winner"]
    assert rows[winner]["status"] == "best"
    assert accuracy[winner] == max(accuracy.values())
    assert board["rows"][0]["model"] == winner  # ranked best first
    # the ensemble is registered only when it beats every single candidate (ties: not)
    singles = max(accuracy["gbm"], accuracy["mlp"])
    assert (winner == "ensemble") == (accuracy["ensemble"] > singles)

    manifest = Registry(home).load(result.model_ref).manifest
    assert manifest["config"]["model"]["type"] == winner  # the winner's own package
    assert "leaderboard" in manifest
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    loaded = foundry.load(result.model_ref)
    batch = splits.test.drop(columns=["tier"])
    pd.testing.assert_frame_equal(loaded.predict(batch), result.model.predict(batch))


@pytest.mark.slow
@pytest.mark.parametrize("order", [["gbm", "mlp"], ["mlp", "gbm"]])
def test_a_spent_budget_stops_the_first_candidate_and_skips_the_rest(order, tmp_path):
    """The first candidate always trains (a search has a winner), ended by the budget at
    its best round / epoch so far (StopTraining); the next is skipped and says why. Run
    through `foundry train --json`, which prints the leaderboard."""
    from foundry.cli import app

    config = _config(tmp_path, budget="0.01s", candidates=order)
    config["train"]["epochs"] = 50
    config["model"]["overrides"]["gbm"]["n_estimators"] = 500
    path = tmp_path / "search.yaml"
    path.write_text(json.dumps(config))
    answer = CliRunner().invoke(
        app, ["train", str(path), "--json"], env={"FOUNDRY_HOME": str(tmp_path / "home")}
    )
    assert answer.exit_code == 0, answer.output
    board = json.loads(answer.stdout)["leaderboard"]
    first, second = board["rows"]
    assert first["model"] == order[0] and first["status"] == "best"
    assert first["note"].startswith("stopped by the budget")
    assert first["epochs"] < (500 if order[0] == "gbm" else 50)
    assert second["model"] == order[1] and second["status"] == "skipped"
    assert "budget was spent" in second["note"] and second["metric"] is None


@pytest.mark.slow
def test_an_ensemble_holds_its_members_packages_and_predicts_their_weighted_mean(tmp_path):
    """`ensemble: always`: registered whatever it scores. Its package holds each member's
    own package; its probabilities are the weighted mean of the members'."""
    config = _config(tmp_path, budget="2m", ensemble="always")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(tmp_path / "home"))
        result = foundry.train(config, progress=False, quiet=True)
        loaded = foundry.load(result.model_ref)
    manifest = Registry(tmp_path / "home").load(result.model_ref).manifest
    assert manifest["config"]["model"]["type"] == "ensemble"
    assert _board(result)["winner"] == "ensemble"
    members = manifest["ensemble"]["members"]
    assert sum(m["weight"] for m in members) == pytest.approx(1.0)
    batch = pd.read_csv(tmp_path / "table.csv").drop(columns=["tier"]).head(20)
    mean = sum(
        m["weight"] * foundry.load(result.package_path / m["dir"]).predict_proba(batch)
        for m in members
    )
    # then the temperature calibration fitted on the ensemble's validation outputs
    scaled = np.exp(np.log(mean) / manifest["calibration"]["temperature"])
    expected = scaled / scaled.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loaded.predict_proba(batch), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_a_candidate_that_cannot_take_the_inputs_fails_without_ending_the_search(tmp_path):
    config = _config(tmp_path, budget="1m", candidates=["cnn", "gbm"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(tmp_path / "home"))
        result = foundry.train(config, progress=False, quiet=True)
    board = _board(result)
    assert [row["model"] for row in board["rows"]] == ["gbm", "cnn"]  # trained first
    gbm, cnn = board["rows"]
    assert gbm["status"] == "best" and board["winner"] == "gbm"
    assert cnn["status"] == "failed" and "image input" in cnn["note"]


@pytest.mark.parametrize("budget", ["5 minutes", "m5", "-1m", "0", "", "1d"])
def test_a_bad_budget_names_model_budget(budget, tmp_path):
    with pytest.raises(ConfigError, match=r"model\.budget"):
        load_config(_config(tmp_path, budget=budget))


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("90", 90), (45, 45), ("1.5m", 90)],
)
def test_a_budget_is_a_duration_or_seconds(written, seconds, tmp_path):
    assert load_config(_config(tmp_path, budget=written)).config.model.budget == seconds


def test_a_bad_override_names_the_candidate_and_key(tmp_path):
    with pytest.raises(ConfigError, match=r"overrides\.mlp\.layrs"):
        load_config(_config(tmp_path, overrides={"mlp": {"layrs": [8]}}))
    with pytest.raises(ConfigError, match=r"model\.candidates"):
        load_config(_config(tmp_path, candidates=["xgboost"]))


def test_init_search_writes_a_model_search(tmp_path):
    path = foundry.init(_table(tmp_path / "t.csv"), "tier", output=tmp_path / "c.yaml", search="5m")
    model = load_config(path).config.model
    assert (model.type, model.budget) == ("auto", 300)
    assert "--search 5m" in path.read_text()
    with pytest.raises(ConfigError, match=r"--search.*model\.budget"):
        foundry.init(tmp_path / "t.csv", "tier", output=tmp_path / "d.yaml", search="soon")


@pytest.mark.slow
def test_the_report_and_the_dashboard_show_the_leaderboard(searched, tmp_path):
    from foundry.config.schema import ServeConfig
    from foundry.report import write_report
    from foundry.serve.app import create_app
    from foundry.serve.gate import Gate

    result, home = searched
    winner = _board(result)["winner"]
    report = write_report(result.model_ref, tmp_path / "r.html", registry=Registry(home))
    page = read_page(report.path)
    assert "leaderboard" in report.sections
    assert "training" in report.sections  # the winner's curves, in the run's directory
    [table] = page.tables["leaderboard"]
    assert table[0][:3] == ["rank", "model", "val accuracy"]
    assert [row[1] for row in table[1:]][0] == winner and len(table) == 4  # + ensemble

    serve_config = ServeConfig()
    gate = Gate(serve_config.all_plans(), home=tmp_path / "gate")
    app = create_app(serve_config, [result.model_ref], gate=gate, home=home, admin_token=ADMIN)

    async def main() -> tuple[dict, str]:
        async with serving(app) as client:
            models = await client.get("/admin/dashboard/models", headers=bearer(ADMIN))
            view = await client.get("/admin/dashboard/view", headers=bearer(ADMIN))
            return models.json(), view.text

    models, view = asyncio.run(main())
    (version,) = models["models"][0]["versions"]
    board = version["leaderboard"]
    assert board["columns"][:2] == ["rank", "model"] and board["rows"][0][1] == winner
    assert version["history"]  # the winner's curves
    assert "Model search" in view and "val accuracy" in view


def test_a_network_whose_first_epoch_would_overrun_its_share_is_not_started(tmp_path):
    """The budget stops a network between epochs only: a text CNN whose first epoch (at
    the measured rows per second) is longer than its share of the budget is skipped and
    says so, rather than overrunning the search by minutes."""
    rng = np.random.default_rng(0)
    words = np.array(["fast", "slow", "red", "blue", "tiny", "huge", "calm", "loud"])
    n = 2000
    df = pd.DataFrame({"review": [" ".join(rng.choice(words, 6)) for _ in range(n)]})
    df["label"] = np.where(df.review.str.contains("fast"), "pos", "neg")
    df.to_csv(tmp_path / "reviews.csv", index=False)
    config = {
        "name": "texts",
        "data": {"path": str(tmp_path / "reviews.csv")},
        "features": {"target": "label"},
        "model": {"type": "auto", "budget": "5s", "candidates": ["ngram", "text"]},
        "output_dir": str(tmp_path / "runs"),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(tmp_path / "home"))
        result = foundry.train(config, progress=False, quiet=True)
    first, second = _board(result)["rows"]
    assert first["model"] == "ngram" and first["status"] == "best"
    assert second["model"] == "text" and second["status"] == "skipped"
    assert "one epoch of 1,600 rows would take" in second["note"], second["note"]
