"""model.type gbm (foundry.families.gbm): LightGBM over native categories and missing
values, stored as LightGBM's text format with a checksum, explained with TreeSHAP.

The family contract (fit → package → load, served = local, hooks, bad inputs) is checked
by test_family_conformance.py; these tests cover what is particular to boosters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import foundry
from foundry.errors import ConfigError, DataError, FoundryError, ModelError
from foundry.registry import Registry


def _table(path: Path, n: int = 200, seed: int = 0) -> Path:
    """price ≈ 3·size + 20 on city "b", with a tenth of the sizes missing."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(10, 100, n)
    city = rng.choice(["a", "b", "c"], n)
    price = 3 * size + np.where(city == "b", 20.0, 0.0) + rng.normal(0, 1, n)
    df = pd.DataFrame({"size": size.round(2), "city": city, "price": price.round(2)})
    df.loc[::10, "size"] = np.nan
    df["tier"] = np.where(df.price > 160, "high", "low")
    df.to_csv(path, index=False)
    return path


def _config(tmp_path: Path, target: str = "price", **model) -> dict:
    data = _table(tmp_path / "houses.csv")
    return {
        "name": f"gbm-{target}",
        "data": {"path": str(data)},
        "features": {"target": target, "exclude": ["tier" if target == "price" else "price"]},
        "model": {"type": "gbm", "n_estimators": 60, "min_child_samples": 5, **model},
        "train": {"num_threads": 1},
        "evaluate": {"explain": {"permutation_importance": False}},
        "output_dir": str(tmp_path / "runs"),
    }


@pytest.fixture(scope="module")
def regressor(tmp_path_factory):
    """(TrainResult, home, data frame) of a regressor trained once for this module."""
    root = tmp_path_factory.mktemp("gbm")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(home))
        result = foundry.train(_config(root), progress=False, quiet=True)
    return result, home, pd.read_csv(root / "houses.csv")


def test_a_regressor_predicts_in_the_targets_units_with_missing_values(regressor, monkeypatch):
    result, home, df = regressor
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    assert result.metrics["r2"] > 0.9, result.metrics
    model = foundry.load(result.model_ref)
    rows = df.drop(columns=["price", "tier"]).head(20)
    assert rows["size"].isna().any()  # NaN goes in as it is: no fill, no error
    predicted = model.predict(rows)["price"].to_numpy()
    known = rows["size"].notna().to_numpy()
    # in price units, not standardised ones
    assert np.abs(predicted[known] - df["price"].head(20).to_numpy()[known]).mean() < 15


def test_the_package_is_lightgbm_text_with_a_checksum_and_no_pickle(regressor):
    result, home, _ = regressor
    package = Registry(home).load(result.model_ref)
    entry = package.manifest["gbm"]
    text = (package.path / "model.txt").read_text()
    assert text.startswith("tree\n")  # LightGBM's own text format
    assert entry["sha256"] == __import__("hashlib").sha256(text.encode()).hexdigest()
    assert entry["trees"] == result.best_epoch  # the best round's trees, no more
    assert not [p for p in package.path.rglob("*") if p.suffix in (".pkl", ".pickle", ".pt")]


def test_a_changed_model_file_is_refused_at_load(regressor, tmp_path, monkeypatch):
    import shutil

    result, home, _ = regressor
    copy = tmp_path / "package"
    shutil.copytree(Registry(home).load(result.model_ref).path, copy)
    text = (copy / "model.txt").read_text()
    (copy / "model.txt").write_text(text.replace("leaf_value=", "leaf_value=1", 1))
    with pytest.raises(ModelError, match="sha256"):
        foundry.load(copy)


def test_treeshap_attributions_add_up_to_the_output(regressor, monkeypatch):
    from foundry.evaluation.explain import explain

    result, home, df = regressor
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    model = foundry.load(result.model_ref)
    rows = df.drop(columns=["price", "tier"]).head(5)
    explained = explain(model, rows)
    assert explained["method"] == "tree_shap"
    predicted = model.predict(rows)["price"].to_numpy()
    for row, value in zip(explained["rows"], predicted, strict=True):
        assert set(row["attributions"]) == {"size", "city"}
        total = row["baseline_output"] + sum(row["attributions"].values())
        assert total == pytest.approx(row["output"], abs=1e-6)
        assert row["output"] == pytest.approx(value, rel=1e-4)  # the value, in its units
    # the size drives the price: it gets the larger share on average
    share = np.mean(
        [abs(r["attributions"]["size"]) > abs(r["attributions"]["city"]) for r in explained["rows"]]
    )
    assert share >= 0.6


