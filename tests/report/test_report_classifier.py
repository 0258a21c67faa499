"""`write_report` on a real classifier with every trust section, a compressed variant and
a cost estimate: each section holds what the model's own files and predictions say."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from tests.report.report_html import column, read_page

from foundry.report import write_report

MARKUP_LABEL = "<b>x</b>"
"""The positive class of the `audited` model (tests/report/conftest.py)."""
EVERY_SECTION = (
    "training", "learning_rate", "metrics", "confusion", "roc", "pr", "calibration",
    "fairness", "importance", "data", "compression", "cost",
)


@pytest.fixture(scope="module")
def report(audited, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "audited.html"
    result = write_report(audited.ref, out, registry=audited.registry())
    return result, read_page(out)


def _manifest(audited) -> dict:
    record = audited.registry().resolve(audited.ref)
    return json.loads((record.path / "foundry.json").read_text())


def _test_split(audited):
    """The evaluation rows and the model's probabilities on them, computed here the way
    `foundry compress` reads a model's split again (not through the report)."""
    from foundry.config.load import LoadedConfig
    from foundry.config.schema import FoundryConfig
    from foundry.console import Reporter
    from foundry.data.dataset import load_splits
    from foundry.evaluation.metrics import probabilities
    from foundry.predictor import load

    manifest = _manifest(audited)
    loaded = LoadedConfig(FoundryConfig.model_validate(manifest["config"]),
                          audited.csv.parent)
    splits, _ = load_splits(loaded, Reporter(quiet=True))
    predictor = load(audited.ref, registry=audited.registry())
    y, outputs = predictor.labelled_outputs(splits.test)
    return y, probabilities(outputs, predictor.task)


def test_every_section_is_there_with_its_heading(report):
    result, page = report
    assert result.sections == EVERY_SECTION
    # the sections that do not apply to a classifier trained without a model search
    assert set(result.omitted) == {"regression", "leaderboard"}
    assert "search" in result.omitted["leaderboard"]
    for section in EVERY_SECTION:
        assert page.headings[section], section
    for section in ("training", "learning_rate", "confusion", "roc", "pr", "calibration",
                    "fairness", "importance", "compression", "cost"):
        assert page.charts[section] >= 1, section
    assert "a classifier" in page.text["not-in-report"]


def test_training_curves_are_the_runs_epochs(report, audited):
    _, page = report
    history = [json.loads(line) for line in
               (audited.run_dir / "metrics.jsonl").read_text().splitlines()]
    [table] = page.tables["training"]
    assert column(table, "epoch") == [str(r["epoch"]) for r in history]
    assert column(table, "train_loss") == [f"{r['train_loss']:.4f}" for r in history]


def test_confusion_matrix_counts_every_evaluated_row(report, audited):
    _, page = report
    rows = _manifest(audited)["data"]["rows"]["test"]
    [table] = page.tables["confusion"]
    counts = [[int(c) for c in row[1:-1]] for row in table[1:]]
    assert sum(map(sum, counts)) == rows
    metrics = json.loads((audited.registry().resolve(audited.ref).path / "metrics.json")
                         .read_text())
    assert counts == metrics["confusion_matrix"]  # the same split training scored


def test_roc_auc_and_average_precision_are_sklearns(report, audited):
    from sklearn.metrics import average_precision_score, roc_auc_score

    _, page = report
    y, proba = _test_split(audited)
    [roc] = page.tables["roc"]
    assert column(roc, "class (against the rest)") == ["low"]  # binary: the second class
    assert column(roc, "ROC AUC") == [f"{roc_auc_score(y == 1, proba[:, 1]):.4f}"]
    [pr] = page.tables["pr"]
    assert column(pr, "average precision") == [
        f"{average_precision_score(y == 1, proba[:, 1]):.4f}"]
    assert column(pr, "share of rows (chance)") == [f"{np.mean(y == 1):.4f}"]


