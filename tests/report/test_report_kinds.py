"""A regressor and a language model get the sections that apply to them; the others are
listed with the reason they do not apply, never drawn empty."""

from __future__ import annotations

import json

import numpy as np
from tests.report.report_html import column, read_page

from foundry.report import write_report


def test_regressor_gets_predicted_against_actual_and_residuals(regressor, tmp_path):
    result = write_report(regressor.ref, tmp_path / "r.html", registry=regressor.registry())
    page = read_page(result.path)
    assert {"training", "learning_rate", "metrics", "regression", "importance"} <= set(
        result.sections)
    for omitted in ("confusion", "roc", "pr", "calibration", "fairness"):
        assert omitted in result.omitted and omitted not in page.headings
    assert "regressor" in result.omitted["roc"]
    assert page.charts["regression"] == 2  # predicted against actual, residuals
    [residuals] = page.tables["regression"]
    assert residuals[0][:2] == ["mean residual", "std"]
    metrics = json.loads((regressor.registry().resolve(regressor.ref).path / "metrics.json")
                         .read_text())
    [table] = page.tables["metrics"]
    assert dict(zip(column(table, "metric"), column(table, table[0][1]), strict=True))[
        "rmse"] == f"{metrics['rmse']:.4f}"


def test_language_model_gets_loss_and_perplexity_curves(language_model, tmp_path):
    result = write_report(language_model.ref, tmp_path / "lm.html",
                          registry=language_model.registry())
    page = read_page(result.path)
    assert result.sections == ("training", "learning_rate", "metrics", "data")
    for omitted in ("confusion", "roc", "pr", "regression", "calibration", "fairness",
                    "importance"):
        assert "language model" in result.omitted[omitted]
    assert page.charts["training"] == 2  # loss; perplexity (log scale)
    [epochs] = page.tables["training"]
    assert epochs[0][:3] == ["epoch", "train_loss", "val_loss"]
    assert "val_perplexity" in epochs[0]
    [table] = page.tables["metrics"]
    names = column(table, "metric")
    assert "perplexity" in names and "unigram_perplexity" in names
    history = [json.loads(line) for line in
               (language_model.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert column(epochs, "val_perplexity") == [f"{r['val_perplexity']:.4f}" for r in history]
    assert np.isfinite([r["lr"] for r in history]).all()