def test_records_encode_as_frames_do(regressor, monkeypatch):
    result, home, df = regressor
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    inputs = foundry.load(result.model_ref).preprocessor
    rows = df.drop(columns=["price", "tier"]).head(12)
    rows.loc[3, "city"] = "never-seen"
    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in rows.to_dict("records")
    ]
    frame = inputs.transform(rows, with_target=False)["features"].numpy()
    served = inputs.transform_records(records)["features"].numpy()
    np.testing.assert_array_equal(frame, served)  # NaN in the same places too


def _root_rows(model_text: str) -> int:
    """Training rows under the first tree's root: LightGBM writes each tree's node
    counts into its text format (`internal_count=root ...`, or `leaf_count=` for a
    one-leaf tree)."""
    tree = model_text.split("Tree=0", 1)[1]
    for key in ("internal_count=", "leaf_count="):
        if key in tree:
            return int(tree.split(key, 1)[1].split()[0])
    raise AssertionError("no node counts in the booster text")


def test_the_refit_trains_on_train_and_val_for_the_recorded_rounds(regressor):
    result, _, _ = regressor
    manifest = json.loads((result.package_path / "foundry.json").read_text())
    rows, gbm = manifest["data"]["rows"], manifest["gbm"]
    text = (result.package_path / "model.txt").read_text()
    assert gbm["refit"]["rows"] == rows["train"] + rows["val"]
    assert _root_rows(text) == rows["train"] + rows["val"]
    # a regressor's refit: the best round scaled by the rows (n_estimators 60 caps it)
    scaled = round(gbm["best_iteration"] * (rows["train"] + rows["val"]) / rows["train"])
    assert gbm["refit"]["rounds"] == min(60, scaled)
    assert gbm["trees"] == gbm["refit"]["rounds"]


def test_without_refit_the_early_stopped_booster_is_packaged(tmp_path):
    result = foundry.train(
        _config(tmp_path, "tier", refit=False), progress=False, quiet=True, register=False
    )
    manifest = json.loads((result.package_path / "foundry.json").read_text())
    gbm = manifest["gbm"]
    assert gbm["refit"] is None
    assert gbm["trees"] == gbm["best_iteration"]  # binary: one tree per round
    assert (
        _root_rows((result.package_path / "model.txt").read_text())
        == manifest["data"]["rows"]["train"]
    )


def test_a_classifiers_refit_takes_at_least_lightgbms_default_rounds():
    from foundry.config.schema import GBMConfig
    from foundry.families.gbm.family import _refit_rounds

    model = GBMConfig()
    assert _refit_rounds(model, 40, 800, 100, classifier=False) == {"rows": 900, "rounds": 45}
    assert _refit_rounds(model, 40, 800, 100, classifier=True)["rounds"] == 100
    assert _refit_rounds(model, 400, 800, 100, classifier=True)["rounds"] == 450
    capped = GBMConfig(n_estimators=300)
    assert _refit_rounds(capped, 400, 800, 100, classifier=True)["rounds"] == 300
    fixed = GBMConfig(early_stopping_rounds=None, n_estimators=70)
    assert _refit_rounds(fixed, 70, 800, 100, classifier=True)["rounds"] == 70


def test_the_temperature_is_fitted_on_the_early_stopped_boosters_val_outputs(tmp_path):
    """The refitted booster saw the val rows; its own outputs there would be in-sample.
    So the fitted temperature is the one the early-stopped booster gives, with or
    without the refit."""
    fitted = []
    for refit in (True, False):
        # mistakes on val, so a temperature is fitted
        config = _noisy(_config(tmp_path, "tier", refit=refit))
        result = foundry.train(config, progress=False, quiet=True, register=False)
        manifest = json.loads((result.package_path / "foundry.json").read_text())
        fitted.append(manifest["calibration"]["fitted_temperature"])
    assert fitted[0] is not None
    assert fitted[0] == pytest.approx(fitted[1])


