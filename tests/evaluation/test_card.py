"""Model cards: every section of a full manifest lands in card.json and card.md with its
numbers; a bare manifest says what is missing; nothing but counts of personal data."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from foundry.config import dump_config, load_config
from foundry.data.schema import TaskInfo
from foundry.evaluation.calibration import calibrate
from foundry.evaluation.card import CARD_VERSION, TOP_FEATURES, build_card, render_card
from foundry.evaluation.fairness import audit
from foundry.evaluation.metrics import compute_metrics

SECTIONS = [
    "card_version",
    "model_details",
    "intended_use",
    "data",
    "pii",
    "leakage",
    "training",
    "privacy",
    "metrics",
    "fairness",
    "calibration",
    "explanations",
    "limitations",
    "warnings",
    "missing",
    "versions",
]
RAW_EMAIL = "alice.smith@example.com"


def _config(**extra) -> dict:
    raw = {
        "name": "income",
        "description": "Predicts whether income exceeds 50K.",
        "data": {"path": "adult.csv"},
        "features": {"target": "income"},
        **extra,
    }
    return dump_config(load_config(raw).config)


def _base_manifest(task: dict, config: dict) -> dict:
    return {
        "name": "income",
        "version": 3,
        "parent": None,
        "config": config,
        "features": {
            "target": "income",
            "inputs": [{"name": "age", "type": "number"}, {"name": "note", "type": "text"}],
        },
        "task": task,
        "fingerprint": "sha256:abc123",
        "data": {"path": "adult.csv", "rows": {"train": 800, "val": 100, "test": 100}},
        "training": {"best_epoch": 7, "epochs_run": 10, "seconds": 12.5, "stopped_early": True},
        "versions": {"foundry": "0.1.0", "torch": "2.13.0", "python": "3.12.1"},
        "created_at": "2025-01-02T03:04:05+00:00",
    }


@pytest.fixture(scope="module")
def full() -> tuple[dict, dict]:
    """A manifest with every trust section, the fairness and calibration ones computed by
    the real stage functions on a small synthetic evaluation split."""
    rng = np.random.default_rng(0)
    task = TaskInfo(target="income", task="binary", classes=["<=50K", ">50K"])
    n = 100
    y = rng.integers(0, 2, n)
    logits = 4 * ((2 * y - 1) * 1.0 + rng.normal(0, 1.2, n))  # overconfident
    val_y = rng.integers(0, 2, 200)
    val_logits = 4 * ((2 * val_y - 1) * 1.0 + rng.normal(0, 1.2, 200))
    # 90 women and men plus a 10-row group: flagged as small.
    sex = pd.DataFrame({"sex": ["f"] * 45 + ["m"] * 45 + ["x"] * 10})
    pred = (logits > 0).astype(int)
    labels = np.array(task.classes)
    before = audit(labels[y], labels[pred], sex, positive_class=">50K", classes=task.classes)
    after = audit(labels[y], labels[y], sex, positive_class=">50K", classes=task.classes)
    config = _config(
        card={
            "intended_use": "Ranking mailing lists; not for credit decisions.",
            "limitations": "Trained on 1994 census data.",
            "owner": "risk-team",
            "license": "Apache-2.0",
        },
        train={"privacy": {"target_epsilon": 2.5}},
        evaluate={"fairness": {"sensitive_features": ["sex"]}},
    )
    manifest = {
        **_base_manifest(task.to_dict(), config),
        "pii": {
            "action": "report",
            "kinds": ["email", "phone"],
            "rows_scanned": 800,
            "columns_scanned": ["note", "city"],
            "findings": {"note": {"phone": 3, "email": 12}},
            "rows_with_pii": 14,
            "total": 15,
            "identifier_columns": [
                {"column": "customer_id", "reason": "100% of values unique", "action": "report"}
            ],
            # Not a field of the scan report; a card must never copy such a thing.
            "examples": [RAW_EMAIL],
        },
        "pii_scrubber": {"salt_fingerprint": "deadbeef"},
        "privacy": {
            "epsilon": 2.4871234567,
            "delta": 1e-05,
            "noise_multiplier": 1.1,
            "max_grad_norm": 1.0,
            "sample_rate": 0.016,
            "steps": 625,
            "epochs": 10,
            "accountant": "prv",
            "library": "opacus 1.5.4",
            "fixed_layers": ["BatchNorm1d → GroupNorm"],
        },
        "fairness": {
            "audit": before,
            "mitigation": {
                "constraint": "demographic_parity",
                "objective": "accuracy_score",
                "fitted_on": "val",
                "audit_after": after,
                "accuracy_before": 0.81,
                "accuracy_after": 0.79,
                "state": {"thresholds": {"f": [0.4, 0.6]}},
            },
        },
        "calibration": calibrate(val_logits[:, None], val_y, logits[:, None], y, task),
        "explain": {
            "permutation_importance": {
                "metric": "accuracy",
                "baseline": 0.81,
                "features": [
                    {"feature": f"f{i:02d}", "importance": 0.2 - 0.01 * i, "std": 0.001}
                    for i in range(12)
                ],
            }
        },
    }
    metrics = compute_metrics(task, y, logits[:, None])
    return manifest, metrics


def test_card_json_has_every_section_in_documented_order(full):
    card = build_card(*full)
    assert list(card) == SECTIONS
    assert card["card_version"] == CARD_VERSION
    assert json.loads(json.dumps(card, allow_nan=False)) == card


def test_card_json_carries_the_numbers_of_each_section(full):
    manifest, metrics = full
    card = build_card(manifest, metrics)
    details = card["model_details"]
    assert details["ref"] == "income:3" and details["architecture"] == "mlp"
    assert details["owner"] == "risk-team" and details["license"] == "Apache-2.0"
    assert details["classes"] == ["<=50K", ">50K"]
    assert card["intended_use"].startswith("Ranking mailing lists")
    assert card["limitations"] == "Trained on 1994 census data."
    assert card["data"]["rows"] == {"train": 800, "val": 100, "test": 100}
    assert card["data"]["fingerprint"] == "sha256:abc123"
    assert card["pii"]["total"] == 15
    assert card["pii"]["findings"] == {"note": {"email": 12, "phone": 3}}
    assert card["training"]["summary"]["private"] is True
    assert card["training"]["summary"]["lr"] == 0.001
    assert card["training"]["config"] == manifest["config"]
    assert card["privacy"]["epsilon"] == 2.48712  # six significant digits
    assert card["privacy"]["delta"] == 1e-05
    assert card["metrics"]["split"] == "test"
    assert card["metrics"]["values"]["accuracy"] == pytest.approx(metrics["accuracy"], rel=1e-6)
    assert card["metrics"]["confusion_matrix"] == metrics["confusion_matrix"]

    fairness = card["fairness"]
    before = manifest["fairness"]["audit"]
    assert fairness["sensitive_features"] == ["sex"]
    assert fairness["before"]["demographic_parity_difference"] == pytest.approx(
        before["demographic_parity_difference"], rel=1e-5
    )
    assert [g["group"] for g in fairness["before"]["by_group"]] == [
        {"sex": "f"},
        {"sex": "m"},
        {"sex": "x"},
    ]
    assert fairness["after"]["demographic_parity_difference"] == pytest.approx(
        manifest["fairness"]["mitigation"]["audit_after"]["demographic_parity_difference"],
        rel=1e-5,
    )
    assert fairness["mitigation"]["accuracy_after"] == 0.79
    assert "state" not in fairness["mitigation"]  # thresholds stay in foundry.json

    calibration = card["calibration"]
    source = manifest["calibration"]
    assert calibration["temperature"] == source["temperature"] > 1
    assert calibration["ece_reduction"] == pytest.approx(
        (source["ece_before"] - source["ece_after"]) / source["ece_before"], rel=1e-5
    )
    assert len(calibration["reliability_before"]) == 15  # arrays kept in the json

    top = card["explanations"]["top_features"]
    assert len(top) == TOP_FEATURES and card["explanations"]["n_features"] == 12
    assert top[0] == {"feature": "f00", "importance": 0.2, "std": 0.001}
    assert card["versions"]["torch"] == "2.13.0"


def test_card_warns_about_kept_pii_and_small_groups(full):
    warnings = build_card(*full)["warnings"]
    text = "\n".join(warnings)
    assert "15 personal-data values" in text and "data.pii.action: report" in text
    assert "customer_id" in text
    assert "sex=x (10 rows)" in text
    # Private training: no "no differential-privacy guarantee" warning.
    assert "differential-privacy" not in text


def test_personal_data_without_privacy_is_warned(full):
    manifest, metrics = copy.deepcopy(full)
    del manifest["privacy"]
    card = build_card(manifest, metrics)
    assert card["privacy"] is None
    assert any("no differential-privacy guarantee" in w for w in card["warnings"])
    assert card["training"]["summary"]["private"] is False


def test_markdown_shows_every_section_with_its_numbers(full):
    manifest, metrics = full
    card = build_card(manifest, metrics)
    md = render_card(card)
    for heading in (
        "# Model card: income:3",
        "## Model details",
        "## Intended use",
        "## Data",
        "## Personal data (PII)",
        "## Training",
        "## Privacy",
        "## Metrics (test split)",
        "## Fairness",
        "## Calibration",
        "## Explanations",
        "## Limitations",
        "## Versions",
    ):
        assert heading in md, heading
    assert "> **Warnings**" in md
    assert "ε = 2.4871" in md
    assert "| note | email | 12 |" in md
    cal = card["calibration"]
    assert f"| expected calibration error (15 bins) | {cal['ece_before']:.4f} | " in md
    assert f"T = {cal['temperature']:.4f}" in md
    assert "| 1 | f00 | 0.2000 | 0.0010 |" in md
    assert "f10" not in md  # the 11th feature is past the top 10
    assert "| sex=x ⚠ small | 10 |" in md
    dpd = card["fairness"]["before"]["demographic_parity_difference"]
    dpd_after = card["fairness"]["after"]["demographic_parity_difference"]
    assert f"| demographic parity difference | {dpd:.4f} | {dpd_after:.4f} |" in md
    assert "| accuracy | 0.8100 | 0.7900 |" in md
    assert "Ranking mailing lists" in md and "1994 census" in md
    assert "reliability_before" not in md and "'lower'" not in md


def test_no_raw_personal_data_reaches_the_card(full):
    card = build_card(*full)
    assert RAW_EMAIL not in json.dumps(card)
    assert RAW_EMAIL not in render_card(card)
    assert "examples" not in card["pii"]
    assert "deadbeef" not in json.dumps(card)


def test_card_is_deterministic(full):
    manifest, metrics = full
    first = build_card(copy.deepcopy(manifest), copy.deepcopy(metrics))
    second = build_card(copy.deepcopy(manifest), copy.deepcopy(metrics))
    assert json.dumps(first) == json.dumps(second)
    assert render_card(first) == render_card(second)


def test_minimal_regression_manifest_names_what_is_missing():
    task = TaskInfo(target="price", task="regression", target_mean=10.0, target_std=2.0)
    manifest = _base_manifest(task.to_dict(), _config())
    metrics = compute_metrics(task, np.array([0.0, 1.0, -1.0]), np.array([[0.1], [0.9], [-1.2]]))
    card = build_card(manifest, metrics)
    for section in ("pii", "privacy", "fairness", "calibration", "explanations"):
        assert card[section] is None, section
        assert section in card["missing"]
    assert card["intended_use"] is None and card["limitations"] is None
    assert card["warnings"] == []
    md = render_card(card)
    assert "**Not private — no differential-privacy guarantee" in md
    assert "_Not audited — the fairness audit needs a classifier (task: regression)._" in md
    assert "_Not applicable — the model has no class probabilities" in md
    assert "_Not scanned" in md
    assert "_Not computed — set evaluate.explain.permutation_importance: true._" in md
    assert "_Not stated — set card.intended_use._" in md
    assert "| rmse |" in md and "Confusion matrix" not in md
    assert "> **Warnings**" not in md


def test_classifier_without_audit_points_at_the_setting():
    task = TaskInfo(target="y", task="multiclass", classes=["a", "b", "c"])
    card = build_card(_base_manifest(task.to_dict(), _config()), {"accuracy": float("nan")})
    assert card["metrics"]["values"]["accuracy"] is None  # NaN is not JSON
    md = render_card(card)
    assert "_Not audited — set evaluate.fairness.sensitive_features._" in md
    assert "_Not measured — calibration needs a validation split" in md


def test_unregistered_manifest_and_compressed_variant():
    task = TaskInfo(target="y", task="binary", classes=["no", "yes"])
    manifest = _base_manifest(task.to_dict(), _config())
    manifest["version"] = None
    assert "# Model card: income (unregistered)" in render_card(build_card(manifest, {}))

    manifest.update(version=4, parent="income:3")
    manifest["compression"] = {"method": "int8", "linear_layers": 3, "input_names": ["x"]}
    card = build_card(manifest, {"accuracy": 0.9})
    assert card["model_details"]["compression"] == {"method": "int8", "linear_layers": 3}
    assert any("int8 variant of income:3" in w for w in card["warnings"])
    assert "| parent | income:3 |" in render_card(card)


def test_language_model_manifest_renders():
    manifest = {
        "name": "tiny-gpt",
        "version": 1,
        "config": {"name": "tiny-gpt", "model": {"type": "gpt"}, "train": {"epochs": 2}},
        "task": "causal_lm",
        "data": {"path": "corpus.txt", "examples": {"train": 90, "val": 5, "test": 5}},
    }
    card = build_card(manifest, {"perplexity": 12.3456789})
    assert card["data"]["rows"] == {"train": 90, "val": 5, "test": 5}
    assert card["metrics"]["values"] == {"perplexity": 12.3457}
    assert "| perplexity | 12.3457 |" in render_card(card)


def test_table_cells_escape_pipes():
    task = TaskInfo(target="y", task="binary", classes=["no", "yes"])
    manifest = _base_manifest(task.to_dict(), _config())
    manifest["explain"] = {
        "permutation_importance": {
            "metric": "accuracy",
            "baseline": 0.5,
            "features": [{"feature": "a|b", "importance": 0.1, "std": 0.0}],
        }
    }
    assert "| 1 | a\\|b | 0.1000 |" in render_card(build_card(manifest, {}))


def test_a_temperature_that_was_not_kept_is_said_so():
    """The card says when the fitted T did not lower the validation ECE and the identity
    is applied, rather than showing T = 1 as if it had been fitted (issue 14)."""
    task = TaskInfo(target="y", task="binary", classes=["no", "yes"])
    logits = np.r_[np.full(900, np.log(9.0)), np.full(10, 8.0)][:, None]
    y = np.r_[np.ones(810), np.zeros(90), np.zeros(10)].astype(int)
    manifest = _base_manifest(task.to_dict(), _config())
    manifest["calibration"] = calibrate(logits, y, logits, y, task)
    md = render_card(build_card(manifest, {"accuracy": 0.9}))
    fitted = manifest["calibration"]["fitted_temperature"]
    assert f"**not applied** (T = 1). The fitted T = {fitted:.4f} did not lower" in md
    assert "predictions divide the logits by T" not in md
