"""The user's path through the CLI: init → train → evaluate → predict → models."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from tests.integration.support import adult_like, write_config

import foundry
from foundry.config.schema import GBMConfig


def test_help_does_not_import_torch_or_pandas():
    # `foundry --help` must answer fast: the CLI module imports no heavy library.
    code = (
        "import sys, foundry.cli; "
        "print(sorted(m for m in ('torch', 'pandas', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_the_commands(cli):
    result = cli("--help")
    assert result.code == 0
    for command in ("init", "train", "evaluate", "predict", "models", "config-docs"):
        assert command in result.out


@pytest.mark.slow
def test_init_train_evaluate_predict_models(cli, tmp_path):
    df = adult_like(800)
    df.iloc[:650].to_csv(tmp_path / "train.csv", index=False)
    df.iloc[650:].to_csv(tmp_path / "test.csv", index=False)
    new = df.iloc[650:].drop(columns=["income"])
    new.to_csv(tmp_path / "new.csv", index=False)

    r = cli("init", "train.csv", "--target", "income", "--name", "adult", cwd=tmp_path)
    assert r.code == 0, r.err
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    types = {f["name"]: f["type"] for f in config["features"]["inputs"]}
    assert types == {
        "age": "number",
        "hours": "number",
        "education": "category",
        "sex": "binary",
        "workclass": "category",
    }
    assert config["features"]["target_type"] == "binary"
    assert config["model"] == {"type": "gbm"}  # a table (issue 15: LightGBM beats the MLP)

    r = cli("train", "config.yaml", "--quiet", cwd=tmp_path)
    assert r.code == 0, r.err
    assert r.out.startswith("adult:1 ")
    run_dir = tmp_path / "runs"
    (only_run,) = list(run_dir.iterdir())
    lines = (only_run / "metrics.jsonl").read_text().splitlines()
    # one line per boosting round; early stopping on the validation split ends it early
    assert 1 <= len(lines) < GBMConfig().n_estimators
    assert {"epoch", "train_loss", "val_loss", "val_accuracy"} <= set(json.loads(lines[0]))

    r = cli("evaluate", "adult:latest", "--data", "test.csv", "-o", "m.json", cwd=tmp_path)
    assert r.code == 0, r.err
    metrics = json.loads((tmp_path / "m.json").read_text())
    majority = df.iloc[650:]["income"].value_counts(normalize=True).max()
    assert metrics["accuracy"] > majority + 0.05  # learned something beyond the base rate
    assert {"f1_macro", "roc_auc", "pr_auc", "log_loss", "confusion_matrix"} <= set(metrics)
    assert sum(map(sum, metrics["confusion_matrix"])) == 150

    r = cli("predict", "adult:1", "new.csv", "-o", "pred.csv", cwd=tmp_path)
    assert r.code == 0, r.err
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert len(pred) == 150
    assert set(pred["income"]) <= {">50K", "<=50K"}
    assert ((pred["probability_>50K"] + pred["probability_<=50K"]) - 1).abs().max() < 1e-5

    # Python API gives the same predictions as the CLI.
    model = foundry.load("adult:latest")
    same = model.predict(new)
    assert list(same["income"]) == list(pred["income"])

    r = cli("train", "config.yaml", "train.epochs=2", "--quiet", cwd=tmp_path)
    assert r.code == 0 and r.out.startswith("adult:2 ")
    r = cli("models", "list", "--json")
    listed = json.loads(r.out)
    assert [(m["name"], m["version"]) for m in listed] == [("adult", 2)]
    r = cli("models", "show", "adult:1", "--json")
    shown = json.loads(r.out)
    assert shown["versions"] == [1, 2]
    assert len(shown["fingerprint"]) == 64


@pytest.mark.slow
def test_python_api_train_and_regression(tmp_path):
    df = adult_like(400)
    df.to_csv(tmp_path / "d.csv", index=False)
    path = write_config(
        tmp_path / "c.yaml",
        "d.csv",
        "hours",
        name="hours",
        features={"target": "hours", "exclude": ["income"]},
        model={"type": "mlp", "layers": [16]},
    )
    run = foundry.train(path, ["train.epochs=3"], progress=False, quiet=True)
    assert run.model_ref == "hours:1"
    assert {"mse", "rmse", "mae", "r2"} <= set(run.metrics)
    preds = foundry.load(run.model_ref).predict(df.drop(columns=["hours"]))
    # Predictions are in the target's own units (de-standardised), near its mean.
    assert abs(preds["hours"].mean() - df["hours"].mean()) < 5


@pytest.mark.slow
def test_make_demo_script_runs_end_to_end(cli, tmp_path, monkeypatch):
    # The demo writes under the repo; run a copy of the CLI flow it uses in tmp instead
    # (through the console script's main(): a subprocess per command spent seconds
    # importing; the README test runs these commands as processes).
    df = adult_like(300)
    df.to_csv(tmp_path / "d.csv", index=False)
    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path / "home"))
    r = cli("init", "d.csv", "--target", "income", cwd=tmp_path)
    assert r.code == 0, r.err
    r = cli("train", "config.yaml", "train.epochs=2", cwd=tmp_path)
    assert r.code == 0, r.err
    assert "registered d:1" in r.err


def test_public_functions_survive_subpackage_imports():
    import foundry.compression
    import foundry.evaluation
    import foundry.training  # noqa: F401

    assert callable(foundry.train) and callable(foundry.evaluate) and callable(foundry.load)
    assert callable(foundry.compress)
    assert sorted(foundry.__all__) == sorted(
        [
            "ConfigError",
            "DataError",
            "FoundryError",
            "ModelError",
            "TrainError",
            "__version__",
            "compress",
            "evaluate",
            "init",
            "load",
            "run",
            "train",
        ]
    )
