"""Group fairness: a per-group audit, and post-processing thresholds that narrow the gaps.

    keys = group_keys(df[["sex", "race"]])                 # "female,black" per row
    report = audit(y_true, y_pred, df[["sex"]])            # JSON-able dict
    print(format_audit(report))
    state = fit_mitigation(p_val, y_val01, val[["sex"]], config.mitigation)   # JSON dict
    decisions = apply_mitigation(state, p_test, test[["sex"]])                # 0/1 [N]

A *group* is one combination of the sensitive columns' values. Values are keyed as
category vocabularies are (`foundry.data.encoders.keys`): 1, 1.0 and "1" are the same
group, so a column read from CSV (float because of a NaN) and a JSON request agree.
A missing value is its own group, "<missing>".

Mitigation is Fairlearn's `ThresholdOptimizer` (Hardt et al. 2016) fitted on the
validation split's P(positive class). It picks, per group, two thresholds and the
probability of using each; the mixture reaches a selection rate (demographic parity) or
a TPR/FPR pair (equalized odds) that no single threshold gives. The fitted thresholds are
stored as plain JSON and applied here with numpy: prediction needs no Fairlearn object
and no pickle.

Randomisation: a row between a group's two thresholds is positive with the stored
probability. Fairlearn draws one number per row from a `RandomState` stream, so a row's
decision depends on where it sits in the call. Here each row's draw u in [0, 1) is a hash
of (seed, group, score, how many earlier rows of the same call share that group and
score) - a counter-based generator. The same input therefore gets the same decision in
every call, alone or inside any batch (the server's dynamic batching, `foundry predict`'s
chunks), and asking again does not change it; over many rows u is uniform, so the
group rates are Fairlearn's (tested against `ThresholdOptimizer.predict`). The price:
rows that share group *and* score exactly (a model over categorical inputs only) are
decided together across calls, so such a group reaches its target rate only over a batch
that holds those rows, not over separate one-row requests.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from foundry.config.schema import MitigationConfig
from foundry.errors import ConfigError, DataError, ModelError
from foundry.extras import require

__all__ = [
    "MISSING",
    "SMALL_GROUP",
    "apply_mitigation",
    "audit",
    "fit_mitigation",
    "format_audit",
    "group_keys",
    "mitigation_columns",
    "select_sensitive",
    "unseen_groups",
]

MISSING = "<missing>"
"""The group of a row whose sensitive value is missing."""
SMALL_GROUP = 30
"""Groups with fewer rows are flagged: a rate near 0.5 measured on 30 rows has a standard
error of sqrt(0.25 / 30) ≈ 0.09, as large as the gaps the audit is looking for."""
STATE_VERSION = 1
"""Bumped when the layout of the mitigation state changes."""

_CONFIG_KEY = "evaluate.fairness.sensitive_features"


# ------------------------------------------------------------------------------- groups


def select_sensitive(
    df: pd.DataFrame, features: Sequence[str], *, source: str = "the data"
) -> pd.DataFrame:
    """The sensitive columns of `df`; a DataError names the first one it lacks."""
    if not features:
        raise ConfigError(f"{_CONFIG_KEY} is empty: list the columns whose groups to compare")
    for name in features:
        if name not in df.columns:
            raise DataError(
                f"sensitive feature '{name}' ({_CONFIG_KEY}) is not a column of {source} "
                f"(columns: {', '.join(map(str, df.columns))})",
                hint=f"fix the name or remove it from {_CONFIG_KEY}",
            )
    return df[list(features)]


def group_keys(sensitive: pd.DataFrame) -> pd.Series:
    """One group name per row (str Series, same index): the column's value key for one
    sensitive column ("female"), the keys joined by "," for several ("female,black");
    a missing value is "<missing>". With several columns a "," or "\\" inside a value is
    escaped with "\\" so two different rows never share a name."""
    frame = _as_frame(sensitive)
    keys = _key_array(frame, list(frame.columns))
    return pd.Series(keys, index=frame.index, name=",".join(map(str, frame.columns)))


def _key_array(frame: pd.DataFrame, columns: list[Any]) -> np.ndarray:
    """group_keys as an object array [N], reading `columns` of `frame` (no frame copy:
    this runs on every prediction with mitigation)."""
    # Importing foundry.data loads torch; the audit alone should not pay for it.
    from foundry.data.encoders.keys import category_keys

    parts = [category_keys(frame[c]).to_numpy(dtype=object, na_value=MISSING) for c in columns]
    if len(parts) == 1:
        return parts[0]
    escaped = [pd.Series(p).str.replace("\\", "\\\\").str.replace(",", "\\,") for p in parts]
    return escaped[0].str.cat(escaped[1:], sep=",").to_numpy(dtype=object)


def _group_values(frame: pd.DataFrame, keys: Any) -> dict[str, dict[str, str]]:
    """Group name → {column: value key} for every group present; keys: [N] group_keys."""
    from foundry.data.encoders.keys import category_keys

    keys = np.asarray(keys, dtype=object)
    first = ~pd.Series(keys).duplicated().to_numpy()
    columns = {
        str(c): category_keys(frame[c]).to_numpy(dtype=object, na_value=MISSING)[first]
        for c in frame.columns
    }
    return {
        str(key): {c: str(v[i]) for c, v in columns.items()} for i, key in enumerate(keys[first])
    }


def _as_frame(sensitive: pd.DataFrame | pd.Series) -> pd.DataFrame:
    if isinstance(sensitive, pd.Series):
        return sensitive.to_frame()
    if not isinstance(sensitive, pd.DataFrame):
        raise TypeError(f"sensitive must be a pandas DataFrame, got {type(sensitive).__name__}")
    if sensitive.shape[1] == 0:
        raise ConfigError(f"{_CONFIG_KEY} is empty: list the columns whose groups to compare")
    return sensitive


# -------------------------------------------------------------------------------- audit


def audit(
    y_true: Any,
    y_pred: Any,
    sensitive: pd.DataFrame,
    *,
    positive_class: Any = None,
    classes: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Per-group accuracy, selection rate, TPR and FPR (Fairlearn `MetricFrame`) and the
    gaps between groups.

    y_true, y_pred: [N] labels as the target holds them (str or numbers). classes: every
    class of the target (the model's); default the labels seen. positive_class: the class
    that counts as selected; default the second class in sorted order for a binary target.
    A multiclass target gets per-group accuracy only, unless positive_class is given: then
    the rates are one-vs-rest for that class.

    Gaps, from the per-group table: demographic parity difference = max - min selection
    rate, ratio = min / max (as `fairlearn.metrics.demographic_parity_*`; tested);
    equalized odds difference = the larger of the TPR and FPR ranges (as
    `fairlearn.metrics.equalized_odds_difference`, except that a group with no positive
    row has no TPR, and no negative row no FPR, and is left out of that range instead of
    counting as 0). Returns a JSON-able dict; undefined values are None.
    """
    require("trust", "fairlearn", "the fairness audit (evaluate.fairness)")
    from fairlearn.metrics import (
        MetricFrame,
        count,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score

    from foundry.data.encoders.keys import sort_keys

    frame = _as_frame(sensitive)
    truth, pred = _label_keys(y_true), _label_keys(y_pred)
    if not len(truth) == len(pred) == len(frame):
        raise ValueError(
            f"y_true, y_pred and sensitive need one row each: got {len(truth)}, "
            f"{len(pred)} and {len(frame)}"
        )
    if len(truth) == 0:
        raise DataError("no rows to audit for fairness: the evaluation split is empty")
    names = (
        [str(_label_keys([c])[0]) for c in classes]
        if classes is not None
        else sort_keys(sorted(set(truth) | set(pred)))
    )
    positive = _positive_class(names, positive_class)
    keys = pd.Series(group_keys(frame).to_numpy(), name="group")
    values = _group_values(frame, keys)
    notes: list[str] = []

    metrics: dict[str, Any] = {"count": count, "accuracy": accuracy_score}
    if positive is not None:
        # Accuracy compares the labels themselves (all classes); the rates compare
        # "positive" against the rest. One MetricFrame: each one walks every row in Python.
        metrics |= {
            "selection_rate": _one_vs_rest(selection_rate, positive),
            "tpr": _one_vs_rest(true_positive_rate, positive),
            "fpr": _one_vs_rest(false_positive_rate, positive),
            "positives": _one_vs_rest(lambda t, p: int(t.sum()), positive),
        }
    metric_frame = MetricFrame(metrics=metrics, y_true=truth, y_pred=pred, sensitive_features=keys)
    table, whole = metric_frame.by_group.copy(), metric_frame.overall
    overall: dict[str, Any] = {"count": len(truth), "accuracy": float(whole["accuracy"])}
    result: dict[str, Any] = {
        "sensitive_features": [str(c) for c in frame.columns],
        "positive_class": positive,
        "classes": names,
        "demographic_parity_difference": None,
        "demographic_parity_ratio": None,
        "equalized_odds_difference": None,
    }
    if positive is None:
        notes.append(
            f"the target has {len(names)} classes: selection rate, TPR, FPR and the parity "
            "gaps need a binary target; set evaluate.fairness.positive_class to compare "
            "one class against the rest"
        )
        for name in ("selection_rate", "tpr", "fpr"):
            table[name] = np.nan
            overall[name] = None
    else:
        if len(names) > 2:
            notes.append(f"rates are one-vs-rest: '{positive}' against the other classes")
        # Fairlearn reports 0 for a rate with an empty denominator; it is undefined.
        positives = table["positives"]
        table["tpr"] = table["tpr"].where(positives > 0)
        table["fpr"] = table["fpr"].where(table["count"] - positives > 0)
        n_pos = int(whole["positives"])
        overall["selection_rate"] = float(whole["selection_rate"])
        overall["tpr"] = float(whole["tpr"]) if n_pos > 0 else None
        overall["fpr"] = float(whole["fpr"]) if n_pos < len(truth) else None
        rates = table["selection_rate"]
        result["demographic_parity_difference"] = _range(rates)
        result["demographic_parity_ratio"] = (
            float(rates.min() / rates.max()) if rates.max() > 0 else None
        )
        ranges = [_range(table[c]) for c in ("tpr", "fpr")]
        defined = [r for r in ranges if r is not None]
        result["equalized_odds_difference"] = max(defined) if defined else None
        if table["tpr"].isna().any() or table["fpr"].isna().any():
            notes.append(
                "a group without positive rows has no TPR, one without negative rows no "
                "FPR; they are left out of the equalized odds difference"
            )

    by_group_rows = []
    for key, row in table.iterrows():
        n = int(row["count"])
        by_group_rows.append(
            {
                "group": values[str(key)],
                "key": str(key),
                "count": n,
                "accuracy": _num(row["accuracy"]),
                "selection_rate": _num(row["selection_rate"]),
                "tpr": _num(row["tpr"]),
                "fpr": _num(row["fpr"]),
                "small": n < SMALL_GROUP,
            }
        )
    small = [g["key"] for g in by_group_rows if g["small"]]
    if small:
        notes.append(
            f"{len(small)} group(s) have fewer than {SMALL_GROUP} rows ({', '.join(small)}): "
            "their rates are noisy"
        )
    if len(by_group_rows) == 1:
        notes.append(f"only one group ({by_group_rows[0]['key']}): there is nothing to compare")
    result["overall"] = overall
    result["by_group"] = by_group_rows
    result["largest_accuracy_gap"] = _range(table["accuracy"]) or 0.0
    result["notes"] = notes
    return result


def format_audit(report: dict[str, Any]) -> str:
    """The audit as a markdown table with the gaps and notes under it: readable in a
    terminal and rendered as a table in the model card."""
    features = ", ".join(report["sensitive_features"])
    head = f"fairness by {features}"
    if report.get("positive_class") is not None:
        head += f" (selected: '{report['positive_class']}')"
    lines = [
        head,
        "",
        "| group | rows | accuracy | selection rate | TPR | FPR |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for g in report["by_group"]:
        name = ", ".join(g["group"].values()) + (" (small)" if g["small"] else "")
        lines.append(_table_row(name, g))
    lines.append(_table_row("**overall**", report["overall"]))
    lines.append("")
    gaps = [
        ("demographic parity difference", "demographic_parity_difference"),
        ("demographic parity ratio", "demographic_parity_ratio"),
        ("equalized odds difference", "equalized_odds_difference"),
        ("largest accuracy gap", "largest_accuracy_gap"),
    ]
    lines.append("; ".join(f"{label} {_fmt(report.get(key))}" for label, key in gaps))
    lines.extend(f"note: {note}" for note in report.get("notes", []))
    return "\n".join(lines)


def _table_row(name: str, g: dict[str, Any]) -> str:
    cells = [_fmt(g.get(k)) for k in ("accuracy", "selection_rate", "tpr", "fpr")]
    return f"| {name} | {g['count']} | " + " | ".join(cells) + " |"


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _one_vs_rest(metric: Any, positive: str) -> Any:
    """`metric` on 1 = `positive`, 0 = any other label (works for binary and multiclass)."""

    def on_labels(y_true: np.ndarray, y_pred: np.ndarray) -> Any:
        return metric((y_true == positive).astype(int), (y_pred == positive).astype(int))

    return on_labels


def _positive_class(names: list[str], positive_class: Any) -> str | None:
    if positive_class is None:
        return names[1] if len(names) == 2 else None
    key = str(_label_keys([positive_class])[0])
    if key not in names:
        raise ConfigError(
            f"evaluate.fairness.positive_class '{positive_class}' is not a class of the "
            f"target (classes: {', '.join(names)})"
        )
    return key


def _label_keys(labels: Any) -> np.ndarray:
    from foundry.data.encoders.keys import category_keys

    series = pd.Series(np.asarray(labels) if not isinstance(labels, pd.Series) else labels)
    return category_keys(series).astype(object).fillna(MISSING).to_numpy(dtype=object)


def _range(column: pd.Series) -> float | None:
    defined = column.dropna()
    return float(defined.max() - defined.min()) if len(defined) else None


def _num(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- mitigation


class _ScoreColumn(BaseEstimator):
    """A fitted "estimator" whose prediction is column 0 of X: ThresholdOptimizer thresholds
    the scores we already have instead of calling a model."""

    def fit(self, X: Any, y: Any = None) -> _ScoreColumn:
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(X, dtype=np.float64)[:, 0]

    def __sklearn_is_fitted__(self) -> bool:
        return True


def fit_mitigation(
    scores: Any,
    y_true01: Any,
    sensitive: pd.DataFrame,
    config: MitigationConfig,
    *,
    seed: int = 0,
    positive_class: str | None = None,
    positive_index: int = 1,
    tolerance: float | None = None,
) -> dict[str, Any]:
    """Fit group thresholds on the validation split; returns the JSON-able state that
    `apply_mitigation` uses.

    scores: [N] P(positive class) as predictions will have it (temperature-scaled).
    y_true01: [N] 1 for the positive class, 0 otherwise. sensitive: [N, k] the sensitive
    columns. seed: the default key of the per-row draws at prediction. positive_class /
    positive_index: recorded so a predictor knows which probability column to threshold.
    tolerance: demographic parity only: the selection rates may differ by up to this much
    (Fairlearn's `tol`); exact parity costs the most accuracy, and a gap cut in half
    often costs far less. None: equal rates.
    State: {"constraint", "objective", "sensitive_features", "groups": {group: {"values",
    "count", "p0", "operator0", "threshold0", "p1", "operator1", "threshold1", "p_ignore",
    "prediction_constant"}}, ...}; infinite thresholds are the strings "inf" / "-inf".
    """
    require("trust", "fairlearn", "fairness mitigation (evaluate.fairness.mitigation)")
    from fairlearn import __version__ as fairlearn_version
    from fairlearn.postprocessing import ThresholdOptimizer

    if tolerance is not None and (config.constraint != "demographic_parity" or tolerance < 0):
        raise ConfigError(
            "a fairness tolerance needs constraint demographic_parity and a value >= 0; got "
            f"{tolerance} with {config.constraint} (Fairlearn cannot relax equalized odds)"
        )
    s = _scores(scores)
    y = np.asarray(y_true01)
    labels = set(np.unique(y).tolist())
    if not labels <= {0, 1}:
        raise ModelError(
            "evaluate.fairness.mitigation needs a binary classifier: ThresholdOptimizer "
            f"decides between two classes, the target has labels {sorted(labels)[:10]}",
            hint="remove evaluate.fairness.mitigation (the audit still runs)",
        )
    frame = _as_frame(sensitive)
    if not len(s) == len(y) == len(frame):
        raise ValueError(
            f"scores, y_true01 and sensitive need one row each: got {len(s)}, {len(y)} "
            f"and {len(frame)}"
        )
    keys = group_keys(frame)
    features = [str(c) for c in frame.columns]
    counts = keys.value_counts()
    if len(counts) < 2:
        only = counts.index[0] if len(counts) else "none"
        raise DataError(
            f"{_CONFIG_KEY} {features}: the validation split has a single group ({only}), "
            "so there is nothing to equalise",
            hint="check the column, or remove evaluate.fairness.mitigation",
        )
    positives = pd.Series(y, index=keys.index).groupby(keys).sum()
    one_label = [str(k) for k in counts.index if positives[k] in (0, counts[k])]
    if one_label:
        raise DataError(
            f"{_CONFIG_KEY} {features}: group(s) {', '.join(one_label)} have only one "
            "label in the validation split; thresholds need positives and negatives in "
            "every group",
            hint="use a larger validation split (data.split.val) or merge small groups",
        )

    optimizer = ThresholdOptimizer(
        estimator=_ScoreColumn(),
        constraints=config.constraint,
        objective=config.objective,
        prefit=True,
        predict_method="predict",
        # `tol` arrived in Fairlearn 0.13; passing it only when set keeps 0.12 working.
        **({} if tolerance is None else {"tol": tolerance}),
    )
    optimizer.fit(s[:, None], y.astype(int), sensitive_features=keys.to_numpy())
    values = _group_values(frame, keys)
    groups: dict[str, Any] = {}
    for key, choice in optimizer.interpolated_thresholder_.interpolation_dict.items():
        groups[str(key)] = {
            "values": values[str(key)],
            "count": int(counts[key]),
            "p0": float(choice.p0),
            "operator0": choice.operation0.operator,
            "threshold0": _threshold_json(choice.operation0.threshold),
            "p1": float(choice.p1),
            "operator1": choice.operation1.operator,
            "threshold1": _threshold_json(choice.operation1.threshold),
            # Equalized odds also mixes in a constant with probability p_ignore.
            "p_ignore": float(choice.get("p_ignore", 0.0)),
            "prediction_constant": float(choice.get("prediction_constant", 0.0)),
        }
    return {
        "version": STATE_VERSION,
        "method": "fairlearn.postprocessing.ThresholdOptimizer",
        "fairlearn_version": fairlearn_version,
        "constraint": config.constraint,
        "objective": config.objective,
        "tolerance": tolerance,
        "sensitive_features": features,
        "positive_class": positive_class,
        "positive_index": int(positive_index),
        "seed": int(seed),
        "fitted_rows": len(s),
        "groups": groups,
    }


def mitigation_columns(state: dict[str, Any]) -> list[str]:
    """The columns a prediction needs for the thresholds; without all of them the caller
    keeps the model's own decision."""
    return [str(c) for c in state["sensitive_features"]]


def unseen_groups(state: dict[str, Any], sensitive: pd.DataFrame) -> dict[str, int]:
    """Group → rows, for the rows whose group the thresholds were not fitted on (they get
    the model's own decision): for a warning."""
    frame = _as_frame(sensitive)
    keys = pd.Series(_key_array(frame, _check_columns(state, frame)))
    unseen = keys[~keys.isin(list(state["groups"]))]
    return {str(k): int(n) for k, n in unseen.value_counts().items()}


def apply_mitigation(
    state: dict[str, Any], scores: Any, sensitive: pd.DataFrame, *, seed: int | None = None
) -> np.ndarray:
    """0/1 decisions [N] (int64) from the fitted thresholds.

    scores: [N] P(positive class). sensitive: a frame holding every column of
    `mitigation_columns(state)`. seed: key of the per-row draws (module docstring);
    None: the seed stored at fitting.

    A row whose group was not in the validation split gets the model's own decision
    (P(positive) > 0.5), as it would without the sensitive column: the thresholds say
    nothing about a group they never saw, and refusing the row would fail a whole batch
    over one new value. `unseen_groups` counts such rows.
    """
    s = _scores(scores)
    frame = _as_frame(sensitive)
    if len(frame) != len(s):
        raise ValueError(f"scores and sensitive need one row each: {len(s)} and {len(frame)}")
    # Work per distinct group, then gather by row: a batch holds few groups.
    codes, uniques = pd.factorize(_key_array(frame, _check_columns(state, frame)))
    table = _threshold_table(state, [str(k) for k in uniques])
    rows = table[codes]  # [N, 8]; an unseen group's row is NaN and replaced below
    p0, above0, t0, p1, above1, t1, p_ignore, constant = rows.T
    pass0 = np.where(above0 == 1, s > t0, s < t0)
    pass1 = np.where(above1 == 1, s > t1, s < t1)
    # The same arithmetic as Fairlearn's InterpolatedThresholder._pmf_predict.
    p_positive = p_ignore * constant + (1 - p_ignore) * (p0 * pass0 + p1 * pass1)
    seen = ~np.isnan(p0)
    draws = _draws(int(state.get("seed", 0)) if seed is None else seed, codes, uniques, s)
    return np.where(seen, draws < p_positive, s > 0.5).astype(np.int64)


def _check_columns(state: dict[str, Any], frame: pd.DataFrame) -> list[str]:
    columns = mitigation_columns(state)
    for name in columns:
        if name not in frame.columns:
            raise DataError(
                f"fairness mitigation needs the sensitive column '{name}' in the input "
                f"(columns: {', '.join(map(str, frame.columns))})",
                hint="supply it, or skip mitigation when mitigation_columns(state) are absent",
            )
    return columns


def _threshold_table(state: dict[str, Any], keys: list[str]) -> np.ndarray:
    """[len(keys), 8] float: p0, above0, threshold0, p1, above1, threshold1, p_ignore,
    prediction_constant per group (above: 1 for ">", 0 for "<"); NaN for a group the
    state does not hold. Checked: the state comes from a file."""
    try:
        groups = state["groups"]
        if not groups:
            raise ValueError("no groups")
        table = np.full((len(keys), 8), np.nan)
        for i, key in enumerate(keys):
            g = groups.get(key)
            if g is not None:
                table[i] = [
                    float(g["p0"]),
                    _above(g["operator0"]),
                    float(g["threshold0"]),
                    float(g["p1"]),
                    _above(g["operator1"]),
                    float(g["threshold1"]),
                    float(g.get("p_ignore", 0.0)),
                    float(g.get("prediction_constant", 0.0)),
                ]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(
            f"the fairness mitigation state in the model package is malformed ({exc!r})",
            hint="re-train the model with evaluate.fairness.mitigation",
        ) from None
    return table


def _above(operator: str) -> float:
    if operator not in (">", "<"):
        raise ValueError(f"threshold operator must be '>' or '<', got {operator!r}")
    return float(operator == ">")


def _threshold_json(value: float) -> float | str:
    """JSON has no infinity: ±inf (always / never positive) is stored as "inf" / "-inf",
    which float() reads back."""
    value = float(value)
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def _scores(scores: Any) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim == 2 and s.shape[1] > 2:
        raise ModelError(
            f"fairness mitigation needs a binary classifier; got probabilities of "
            f"{s.shape[1]} classes",
            hint="remove evaluate.fairness.mitigation (the audit still runs)",
        )
    if s.ndim != 1:
        raise ValueError(f"scores must be [N] P(positive class), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores hold NaN or infinite values")
    return s


# ------------------------------------------------------------------------------- draws

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every input bit flips about half the output bits, so
    neighbouring scores get unrelated draws. uint64 arithmetic wraps, as it must."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _draws(seed: int, codes: np.ndarray, uniques: Any, scores: np.ndarray) -> np.ndarray:
    """u in [0, 1) per row from (seed, group, score, repeat): see the module docstring.
    codes: [N] index of each row's group in `uniques` (pd.factorize)."""
    group_hash = np.array([_stable_hash(str(k)) for k in uniques], dtype=np.uint64)[codes]
    # + 0.0 turns -0.0 into 0.0 so equal scores have equal bits.
    score_bits = np.ascontiguousarray(scores + 0.0, dtype=np.float64).view(np.uint64)
    h = _mix(np.full(len(scores), np.uint64(seed & 0xFFFF_FFFF_FFFF_FFFF)) ^ _GOLDEN)
    h = _mix(_mix(h ^ group_hash) ^ score_bits)
    return (_mix(h ^ _repeats(h)) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _repeats(h: np.ndarray) -> np.ndarray:
    """[N] uint64: how many earlier rows have the same value of h. Identical (group,
    score) rows in one call thus get different draws, so a batch of them is split in
    the stored proportion rather than all-or-nothing."""
    if len(h) < 2:
        return np.zeros(len(h), dtype=np.uint64)
    order = np.argsort(h, kind="stable")  # equal values keep their row order
    ordered = h[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    position = np.arange(len(h))
    rank = position - np.maximum.accumulate(np.where(starts, position, 0))
    repeats = np.empty(len(h), dtype=np.uint64)
    repeats[order] = rank
    return repeats


def _stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process (Python's hash() is salted)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
