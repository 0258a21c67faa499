"""The report's charts, as Plotly figures: plain data in, one `go.Figure` out.

Every string that comes from the user's data or config (class labels, column names,
group values, metric names) goes through `label()`: Plotly draws a small HTML subset
(`<b>`, `<br>`, links) inside chart text, and a label must show as typed, not as markup.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from foundry.extras import require

# The report's modules import this one at their top, so this one check, before the plotly
# imports, gives `foundry report` (and the dashboard's report link) the one-line hint.
require("report", "plotly", "the HTML report (foundry report)")
# ruff: noqa: E402
import plotly.graph_objects as go
from plotly.subplots import make_subplots

HEIGHT = 380
"""Pixels: two charts fit on a laptop screen."""
MAX_CURVE_POINTS = 1000
"""Points kept per ROC / PR curve (evenly spaced), so a 100k-row split stays a small file."""
MAX_SCATTER_POINTS = 5000
"""Regression points drawn at most (a seeded sample beyond it)."""


def label(value: Any) -> str:
    """`value` as text Plotly shows literally (its HTML subset escaped)."""
    return html.escape(str(value), quote=False)


def _layout(fig: go.Figure, title: str, x: str, y: str, **extra: Any) -> go.Figure:
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=HEIGHT,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        xaxis_title=x,
        yaxis_title=y,
        legend={"orientation": "h", "y": -0.2},
        **extra,
    )
    return fig


def epoch_curves(
    history: Sequence[dict[str, Any]], keys: Sequence[str], title: str, y: str,
    *, best_epoch: int | None = None, log_y: bool = False,
) -> go.Figure:
    """One line per key of the per-epoch records, against the epoch."""
    fig = go.Figure()
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(history)]
    for key in keys:
        fig.add_trace(
            go.Scatter(x=epochs, y=[r.get(key) for r in history], mode="lines+markers",
                       name=label(key))
        )
    if best_epoch:
        fig.add_vline(x=best_epoch, line_dash="dot", line_color="grey",
                      annotation_text=f"best epoch {best_epoch}")
    _layout(fig, title, "epoch", y)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> go.Figure:
    """Counts with true classes as rows (top to bottom) and predicted ones as columns."""
    names = [label(c) for c in classes]
    fig = go.Figure(
        go.Heatmap(z=matrix, x=names, y=names, colorscale="Blues", text=matrix,
                   texttemplate="%{text}", hovertemplate="true %{y}<br>predicted %{x}"
                   "<br>%{z} rows<extra></extra>")
    )
    _layout(fig, "Confusion matrix", "predicted", "true")
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return fig


def roc(curves: Sequence[dict[str, Any]]) -> go.Figure:
    """curves: [{"class", "fpr", "tpr", "auc"}]; the diagonal is a classifier that guesses."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line={"dash": "dash", "color": "grey"}))
    for c in curves:
        fpr, tpr = _thin(c["fpr"], c["tpr"])
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines",
                                 name=f"{label(c['class'])} (AUC {c['auc']:.4f})"))
    return _layout(fig, "ROC curve (one-vs-rest)", "false positive rate",
                   "true positive rate")


def precision_recall(curves: Sequence[dict[str, Any]]) -> go.Figure:
    """curves: [{"class", "precision", "recall", "ap", "base_rate"}]."""
    fig = go.Figure()
    for c in curves:
        recall, precision = _thin(c["recall"], c["precision"])
        fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines",
                                 name=f"{label(c['class'])} (AP {c['ap']:.4f})"))
    return _layout(fig, "Precision-recall curve (one-vs-rest)", "recall", "precision",
                   yaxis_range=[0, 1.02])


