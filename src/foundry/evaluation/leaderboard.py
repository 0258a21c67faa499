"""A model search's leaderboard as people read it: one table, the same in the run's
output, the HTML report (`foundry report`) and the dashboard.

The search (`model: {type: auto}`, foundry.families.auto) writes the `leaderboard`
section of the winner's foundry.json:

    {"metric": "accuracy", "goal": "max", "split": "val", "budget_seconds": 300.0,
     "seconds": 41.2, "winner": "gbm",
     "rows": [{"model": "gbm", "type": "gbm", "status": "best", "note": "",
               "metric": 0.871, "log_loss": 0.29, "fit_seconds": 1.4, "epochs": 57,
               "predict_ms_per_1k": 3.1, "package_bytes": 312000}, ...]}

rows are ranked: trained candidates best first by `metric`, then those not trained
(`skipped`, `failed`) in the order they were tried.
"""

from __future__ import annotations

from typing import Any

__all__ = ["leaderboard_caption", "leaderboard_table"]

COLUMNS = [
    "rank",
    "model",
    "val {metric}",
    "fit s",
    "predict ms / 1k rows",
    "package",
    "status",
    "note",
]


def leaderboard_table(section: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(column names, rows of cells) of a `leaderboard` section."""
    metric = str(section.get("metric", "metric"))
    columns = [c.format(metric=metric.replace("_", " ")) for c in COLUMNS]
    rows = []
    rank = 0
    for row in section.get("rows") or []:
        trained = row.get("metric") is not None
        rank += trained
        rows.append(
            [
                str(rank) if trained else "",
                str(row.get("model", "")),
                _number(row.get("metric"), 4),
                _number(row.get("fit_seconds"), 2),
                _number(row.get("predict_ms_per_1k"), 1),
                _size(row.get("package_bytes")),
                str(row.get("status", "")),
                str(row.get("note") or ""),
            ]
        )
    return columns, rows


def leaderboard_caption(section: dict[str, Any]) -> str:
    """One line: what was compared, on what, within which budget, and who won."""
    goal = "higher" if section.get("goal") == "max" else "lower"
    return (
        f"Model search: {len(section.get('rows') or [])} candidates ranked by "
        f"validation {section.get('metric')} ({goal} is better) on the "
        f"{section.get('split', 'val')} split; "
        f"{_number(section.get('seconds'), 1)} s of a {_number(section.get('budget_seconds'), 0)}"
        f" s budget. Registered: {section.get('winner')}."
    )


def _number(value: Any, decimals: int) -> str:
    if value is None:
        return "—"
    return f"{float(value):,.{decimals}f}"


def _size(n: Any) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} GB"
