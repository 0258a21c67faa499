"""The report's sections, in page order: each builder takes what was gathered and returns
its blocks (tables, charts, notes) or the one-line reason it does not apply, so the page
never shows an empty chart.

To add a section: write a builder `(Context) -> Blocks | str` and decorate it with
`@section(id, title)`; the page, its navigation and `ReportResult.sections` follow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from foundry.report import figures
from foundry.report.evaluation import Evaluated, Unavailable
from foundry.report.sources import Sources


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    kind: str = "table"


@dataclass(frozen=True)
class Chart:
    figure: Any
    """A plotly Figure; `foundry.report.page` turns it into a div and a script."""
    kind: str = "chart"


@dataclass(frozen=True)
class Note:
    text: str
    kind: str = "note"


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    blocks: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class Omitted:
    id: str
    title: str
    reason: str


@dataclass(frozen=True)
class Context:
    sources: Sources
    evaluated: Evaluated | Unavailable
    cost: tuple[dict[str, Any], Any] | None = None
    """(cost estimate, the file it came from) (`foundry.report.cost.find_cost`), or None."""

    @property
    def manifest(self) -> dict[str, Any]:
        return self.sources.manifest

    @property
    def language_model(self) -> bool:
        """A GPT, or a Hugging Face causal LM or embedding model: no labels to predict."""
        from foundry.lm.load import is_language_package

        hf_task = (self.manifest.get("hf") or {}).get("task")
        return is_language_package(self.manifest) and hf_task not in (
            "classification", "regression")


Block = Table | Chart | Note
Blocks = list[Block]
Builder = Callable[[Context], "Blocks | str"]
"""A section's content, or the one-line reason it does not apply."""
BUILDERS: list[tuple[str, str, Builder]] = []
"""(id, title, builder) in page order; filled by `@section`."""


def section(id: str, title: str) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        BUILDERS.append((id, title, builder))
        return builder

    return register


def build_sections(context: Context) -> list[Section | Omitted]:
    """Every section of the report, in page order."""
    out: list[Section | Omitted] = []
    for id_, title, builder in BUILDERS:
        result = builder(context)
        out.append(Omitted(id_, title, result) if isinstance(result, str)
                   else Section(id_, title, result))
    return out


def task_name(manifest: dict[str, Any]) -> str:
    """binary, multiclass, regression, language_modeling (or the hf task)."""
    task = manifest.get("task")
    if isinstance(task, dict) and task.get("task"):
        return str(task["task"])
    if isinstance(task, str):
        return task
    return str((manifest.get("hf") or {}).get("task") or "unknown")


