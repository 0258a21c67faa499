"""Metrics as rich tables for the terminal (`foundry train`, `foundry evaluate`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table


def metrics_table(metrics: Mapping[str, Any], title: str) -> Table:
    """One row per scalar metric, values to 4 decimals; lists (confusion matrix) are skipped
    and an undefined metric (None) shows as "n/a". When fairness mitigation changed the
    decisions (an "unmitigated" entry), the values are those of the decisions returned
    and a second column gives the most probable class's."""
    from foundry.evaluation.metrics import UNMITIGATED

    unmitigated = metrics.get(UNMITIGATED)
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("with mitigation" if unmitigated else "value", justify="right")
    if unmitigated:
        table.add_column("without", justify="right")
    for name, value in metrics.items():
        text = _cell(value)
        if text is not None:
            if not unmitigated:
                table.add_row(name, text)
            elif name in unmitigated:
                table.add_row(name, text, _cell(unmitigated[name]) or "")
            else:  # probability metrics (ROC AUC, log loss) do not depend on the decisions
                table.add_row(name, text, "(same)")
    return table


def _cell(value: Any) -> str | None:
    """A scalar metric as text; None for what is not one (a matrix, a nested dict)."""
    if value is None:
        return "n/a"
    if isinstance(value, int):  # bool included
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return None


def confusion_table(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> Table:
    """Confusion matrix with true classes as rows and predicted classes as columns."""
    if len(matrix) != len(classes) or any(len(row) != len(classes) for row in matrix):
        raise ValueError(
            f"confusion matrix must be {len(classes)}x{len(classes)} to match the classes"
        )
    table = Table(title="confusion matrix (rows: true, columns: predicted)")
    table.add_column("true \\ predicted")
    for name in classes:
        table.add_column(str(name), justify="right")
    for name, row in zip(classes, matrix, strict=True):
        table.add_row(str(name), *(str(int(count)) for count in row))
    return table