def reliability(bins: dict[str, Sequence[dict[str, Any]]]) -> go.Figure:
    """Accuracy against mean confidence per bin (a calibrated model lies on the
    diagonal); bins: {"before": [...], "after": [...]} as `reliability()` returns them."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="calibrated",
                             line={"dash": "dash", "color": "grey"}))
    for name, rows in bins.items():
        full = [b for b in rows if b.get("count")]
        fig.add_trace(
            go.Scatter(
                x=[b["confidence"] for b in full], y=[b["accuracy"] for b in full],
                mode="lines+markers", name=name,
                customdata=[b["count"] for b in full],
                hovertemplate="confidence %{x:.3f}<br>accuracy %{y:.3f}<br>%{customdata} rows",
            )
        )
    return _layout(fig, "Reliability diagram", "mean confidence (top class)", "accuracy",
                   xaxis_range=[0, 1], yaxis_range=[0, 1.02])


def importance(features: Sequence[dict[str, Any]], metric: str) -> go.Figure:
    """Permutation importance, largest on top, with ± one standard deviation."""
    ordered = list(reversed(features))
    fig = go.Figure(
        go.Bar(
            x=[f["importance"] for f in ordered], y=[label(f["feature"]) for f in ordered],
            orientation="h",
            error_x={"type": "data", "array": [f.get("std") or 0 for f in ordered]},
        )
    )
    _layout(fig, "Permutation importance", f"drop in {label(metric)} when shuffled", "")
    fig.update_layout(height=max(HEIGHT, 28 * len(ordered) + 120))
    fig.update_yaxes(type="category")
    return fig


def fairness(groups: Sequence[dict[str, Any]], title: str) -> go.Figure:
    """Per-group accuracy, selection rate, TPR and FPR side by side (defined ones only)."""
    names = [label(g["name"]) for g in groups]
    fig = go.Figure()
    for key, name in (("accuracy", "accuracy"), ("selection_rate", "selection rate"),
                      ("tpr", "TPR"), ("fpr", "FPR")):
        values = [g.get(key) for g in groups]
        if any(v is not None for v in values):
            fig.add_trace(go.Bar(x=names, y=values, name=name))
    _layout(fig, title, "group", "rate", barmode="group", yaxis_range=[0, 1.02])
    fig.update_xaxes(type="category")
    return fig


def predicted_vs_actual(y: Any, predicted: Any, target: str) -> go.Figure:
    import numpy as np

    y, predicted = _sample(np.asarray(y), np.asarray(predicted))
    low, high = float(min(y.min(), predicted.min())), float(max(y.max(), predicted.max()))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="perfect",
                             line={"dash": "dash", "color": "grey"}))
    fig.add_trace(go.Scatter(x=y, y=predicted, mode="markers", name="rows",
                             marker={"size": 5, "opacity": 0.6}))
    return _layout(fig, "Predicted against actual", f"actual {label(target)}",
                   f"predicted {label(target)}")


def residuals(y: Any, predicted: Any, target: str) -> go.Figure:
    import numpy as np

    y, predicted = _sample(np.asarray(y), np.asarray(predicted))
    fig = go.Figure(go.Scatter(x=predicted, y=y - predicted, mode="markers", name="rows",
                               marker={"size": 5, "opacity": 0.6}))
    fig.add_hline(y=0, line_dash="dash", line_color="grey")
    return _layout(fig, "Residuals", f"predicted {label(target)}", "actual - predicted")


def compression(variants: Sequence[dict[str, Any]], batch_sizes: Sequence[str],
                per_token: bool) -> go.Figure:
    """Size on disk and median latency per variant."""
    names = [label(f"{v['method']} ({v['ref']})") for v in variants]
    unit = "ms/token" if per_token else "ms"
    fig = make_subplots(rows=1, cols=2, subplot_titles=("size (MB)", f"p50 latency ({unit})"))
    fig.add_trace(go.Bar(x=names, y=[v["size_bytes"] / 1e6 for v in variants], name="size",
                         showlegend=False), row=1, col=1)
    for b in batch_sizes:
        fig.add_trace(go.Bar(x=names, y=[(v.get("latency_ms") or {}).get(b) for v in variants],
                             name=f"batch {b}"), row=1, col=2)
    _layout(fig, "Compressed variants", "", "", barmode="group")
    fig.update_xaxes(type="category")
    return fig


def plans(rows: Sequence[dict[str, Any]], currency: str) -> go.Figure:
    """Each plan's monthly price against what serving its included volume costs."""
    names = [label(p.get("name", "")) for p in rows]
    fig = go.Figure([
        go.Bar(x=names, y=[p.get("price") for p in rows], name="price per month"),
        go.Bar(x=names, y=[p.get("serving_cost") for p in rows], name="serving cost"),
        go.Bar(x=names, y=[p.get("margin") for p in rows], name="margin"),
    ])
    _layout(fig, "Plans: price, serving cost and margin per customer", "plan",
            label(currency), barmode="group")
    fig.update_xaxes(type="category")
    return fig


def _thin(x: Any, y: Any) -> tuple[list[float], list[float]]:
    """At most MAX_CURVE_POINTS evenly spaced points of a curve (first and last kept)."""
    import numpy as np

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) > MAX_CURVE_POINTS:
        keep = np.unique(np.linspace(0, len(x) - 1, MAX_CURVE_POINTS).round().astype(int))
        x, y = x[keep], y[keep]
    return x.round(6).tolist(), y.round(6).tolist()


def _sample(y: Any, predicted: Any) -> tuple[Any, Any]:
    import numpy as np

    if len(y) <= MAX_SCATTER_POINTS:
        return y, predicted
    keep = np.sort(np.random.default_rng(0).choice(len(y), MAX_SCATTER_POINTS, replace=False))
    return y[keep], predicted[keep]