def fmt(value: Any) -> str:
    """A cell: 4 decimals for measurements, thousands separators for counts."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.3g}"
        if abs(value) >= 1000:  # throughputs, capacities: the decimals are noise
            return f"{value:,.0f}"
        return f"{value:,.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    return str(value)


def _scalars(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in values.items()
        if v is None or isinstance(v, (int, float, str, bool))
    }


# ------------------------------------------------------------------ training


@section("training", "Training curves")
def training_curves(ctx: Context) -> Blocks | str:
    history = ctx.sources.history
    if not history:
        return _no_history(ctx)
    best = (ctx.manifest.get("training") or {}).get("best_epoch")
    if ctx.sources.run_ref != ctx.sources.ref:
        best = None  # the best epoch of the parent's run is not this model's
    blocks: Blocks = [_run_note(ctx)]
    losses = [k for k in ("train_loss", "val_loss") if any(k in r for r in history)]
    if losses:
        blocks.append(Chart(figures.epoch_curves(history, losses, "Loss", "loss",
                                                 best_epoch=best)))
    skip = {"epoch", "seconds", "lr", "epsilon", "tokens_per_second", *losses}
    metrics = [
        k for k in history[-1]
        if k.startswith("val_") and k not in skip and k != "val_log_loss"
        and isinstance(history[-1][k], (int, float))
    ]
    bounded = [k for k in metrics if all(0 <= (r.get(k) or 0) <= 1 for r in history)]
    if bounded:
        blocks.append(Chart(figures.epoch_curves(history, bounded, "Validation metrics",
                                                 "value", best_epoch=best)))
    other = [k for k in metrics if k not in bounded]
    if other:  # perplexity: unbounded, read on a log scale
        blocks.append(Chart(figures.epoch_curves(history, other, "Validation " + ", ".join(
            k.removeprefix("val_") for k in other), "value", best_epoch=best, log_y=True)))
    rows = [[fmt(r.get("epoch")), *(fmt(r.get(k)) for k in losses),
             *(fmt(r.get(k)) for k in metrics[:4]), fmt(r.get("seconds"))] for r in history]
    blocks.append(Table(["epoch", *losses, *metrics[:4], "seconds"], rows,
                        caption="per epoch (metrics.jsonl)"))
    return blocks


@section("learning_rate", "Learning rate")
def learning_rate(ctx: Context) -> Blocks | str:
    history = ctx.sources.history
    if not history:
        return _no_history(ctx)
    if not any("lr" in r for r in history):
        return "the run's metrics.jsonl records no learning rate"
    scheduler = ((ctx.manifest.get("config") or {}).get("train") or {}).get("scheduler") or {}
    kind = scheduler.get("type", "none") if isinstance(scheduler, dict) else str(scheduler)
    fig = figures.epoch_curves(history, ["lr"], f"Learning rate (scheduler: {kind})",
                               "learning rate")
    return [
        Note("The optimizer's learning rate at the end of each epoch."), Chart(fig)]


# ------------------------------------------------------------------ metrics


@section("metrics", "Metrics")
def metrics_section(ctx: Context) -> Blocks | str:
    registered = _scalars(ctx.sources.metrics)
    split = ((ctx.manifest.get("config") or {}).get("evaluate") or {}).get("split", "test")
    if "split" in registered:
        split = registered["split"]
    columns = ["metric", f"at training ({split} split)"]
    names = list(registered)
    ev = ctx.evaluated
    fresh: dict[str, Any] = {}
    if isinstance(ev, Evaluated) and not ev.source.startswith("the "):
        fresh = _scalars(ev.metrics or {})
        columns.append(f"on {ev.source} ({ev.rows:,} rows)")
        names += [k for k in fresh if k not in registered]
    # fairness mitigation: the values score the decisions returned; the most probable
    # class's follow as "<metric> unmitigated" rows
    unmitigated = [_scalars((m or {}).get("unmitigated") or {})
                   for m in (ctx.sources.metrics, ev.metrics if fresh else None)]
    rows = []
    for name in names:
        row = [name, fmt(registered.get(name)) if name in registered else ""]
        if fresh:
            row.append(fmt(fresh.get(name)) if name in fresh else "")
        rows.append(row)
    for name in dict.fromkeys([*unmitigated[0], *unmitigated[1]]):
        row = [f"{name} unmitigated", fmt(unmitigated[0].get(name))
               if name in unmitigated[0] else ""]
        if fresh:
            row.append(fmt(unmitigated[1].get(name)) if name in unmitigated[1] else "")
        rows.append(row)
    if not rows:
        return "the package's metrics.json holds no values"
    blocks: Blocks = []
    # a recommender: the popularity baseline on the same split, so the lift is visible
    baseline = _scalars((ctx.sources.metrics or {}).get("popularity") or {})
    if baseline:
        columns.append(f"popularity baseline ({split} split)")
        for row in rows:
            row.append(fmt(baseline.get(row[0])) if row[0] in baseline else "")
    if unmitigated[0] or unmitigated[1]:
        blocks.append(Note(
            "With fairness mitigation: the metrics are those of the decisions the model "
            "returns (group thresholds, applied when the sensitive columns are supplied); "
            "the rows marked unmitigated are of the most probable class."))
    return [*blocks, Table(columns, rows)]


@section("leaderboard", "Model search")
def leaderboard_section(ctx: Context) -> Blocks | str:
    from foundry.evaluation.leaderboard import leaderboard_caption, leaderboard_table

    board = ctx.manifest.get("leaderboard")
    if not isinstance(board, dict):
        return "the model was not picked by a model search: model.type auto"
    columns, rows = leaderboard_table(board)
    return [Note(leaderboard_caption(board)), Table(columns, rows)]


@section("confusion", "Confusion matrix")
def confusion_section(ctx: Context) -> Blocks | str:
    ev = _classifier(ctx)
    if isinstance(ev, str):
        return ev
    from sklearn.metrics import confusion_matrix

    n = len(ev.classes)
    if n > 50:
        return f"{n} classes: too many for a readable matrix"
    chosen = ev.proba.argmax(axis=1) if ev.decisions is None else ev.decisions
    matrix = confusion_matrix(ev.y, chosen, labels=list(range(n))).tolist()
    rows = [[f"true {c}", *(str(v) for v in row), str(sum(row))]
            for c, row in zip(ev.classes, matrix, strict=True)]
    rule = ("the decision fairness mitigation returns (group thresholds)"
            if ev.decisions is not None else "the class with the highest probability")
    table = Table(["", *(f"predicted {c}" for c in ev.classes), "rows"], rows,
                  caption=f"{ev.rows:,} rows of {ev.source}; {rule} is the prediction")
    return [Chart(figures.confusion(matrix, ev.classes)), table]


@section("roc", "ROC curves")
def roc_section(ctx: Context) -> Blocks | str:
    ev = _classifier(ctx)
    if isinstance(ev, str):
        return ev
    from sklearn.metrics import roc_auc_score, roc_curve

    curves = []
    for k, cls in _one_vs_rest(ev):
        truth = ev.y == k
        fpr, tpr, _ = roc_curve(truth, ev.proba[:, k])
        curves.append({"class": cls, "fpr": fpr, "tpr": tpr,
                       "auc": float(roc_auc_score(truth, ev.proba[:, k]))})
    if not curves:
        return f"{ev.source} holds one class only: no curve"
    rows = [[c["class"], fmt(c["auc"])] for c in curves]
    if len(curves) > 1:
        rows.append(["macro average", fmt(float(np.mean([c["auc"] for c in curves])))])
    return [
        Chart(figures.roc(curves)),
        Table(["class (against the rest)", "ROC AUC"], rows, caption=f"on {ev.source}")]


@section("pr", "Precision-recall curves")
def pr_section(ctx: Context) -> Blocks | str:
    ev = _classifier(ctx)
    if isinstance(ev, str):
        return ev
    from sklearn.metrics import average_precision_score, precision_recall_curve

    curves = []
    for k, cls in _one_vs_rest(ev):
        truth = ev.y == k
        precision, recall, _ = precision_recall_curve(truth, ev.proba[:, k])
        curves.append({"class": cls, "precision": precision, "recall": recall,
                       "ap": float(average_precision_score(truth, ev.proba[:, k])),
                       "base_rate": float(truth.mean())})
    if not curves:
        return f"{ev.source} holds one class only: no curve"
    rows = [[c["class"], fmt(c["ap"]), fmt(c["base_rate"])] for c in curves]
    return [
        Chart(figures.precision_recall(curves)),
        Table(["class (against the rest)", "average precision", "share of rows (chance)"],
              rows, caption=f"on {ev.source}")]


@section("regression", "Predicted against actual")
def regression_section(ctx: Context) -> Blocks | str:
    ev = ctx.evaluated
    if isinstance(ev, Unavailable):
        return ev.reason
    if ev.classification:
        return "a classifier: see the confusion matrix and curves"
    target = str((ctx.manifest.get("task") or {}).get("target", "target"))
    residual = ev.y - ev.predicted
    rows = [[fmt(v) for v in (
        float(np.mean(residual)), float(np.std(residual)),
        float(np.percentile(np.abs(residual), 50)), float(np.percentile(np.abs(residual), 90)),
        float(np.max(np.abs(residual))))]]
    return [
        Chart(figures.predicted_vs_actual(ev.y, ev.predicted, target)),
        Chart(figures.residuals(ev.y, ev.predicted, target)),
        Table(["mean residual", "std", "median |residual|", "90th percentile", "largest"],
              rows, caption=f"{ev.rows:,} rows of {ev.source}, in units of {target}")]


@section("calibration", "Calibration")
def calibration_section(ctx: Context) -> Blocks | str:
    calibration = ctx.manifest.get("calibration")
    if ctx.language_model:
        return "a language model has no class probabilities to calibrate"
    if not calibration:
        if task_name(ctx.manifest) == "regression":
            reason = "a regressor has no class probabilities to calibrate"
        elif (ctx.manifest.get("compression") or {}).get("method") in ("prune", "distill"):
            reason = "a retrained variant drops its parent's calibration"
        else:
            reason = "not measured (evaluate.calibration off, or no validation split)"
        return reason
    blocks: Blocks = []
    if calibration.get("note"):
        blocks.append(Note(calibration["note"]))
    bins = {name: calibration[f"reliability_{name}"] for name in ("before", "after")
            if calibration.get(f"reliability_{name}")}
    if bins:
        blocks.append(Chart(figures.reliability(
            {f"{k} temperature scaling" if k == "before" else
             f"after (T = {fmt(calibration.get('temperature'))})": v for k, v in bins.items()})))
    rows = [[name, fmt(calibration.get(f"{key}_before")), fmt(calibration.get(f"{key}_after"))]
            for name, key in (("expected calibration error", "ece"), ("accuracy", "accuracy"),
                              ("log loss (NLL)", "nll"))]
    fitted = calibration.get("fitted_temperature")
    if fitted is not None and not calibration.get("kept"):
        # the identity is recorded: say what was fitted and why it is not applied
        applied = (f"temperature 1 applied: the fitted T = {fmt(fitted)} did not lower the "
                   f"validation ECE ({fmt(calibration.get('val_ece_before'))} → "
                   f"{fmt(calibration.get('val_ece_after'))})")
    else:
        applied = (f"temperature {fmt(calibration.get('temperature'))} fitted on the "
                   f"{calibration.get('fitted_on', 'val')} split")
    blocks.append(Table(["", "before", "after"], rows, caption=(
        f"{applied} ({fmt(calibration.get('n_val'))} validation rows); "
        f"measured on {fmt(calibration.get('n_eval'))} evaluation rows, "
        f"{fmt(calibration.get('bins'))} bins")))
    return blocks


# ------------------------------------------------------------------ trust


@section("fairness", "Fairness")
def fairness_section(ctx: Context) -> Blocks | str:
    fairness = ctx.manifest.get("fairness")
    if not fairness or not fairness.get("audit"):
        if ctx.language_model:
            reason = "a language model has no decisions to audit per group"
        elif task_name(ctx.manifest) == "regression":
            reason = "the audit needs a classifier"
        elif (ctx.manifest.get("compression") or {}).get("method") in ("prune", "distill"):
            reason = "a retrained variant drops its parent's audit"
        else:
            reason = "not audited: set evaluate.fairness.sensitive_features"
        return reason
    audit = fairness["audit"]
    features = ", ".join(audit.get("sensitive_features") or [])
    blocks: Blocks = [Note(
        f"Decisions of the model per group of {features} on the evaluation split"
        + (f"; selected = '{audit['positive_class']}'" if audit.get("positive_class") else "")
        + " (Fairlearn MetricFrame).")]
    groups = _groups(audit)
    blocks.append(Chart(figures.fairness(groups, f"Per group: {figures.label(features)}")))
    blocks.append(_group_table(groups, audit))
    blocks.append(_gaps_table({"model": audit}))
    mitigation = fairness.get("mitigation")
    if mitigation and mitigation.get("audit_after"):
        after = mitigation["audit_after"]
        blocks.append(Note(
            f"Mitigation: group thresholds ({mitigation.get('constraint')}, objective "
            f"{mitigation.get('objective')}) fitted on the {mitigation.get('fitted_on', 'val')} "
            f"split; accuracy {fmt(mitigation.get('accuracy_before'))} → "
            f"{fmt(mitigation.get('accuracy_after'))}."))
        after_groups = _groups(after)
        blocks.append(Chart(figures.fairness(after_groups, "Per group, with mitigation")))
        blocks.append(_group_table(after_groups, after, caption="with mitigation"))
        blocks.append(_gaps_table({"model": audit, "with mitigation": after}))
    for note in audit.get("notes") or []:
        blocks.append(Note(note))
    return blocks


@section("importance", "Feature importance")
def importance_section(ctx: Context) -> Blocks | str:
    importance = (ctx.manifest.get("explain") or {}).get("permutation_importance")
    if not importance or not importance.get("features"):
        if ctx.language_model:
            reason = "a language model has no input columns to rank"
        elif (ctx.manifest.get("compression") or {}).get("method") in ("prune", "distill"):
            reason = "a retrained variant drops its parent's importances"
        else:
            reason = "not measured: evaluate.explain.permutation_importance is off"
        return reason
    features = importance["features"]
    metric = str(importance.get("metric", "score"))
    rows = [[f["feature"], fmt(f.get("importance")), fmt(f.get("std"))] for f in features]
    return [
        Note(f"How much {metric} drops when one input is shuffled "
             f"(baseline {fmt(importance.get('baseline'))} on {fmt(importance.get('rows'))} rows, "
             f"{fmt(importance.get('repeats'))} repeats)."),
        Chart(figures.importance(features, metric)),
        Table(["input", f"{metric} drop", "std"], rows)]


@section("data", "Data and privacy")
def data_section(ctx: Context) -> Blocks | str:
    manifest = ctx.manifest
    blocks: Blocks = []
    data = manifest.get("data") or {}
    rows = data.get("rows") or data.get("examples") or {}
    if rows:
        blocks.append(Table(["split", "rows"], [[k, fmt(v)] for k, v in rows.items()],
                            caption=f"from {data.get('path', '?')}"))
    pii = manifest.get("pii")
    if pii:
        findings = [[column, kind, fmt(count)]
                    for column, kinds in (pii.get("findings") or {}).items()
                    for kind, count in kinds.items()]
        blocks.append(Note(
            f"PII scan ({pii.get('action')}): {fmt(pii.get('rows_scanned'))} rows, columns "
            f"{fmt(pii.get('columns_scanned') or [])}; {fmt(pii.get('total', 0))} values found "
            f"in {fmt(pii.get('rows_with_pii', 0))} rows."))
        if findings:
            blocks.append(Table(["column", "kind", "values"], findings, caption="PII found"))
        idents = pii.get("identifier_columns") or []
        if idents:
            blocks.append(Table(["identifier column", "reason", "action"],
                                [[i.get("column"), i.get("reason"), i.get("action")]
                                 for i in idents]))
    else:
        blocks.append(Note("PII scanning was off for this model (data.pii.enabled: false)."))
    privacy = manifest.get("privacy")
    if privacy:
        blocks.append(Table(["differential privacy", "value"],
                            [[k, fmt(v)] for k, v in _scalars(privacy).items()],
                            caption="DP-SGD (Opacus): ε spent at δ"))
        if any("epsilon" in r for r in ctx.sources.history):
            blocks.append(Chart(figures.epoch_curves(ctx.sources.history, ["epsilon"],
                                                     "Privacy spent", "ε")))
    else:
        blocks.append(Note("Trained without differential privacy (train.privacy not set)."))
    return blocks


# ------------------------------------------------------------------ compression, cost


@section("compression", "Compression")
def compression_section(ctx: Context) -> Blocks | str:
    payload = ctx.sources.compression
    if payload is None:
        return (f"no compress run found for {ctx.sources.ref}: run "
                f"`foundry compress {ctx.sources.ref}`")
    variants = payload.get("variants") or []
    first = (variants[0].get("metrics") or {}) if variants else {}
    per_token = "perplexity" in first
    key = next((k for k in ("accuracy", "r2", "perplexity") if k in first), None)
    batches = [str(b) for b in payload.get("batch_sizes") or []] or sorted(
        {b for v in variants for b in (v.get("latency_ms") or {})}, key=int)
    unit = "ms/token" if per_token else "ms"
    # end to end (a /predict request's whole work from raw records, foundry.compression.
    # timing) beside the network alone, and the speed-up a request gets from it
    e2e = bool(variants and variants[0].get("end_to_end_ms"))
    parent_timed = (variants[0].get("end_to_end_ms") or variants[0].get("latency_ms") or {}
                    ) if variants else {}
    columns = ["variant", "ref", "size (MB)", "parameters",
               *(f"p50 {'model ' if e2e else ''}b={b} ({unit})" for b in batches),
               *(f"p50 end-to-end b={b} (ms)" for b in batches if e2e),
               f"speed-up{' end-to-end' if e2e else ''}",
               "tokens/s" if per_token else "rows/s"]
    if key:
        columns += [key, "change"]
    rows = []
    for v in variants:
        marks = [m for m, on in (("tagged", v.get("ref") == payload.get("tagged")),
                                 ("this report", v.get("ref") == ctx.sources.ref)) if on]
        timed = (v.get("end_to_end_ms") if e2e else v.get("latency_ms")) or {}
        speedups = [f"{parent_timed[b] / timed[b]:.2f}x" if timed.get(b) and b in parent_timed
                    else "n/a" for b in batches]
        row = [v.get("method", "") + (f" ({', '.join(marks)})" if marks else ""), v.get("ref", ""),
               fmt((v.get("size_bytes") or 0) / 1e6), fmt(v.get("parameters")),
               *(fmt((v.get("latency_ms") or {}).get(b)) for b in batches),
               *(fmt((v.get("end_to_end_ms") or {}).get(b)) for b in batches if e2e),
               " / ".join(speedups), fmt(v.get("throughput"))]
        if key:
            delta = (v.get("deltas") or {}).get(key)
            row += [fmt((v.get("metrics") or {}).get(key)),
                    "" if v.get("method") == "parent" or delta is None else f"{delta:+.4f}"]
        rows.append(row)
    blocks: Blocks = [
        Note(f"Measured in one process on {payload.get('data', '?')}, timings warmed up and "
             "interleaved (compare ratios, not numbers across runs)"
             + ("; end to end: a /predict request's work from raw JSON records, which the "
                "speed-up reads" if e2e else "")
             + f". {payload.get('selection', '')}"),
        Chart(figures.compression(variants, batches, per_token)),
        Table(columns, rows, caption=str(ctx.sources.compression_path or "")),
    ]
    for method, why in (payload.get("skipped") or {}).items():
        blocks.append(Note(f"{method} skipped: {why}"))
    return blocks


@section("cost", "Cost")
def cost_section(ctx: Context) -> Blocks | str:
    from foundry.report.cost import cost_blocks

    if ctx.cost is None:
        return f"no cost estimate — run `foundry cost {ctx.sources.ref}`"
    return cost_blocks(*ctx.cost)


# ------------------------------------------------------------------ helpers


def _classifier(ctx: Context) -> Evaluated | str:
    """The classifier's predictions, or why there are none (a one-line reason)."""
    ev = ctx.evaluated
    if isinstance(ev, Unavailable):
        return ev.reason
    if not ev.classification:
        return "a regressor: see predicted against actual"
    return ev