def test_calibration_fairness_and_importance_are_the_packages(report, audited):
    _, page = report
    manifest = _manifest(audited)
    [calibration] = page.tables["calibration"]
    assert calibration[1] == ["expected calibration error",
                              f"{manifest['calibration']['ece_before']:.4f}",
                              f"{manifest['calibration']['ece_after']:.4f}"]
    audit = manifest["fairness"]["audit"]
    groups, gaps, groups_after, gaps_after = page.tables["fairness"]
    names = [g.removesuffix(" (small)") for g in column(groups, "group")]
    assert names == [g["group"]["group"] for g in audit["by_group"]] + ["overall"]
    assert column(groups, "rows")[:-1] == [str(g["count"]) for g in audit["by_group"]]
    assert gaps[1][:2] == ["demographic parity difference",
                           f"{audit['demographic_parity_difference']:.4f}"]
    after = manifest["fairness"]["mitigation"]["audit_after"]
    assert gaps_after[0] == ["gap", "model", "with mitigation", "fair value"]
    assert gaps_after[1][2] == f"{after['demographic_parity_difference']:.4f}"
    [importance] = page.tables["importance"]
    features = manifest["explain"]["permutation_importance"]["features"]
    assert column(importance, "input") == [f["feature"] for f in features]


def test_compression_and_cost_sections(report, audited):
    _, page = report
    [table] = page.tables["compression"]
    refs = column(table, "ref")
    assert refs[0] == audited.ref and len(refs) == 2  # the parent, then its int8 variant
    assert column(table, "variant") == ["parent (this report)", "int8"]
    cost_table = page.tables["cost"][0]
    assert cost_table[1][0] == "serving cost per 1,000 predictions"
    assert cost_table[1][1].startswith("$")
    plans = page.tables["cost"][1]
    assert "starter" in column(plans, "plan")


def test_labels_are_escaped_and_nothing_is_fetched(report):
    result, page = report
    html = result.path.read_text(encoding="utf-8")
    assert MARKUP_LABEL not in html  # never markup: not in the tables, not in the charts
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert any(MARKUP_LABEL in " ".join(row) for row in page.tables["confusion"][0])
    # nothing to load: no src/href to another host, no stylesheet or font links
    assert [link for link in page.links if re.match(r"(https?:)?//", link[2])] == []
    head, body = html.split("</head>")
    style = head.split("<style>")[1].split("</style>")[0]
    assert "<link" not in html and "@import" not in style and "url(" not in style
    # plotly.js inlined once, in the head, before the charts that use it
    assert html.count('id="plotly-bundle"') == 1 and 'id="plotly-bundle"' in head
    assert body.count("Plotly.newPlot(") == sum(page.charts.values())


def test_a_run_directory_gives_the_same_report(report, audited, tmp_path):
    result, _ = report
    again = write_report(audited.run_dir, tmp_path / "again.html",
                         registry=audited.registry())
    assert again.model_ref == audited.ref
    generated = re.compile(r'<span id="generated">[^<]*</span>')
    assert generated.sub("", again.path.read_text()) == generated.sub(
        "", result.path.read_text())


def test_a_variant_reports_its_parents_run_and_its_own_predictions(audited, tmp_path):
    registry = audited.registry()
    [int8] = [r for r in registry.versions("audited") if r.parent == audited.ref]
    result = write_report(int8.ref, tmp_path / "int8.html", registry=registry)
    page = read_page(result.path)
    assert {"training", "confusion", "calibration", "fairness", "compression"} <= set(
        result.sections)
    assert f"trained {audited.ref}, the model {int8.ref} derives from" in page.text["training"]
    assert column(page.tables["compression"][0], "variant") == ["parent", "int8 (this report)"]
    assert "cost" in result.omitted  # no estimate saved for the variant


def test_data_file_adds_its_own_metrics_and_predictions(audited, tmp_path):
    import pandas as pd

    rows = pd.read_csv(audited.csv).head(50)
    data = tmp_path / "fresh.csv"
    rows.to_csv(data, index=False)
    result = write_report(audited.ref, tmp_path / "fresh.html", data=data,
                          registry=audited.registry())
    page = read_page(result.path)
    [metrics] = page.tables["metrics"]
    assert metrics[0][-1] == f"on {data} (50 rows)"
    [confusion] = page.tables["confusion"]
    assert sum(int(c) for row in confusion[1:] for c in row[1:-1]) == 50
