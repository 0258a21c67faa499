from __future__ import annotations

import pytest
from rich.console import Console

import foundry.evaluation
from foundry.evaluation import confusion_table, metrics_table


def _render(table) -> str:
    console = Console(record=True, width=120)
    console.print(table)
    return console.export_text()


def test_metrics_table_shows_scalars_to_four_decimals():
    metrics = {"accuracy": 0.833333, "roc_auc": None, "confusion_matrix": [[1, 0], [0, 1]]}
    text = _render(metrics_table(metrics, "validation"))
    assert "validation" in text
    assert "0.8333" in text
    assert "n/a" in text
    assert "confusion_matrix" not in text


def test_confusion_table_rows_are_true_classes():
    text = _render(confusion_table([[5, 1], [2, 7]], ["cat", "dog"]))
    lines = [line for line in text.splitlines() if line.strip().startswith(("│ cat", "│ dog"))]
    assert [line.split()[1:4:2] for line in lines] == [["cat", "5"], ["dog", "2"]]


def test_confusion_table_checks_its_shape():
    with pytest.raises(ValueError, match="2x2"):
        confusion_table([[1, 2, 3]], ["a", "b"])


def test_public_surface():
    assert sorted(foundry.evaluation.__all__) == [
        "compute_metrics",
        "confusion_table",
        "metrics_table",
        "probabilities",
    ]
    for name in foundry.evaluation.__all__:
        assert hasattr(foundry.evaluation, name)


def test_metrics_table_puts_the_unmitigated_values_beside():
    metrics = {"accuracy": 0.834, "roc_auc": 0.9, "unmitigated": {"accuracy": 0.855}}
    text = _render(metrics_table(metrics, "test"))
    row = next(line for line in text.splitlines() if "accuracy" in line)
    assert row.index("0.8340") < row.index("0.8550")
    assert "with mitigation" in text and "(same)" in text