def _one_vs_rest(ev: Evaluated) -> list[tuple[int, str]]:
    """Binary: the second class (what `roc_auc` scores); multiclass: every class present
    with rows of both kinds (a class never seen has no curve)."""
    if len(ev.classes) == 2:
        present = set(np.unique(ev.y).tolist())
        return [(1, ev.classes[1])] if present == {0, 1} else []
    return [(k, c) for k, c in enumerate(ev.classes) if 0 < (ev.y == k).sum() < len(ev.y)]


def _groups(audit: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**g, "name": ", ".join(str(v) for v in (g.get("group") or {}).values())
             or g.get("key", "")} for g in audit.get("by_group") or []]


def _group_table(groups: list[dict[str, Any]], audit: dict[str, Any], caption: str = "") -> Table:
    overall = audit.get("overall") or {}
    rows = [[g["name"] + (" (small)" if g.get("small") else ""), fmt(g.get("count")),
             *(fmt(g.get(k)) for k in ("accuracy", "selection_rate", "tpr", "fpr"))]
            for g in groups]
    rows.append(["overall", fmt(overall.get("count")),
                 *(fmt(overall.get(k)) for k in ("accuracy", "selection_rate", "tpr", "fpr"))])
    return Table(["group", "rows", "accuracy", "selection rate", "TPR", "FPR"], rows,
                 caption=caption)