def _noisy(config: dict) -> dict:
    """A fifth of the `tier` labels flipped: a model makes mistakes on held-out rows."""
    df = pd.read_csv(config["data"]["path"])
    flip = np.random.default_rng(1).random(len(df)) < 0.2
    df.loc[flip, "tier"] = np.where(df.tier[flip] == "high", "low", "high")
    df.to_csv(config["data"]["path"], index=False)
    return config


def test_auto_ranks_a_refitted_booster_by_its_fit_before_the_refit(tmp_path):
    """The refitted booster trained on the validation rows: auto's validation score for
    gbm is the early-stopped booster's, the accuracy LightGBM logged at the best round."""
    config = _noisy(_config(tmp_path, "tier"))
    config["model"] = {
        "type": "auto",
        "budget": "60s",
        "candidates": ["gbm"],
        "overrides": {"gbm": {"n_estimators": 60, "min_child_samples": 5}},
    }
    result = foundry.train(config, progress=False, quiet=True, register=False)
    manifest = json.loads((result.package_path / "foundry.json").read_text())
    row = manifest["leaderboard"]["rows"][0]
    assert manifest["gbm"]["refit"] is not None
    assert row["metric"] == pytest.approx(manifest["training"]["best_metrics"]["val_accuracy"])


def test_an_ensemble_weighs_a_refitted_booster_by_its_fit_before_the_refit(tmp_path):
    """The ensemble's weights and validation score come from the members' held-out
    fits: with the refitted booster's in-sample outputs the ensemble scored as well
    as the refit did on rows it had trained on."""
    config = _noisy(_config(tmp_path, "tier"))
    config["model"] = {
        "type": "auto",
        "budget": "60s",
        "candidates": ["gbm", "mlp"],
        "ensemble": "always",
        "overrides": {"gbm": {"n_estimators": 60, "min_child_samples": 5}, "mlp": {"layers": [8]}},
    }
    config["train"] = {"num_threads": 1, "epochs": 5}
    result = foundry.train(config, progress=False, quiet=True, register=False)
    rows = json.loads((result.package_path / "foundry.json").read_text())["leaderboard"]["rows"]
    metric = {row["model"]: row.get("metric") for row in rows}
    singles = [v for k, v in metric.items() if k != "ensemble" and v is not None]
    # in-sample, the refit made the ensemble 0.9 on val (gbm held out: 0.8, mlp 0.75);
    # held out it is within a val row (0.05) of its best member
    assert metric["ensemble"] <= max(singles) + 0.05


def test_a_class_weight_map_names_classes_of_the_target(tmp_path):
    config = _config(tmp_path, "tier", class_weight={"high": 2.0, "medium": 1.0})
    with pytest.raises(ConfigError, match="medium"):
        foundry.train(config, progress=False, quiet=True)


def test_balanced_class_weights_change_the_model(tmp_path):
    plain = foundry.train(_config(tmp_path, "tier"), progress=False, quiet=True)
    balanced = foundry.train(
        _config(tmp_path, "tier", class_weight="balanced"), progress=False, quiet=True
    )
    rows = pd.read_csv(tmp_path / "houses.csv").head(30)
    assert not np.allclose(plain.model.predict_proba(rows), balanced.model.predict_proba(rows))


def test_an_objective_that_does_not_fit_the_target_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="model.objective"):
        foundry.train(_config(tmp_path, "price", objective="binary"), progress=False, quiet=True)


def test_text_inputs_are_refused_with_the_column_named(tmp_path):
    config = _config(tmp_path)
    config["features"]["inputs"] = [{"name": "city", "type": "text"}, {"name": "size"}]
    with pytest.raises(ConfigError, match="city"):
        foundry.train(config, progress=False, quiet=True)


def test_a_non_numeric_size_is_a_data_error(regressor, monkeypatch):
    result, home, df = regressor
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    rows = df.drop(columns=["price", "tier"]).head(3).astype({"size": object})
    rows.loc[1, "size"] = "big"
    with pytest.raises(DataError, match="size"):
        foundry.load(result.model_ref).predict(rows)


