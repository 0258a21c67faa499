"""Metrics as rich tables for the terminal (`foundry train`, `foundry evaluate`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table


def metrics_table(metrics: Mapping[str, Any], title: str) -> Table:
    """One row per scalar metric, values to 4 decimals; lists (confusion matrix) are skipped
    and an undefined metric (None) shows as "n/a"."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        if value is None:
            table.add_row(name, "n/a")
        elif isinstance(value, int):  # bool included
            table.add_row(name, str(value))
        elif isinstance(value, float):
            table.add_row(name, f"{value:.4f}")
    return table


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