def _gaps_table(audits: dict[str, dict[str, Any]]) -> Table:
    gaps = (("demographic parity difference", "demographic_parity_difference", "0"),
            ("demographic parity ratio", "demographic_parity_ratio", "1"),
            ("equalized odds difference", "equalized_odds_difference", "0"),
            ("largest accuracy gap", "largest_accuracy_gap", "0"))
    rows = [[name, *(fmt(a.get(key)) for a in audits.values()), fair]
            for name, key, fair in gaps]
    return Table(["gap", *audits, "fair value"], rows)


def _no_history(ctx: Context) -> str:
    if ctx.sources.run_dir is None:
        refused = "".join(f" ({r})" for r in ctx.sources.refused)
        return ("per-epoch history not found: no run folder the registry recorded names "
                "this model (moved or deleted?); report the run directory itself" + refused)
    return f"{ctx.sources.run_dir} has no metrics.jsonl"


def _run_note(ctx: Context) -> Note:
    s = ctx.sources
    training = ctx.manifest.get("training") or {}
    text = f"Run {s.run_dir}"
    if s.run_ref and s.run_ref != s.ref:
        text += f" trained {s.run_ref}, the model {s.ref} derives from"
    elif training:
        text += (f": {fmt(training.get('epochs_run'))} epochs, best "
                 f"{fmt(training.get('best_epoch'))}"
                 + (", stopped early" if training.get("stopped_early") else "")
                 + f", {fmt(training.get('seconds'))} s")
    return Note(text + ".")