def test_compress_says_why_a_booster_has_no_variant(regressor, monkeypatch):
    from foundry.compression import compress

    result, home, _ = regressor
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    with pytest.raises(FoundryError, match="no compressed variant") as caught:
        compress(result.model_ref, quiet=True)
    assert "n_estimators" in str(caught.value.hint)


def test_tune_searches_gbm_params(tmp_path):
    from foundry.tuning import tune

    config = _config(tmp_path, "tier")
    config["tune"] = {
        "metric": "accuracy",
        "n_trials": 2,
        "params": {"model.num_leaves": {"type": "int", "low": 4, "high": 16}},
    }
    result = tune(config, quiet=True)
    assert result.model_ref is not None and result.model_ref.startswith("gbm-tier:")
    assert [t["state"] for t in result.trials] == ["COMPLETE", "COMPLETE"]
    assert 4 <= result.best_params["model.num_leaves"] <= 16
    # a trial's value is val_accuracy at the round kept, logged per round
    assert 0.5 < result.best_value <= 1.0


# ---------------------------------------------------------------- CLI and a real server


@pytest.mark.slow
def test_cli_trains_breast_cancer_and_a_real_server_serves_it(tmp_path):
    """`foundry train` on a YAML config over scikit-learn's breast cancer table, then
    `foundry serve` (uvicorn, HTTP on loopback) answers predict and explain as the
    loaded model does."""
    from sklearn.datasets import load_breast_cancer
    from tests.serve.serve_app_support import assert_matches, bearer, foundry_cli
    from tests.serve.test_serve_process import _wait_ready

    from foundry.serve.gate import Gate
    from foundry.serve.loadtest import free_port

    frame = load_breast_cancer(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    frame.to_csv(tmp_path / "cancer.csv", index=False)
    (tmp_path / "cancer.yaml").write_text(
        "name: cancer\n"
        "data: {path: cancer.csv}\n"
        "features: {target: target}\n"
        "model: {type: gbm}\n"
        "evaluate: {explain: {permutation_importance: false}}\n"
    )
    home = tmp_path / "home"
    env = {**os.environ, "FOUNDRY_HOME": str(home), "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("FOUNDRY_DATABASE_URL", None)
    # `foundry train` through main() in this process (a subprocess spent seconds
    # importing); the server below is the other process.
    trained = foundry_cli(tmp_path, env, "train", "cancer.yaml", "--json")
    assert json.loads(trained.stdout)["model"] == "cancer:1"
    assert (home / "models" / "cancer" / "1" / "model.txt").is_file()  # a booster
    metrics = json.loads((home / "models" / "cancer" / "1" / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.93, metrics  # LightGBM defaults: ~0.96 on this split

    gate = Gate(home=home)
    key = gate.create_key("acme", "pro").key
    gate.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "foundry", "serve", "cancer", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        _wait_ready(proc, url, log_path)
        rows = frame.drop(columns=["target"]).head(6)
        records = rows.to_dict("records")
        with httpx.Client(base_url=url, timeout=60) as client:
            predicted = client.post("/v1/models/cancer/predict", json=records, headers=bearer(key))
            explained = client.post(
                "/v1/models/cancer/explain", json={"records": records[:2]}, headers=bearer(key)
            )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert predicted.status_code == 200, predicted.text
    local = foundry.load(home / "models" / "cancer" / "1")
    assert_matches(predicted.json()["predictions"], local.predict(rows), "target")
    assert explained.status_code == 200, explained.text
    body = explained.json()
    assert body["method"] == "tree_shap" and len(body["rows"]) == 2
    assert len(body["rows"][0]["attributions"]) == 30


def test_a_booster_file_outside_the_package_is_refused(regressor, tmp_path):
    """gbm.file of a package loaded by path may not lead out of the package (the one
    containment check every manifest path goes through)."""
    import json
    import shutil

    from foundry.registry.integrity import seal

    result, home, _ = regressor
    copy = tmp_path / "package"
    shutil.copytree(Registry(home).load(result.model_ref).path, copy)
    outside = tmp_path / "model.txt"
    shutil.copy(copy / "model.txt", outside)
    manifest = json.loads((copy / "foundry.json").read_text())
    manifest["gbm"]["file"] = "../model.txt"
    seal(copy, manifest)  # consistent checksums: only the path is hostile
    with pytest.raises(ModelError, match="outside"):
        foundry.load(copy)
