"""`foundry report`: one self-contained HTML file about a model — training and validation
curves, learning rate, metrics, confusion matrix, ROC and precision-recall curves,
calibration, fairness per group, feature importance, data and privacy, the compression
comparison and the cost estimate.

    from foundry.report import write_report
    write_report("penguins:latest", "penguins.html").sections

Imported lazily (plotly, numpy): `foundry --help` does not pay for them. See docs/REPORT.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from foundry.report.stage import ReportResult, write_report

__all__ = ["ReportResult", "write_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from foundry.report import stage

        return getattr(stage, name)
    raise AttributeError(f"module 'foundry.report' has no attribute {name!r}")
