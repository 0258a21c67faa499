"""With fairness mitigation the headline metrics are those of the decisions the model
returns, the unmitigated ones beside them, everywhere a user reads them: metrics.json,
the card, `foundry models list`, `foundry evaluate`, the report and the dashboard (issue
14: the card led with 0.855 while the API returned decisions at 0.834)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

import foundry
from foundry.registry import Registry

pytestmark = pytest.mark.slow  # one training run (~5-15 s) shared by the module


def table(n: int, seed: int) -> pd.DataFrame:
    """`x` predicts `y` and is higher in group b: demographic parity needs different
    thresholds per group, so mitigation changes decisions (and accuracy)."""
    rng = np.random.default_rng(seed)
    g = rng.choice(["a", "b"], n)
    x = rng.normal(0, 1, n) + 1.2 * (g == "b")
    y = np.where(x + rng.normal(0, 0.7, n) > 0.6, "yes", "no")
    return pd.DataFrame({"g": g, "x": x.round(3), "z": rng.normal(0, 1, n).round(3), "y": y})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("headline")
    table(1200, seed=0).to_csv(root / "train.csv", index=False)
    test = table(600, seed=1)
    test.to_csv(root / "test.csv", index=False)
    config = {
        "name": "fair",
        "data": {
            "path": "train.csv",
            "test_path": "test.csv",
            "split": {"train": 0.7, "val": 0.3, "test": 0.0},
        },
        "features": {"target": "y", "exclude": ["g"]},
        "model": {"type": "mlp", "layers": [8]},
        "train": {"epochs": 3, "batch_size": 64, "num_threads": 1},
        "evaluate": {
            "fairness": {
                "sensitive_features": ["g"],
                "mitigation": {"constraint": "demographic_parity"},
            },
            "explain": {"permutation_importance": False},
        },
        "output_dir": "runs",
    }
    (root / "fair.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FOUNDRY_HOME", str(root / "home"))
        result = foundry.train(root / "fair.yaml", quiet=True)
        predictor = foundry.load(result.model_ref)
        returned = predictor.predict(test)["y"]  # what the API answers: g is supplied
        likeliest = predictor.predict(test.drop(columns=["g"]))["y"]
    truth = test["y"]
    accuracy = {
        "returned": float((returned == truth).mean()),
        "unmitigated": float((likeliest == truth).mean()),
    }
    yield {"root": root, "home": root / "home", "result": result, "accuracy": accuracy}


@pytest.fixture(autouse=True)
def trained_home(request, monkeypatch):
    """The module's registry (conftest gives every test an empty one first)."""
    if "trained" in request.fixturenames:
        monkeypatch.setenv("FOUNDRY_HOME", str(request.getfixturevalue("trained")["home"]))


def test_metrics_json_leads_with_the_returned_decisions(trained):
    accuracy, metrics = trained["accuracy"], trained["result"].metrics
    assert accuracy["returned"] != accuracy["unmitigated"]  # mitigation changed decisions
    assert metrics["accuracy"] == pytest.approx(accuracy["returned"])
    assert metrics["unmitigated"]["accuracy"] == pytest.approx(accuracy["unmitigated"])
    saved = json.loads((trained["result"].run_dir / "metrics.json").read_text())
    assert saved["accuracy"] == metrics["accuracy"]
    record = Registry().resolve(trained["result"].model_ref)
    assert record.metrics["unmitigated"] == metrics["unmitigated"]
    # the fairness section's "after" accuracy is the same number, from the same decisions
    mitigation = Registry().load(record.ref).manifest["fairness"]["mitigation"]
    assert mitigation["accuracy_after"] == pytest.approx(metrics["accuracy"])


def test_the_card_shows_both(trained):
    accuracy = trained["accuracy"]
    card = (trained["result"].package_path / "card.md").read_text()
    assert "| metric | returned decisions | without mitigation |" in card
    assert f"| accuracy | {accuracy['returned']:.4f} | {accuracy['unmitigated']:.4f} |" in card
    data = json.loads((trained["result"].package_path / "card.json").read_text())
    assert data["metrics"]["values"]["accuracy"] == pytest.approx(accuracy["returned"], abs=1e-6)


def test_models_list_and_show(trained, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich would fold the column on a narrow pipe
    accuracy = trained["accuracy"]
    listed = cli("models", "list")
    assert listed.code == 0, listed.err
    assert (
        f"accuracy {accuracy['returned']:.4f} ({accuracy['unmitigated']:.4f} unmitigated)"
        in listed.out
    )
    shown = cli("models", "show", trained["result"].model_ref)
    assert f"accuracy unmitigated: {accuracy['unmitigated']:.4f}" in shown.out


def test_evaluate_scores_what_the_api_returns(trained, cli):
    accuracy = trained["accuracy"]
    result = cli(
        "evaluate", trained["result"].model_ref, "--data", trained["root"] / "test.csv", "--json"
    )
    assert result.code == 0, result.err
    metrics = json.loads(result.out)
    assert metrics["accuracy"] == pytest.approx(accuracy["returned"])
    assert metrics["unmitigated"]["accuracy"] == pytest.approx(accuracy["unmitigated"])
    # without the sensitive column there is no mitigation: one set of metrics
    plain = trained["root"] / "plain.csv"
    pd.read_csv(trained["root"] / "test.csv").drop(columns=["g"]).to_csv(plain, index=False)
    result = cli("evaluate", trained["result"].model_ref, "--data", plain, "--json")
    metrics = json.loads(result.out)
    assert metrics["accuracy"] == pytest.approx(accuracy["unmitigated"])
    assert "unmitigated" not in metrics


def test_report_and_dashboard_show_both(trained, tmp_path):
    from tests.report.report_html import column, read_page

    from foundry.report import write_report
    from foundry.serve.dashboard_models import version_summary

    accuracy = trained["accuracy"]
    registry = Registry()
    ref = trained["result"].model_ref
    write_report(ref, tmp_path / "r.html", registry=registry)
    [metrics] = read_page(tmp_path / "r.html").tables["metrics"]
    values = {row[0]: row[1] for row in metrics[1:]}
    assert column(metrics, "metric")[0] == "accuracy"
    assert values["accuracy"] == f"{accuracy['returned']:.4f}"
    assert values["accuracy unmitigated"] == f"{accuracy['unmitigated']:.4f}"

    record = registry.resolve(ref)
    summary = version_summary(record, registry, {record.ref: record})
    assert summary["key_metric"]["value"] == pytest.approx(accuracy["returned"])
    assert summary["key_metric"]["unmitigated"] == pytest.approx(accuracy["unmitigated"])
    assert summary["unmitigated"]["accuracy"] == pytest.approx(accuracy["unmitigated"])
