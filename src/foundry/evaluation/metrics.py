"""Metrics from raw model outputs: the numbers stored in `metrics.json` and the registry.

Every value is a plain Python ``float``, ``int``, ``list`` or ``None`` so a metrics dict
goes to JSON (files, the index database, HTTP responses) unchanged. A metric that is not
defined for the data (ROC AUC with one class present, R² on one example) is ``None``,
never NaN: NaN is not valid JSON.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn import metrics as skm

from foundry.errors import DataError

if TYPE_CHECKING:
    # Annotations only: importing foundry.data at runtime would pull in torch.
    from foundry.data.schema import TaskInfo

Metrics = dict[str, Any]
"""Metric name → float | int | list | None (JSON-able)."""


def probabilities(outputs: np.ndarray, task: TaskInfo) -> np.ndarray:
    """Class probabilities from raw outputs.

    outputs: [N, 1] logits of class 1 for a binary task trained with BCE (sigmoid), or
    [N, n_classes] logits (softmax). Returns float64 [N, n_classes], rows summing to 1.
    """
    if not task.is_classification:
        raise ValueError("probabilities() needs a classification task, got regression")
    logits = np.asarray(outputs, dtype=np.float64)
    if logits.ndim == 1:
        logits = logits[:, None]
    if logits.ndim != 2:
        raise ValueError(f"outputs must be [N, n_outputs], got shape {logits.shape}")
    n_classes = task.n_classes
    if logits.shape[1] == 1 and n_classes == 2:
        # 0.5 * (1 + tanh(x / 2)) is the sigmoid without exp overflow for large |x|.
        p1 = 0.5 * (1.0 + np.tanh(0.5 * logits[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    if logits.shape[1] != n_classes:
        raise ValueError(
            f"outputs have {logits.shape[1]} columns but the task has {n_classes} classes"
        )
    # Subtracting the row max keeps exp() in range; the softmax is unchanged.
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


UNMITIGATED = "unmitigated"
"""Key of the metrics of the most probable class, beside headline metrics that score
decisions fairness mitigation changed (`compute_metrics(decisions=...)`)."""


def compute_metrics(
    task: TaskInfo,
    y_true: np.ndarray,
    outputs: np.ndarray,
    *,
    decisions: np.ndarray | None = None,
) -> Metrics:
    """Evaluation metrics for one split.

    y_true: [N] class indices (classification) or the standardised target (regression,
    as in ``Encoded["target"]``). outputs: raw model outputs [N, n_outputs]; for regression
    column 0 is the standardised prediction. Regression metrics are reported in the
    target's original units (mapped back with ``task.target_mean`` / ``target_std``).

    decisions: [N] class indices the model returns when they are not the most probable
    class (fairness mitigation's group thresholds). The label metrics (accuracy,
    precision, recall, F1, confusion matrix) then score them, and the same metrics of
    the most probable class go under ``"unmitigated"``; ROC AUC, PR AUC and log loss
    read the probabilities, which mitigation leaves as they are.
    """
    y = np.asarray(y_true)
    out = np.asarray(outputs, dtype=np.float64)
    if out.ndim == 1:
        out = out[:, None]
    if y.ndim != 1 or out.ndim != 2 or len(y) != len(out):
        raise ValueError(
            f"y_true must be [N] and outputs [N, n_outputs]; got {y.shape} and {out.shape}"
        )
    if len(y) == 0:
        raise DataError(
            f"no examples to evaluate for target '{task.target}'",
            hint="use a larger dataset or a larger validation/test fraction",
        )
    if task.is_classification:
        return _classification(task, y.astype(np.int64), out, decisions)
    if decisions is not None:
        raise ValueError("decisions are class indices: a regressor has none")
    return _regression(task, y.astype(np.float64), out)


def returned_metrics(
    predictor: Any, frame: Any, y_true: np.ndarray, outputs: np.ndarray
) -> Metrics:
    """`compute_metrics` of the decisions `predictor` returns for the rows of `frame`:
    with fairness mitigation and every sensitive column in `frame`, the group-thresholded
    classes (the most probable ones beside them, under "unmitigated"); otherwise the
    most probable class. The one place training (`assess`), `foundry evaluate`, the
    compress table and the report decide which decisions their headline metrics score.

    outputs: temperature-scaled, as `Predictor.labelled_outputs` gives them."""
    task = predictor.task
    sensitive_of = getattr(predictor, "sensitive_of", None)  # a fine-tuned HF model has none
    sensitive = sensitive_of(frame) if sensitive_of and task.is_classification else None
    if sensitive is None:
        return compute_metrics(task, y_true, outputs)
    chosen = predictor.mitigated(probabilities(outputs, task), sensitive)
    return compute_metrics(task, y_true, outputs, decisions=chosen)


def _classification(
    task: TaskInfo, y: np.ndarray, outputs: np.ndarray, decisions: np.ndarray | None
) -> Metrics:
    n = task.n_classes
    labels = list(range(n))
    proba = probabilities(outputs, task)  # [N, n_classes]
    likeliest = proba.argmax(axis=1)
    pred = likeliest if decisions is None else np.asarray(decisions, dtype=np.int64)
    if pred.shape != y.shape:
        raise ValueError(f"decisions must be [N] like y_true; got {pred.shape} and {y.shape}")
    result = _label_metrics(y, pred, labels)
    confusion = result.pop("confusion_matrix")
    result["roc_auc"] = _roc_auc(y, proba, n)
    result["pr_auc"] = _pr_auc(y, proba, n)
    result["log_loss"] = skm.log_loss(y, proba, labels=labels)
    result["confusion_matrix"] = confusion
    if decisions is not None:
        result[UNMITIGATED] = _label_metrics(y, likeliest, labels)
    return _jsonable(result)


def _label_metrics(y: np.ndarray, pred: np.ndarray, labels: list[int]) -> Metrics:
    """The metrics that score predicted classes [N] (not probabilities)."""
    result: Metrics = {"accuracy": skm.accuracy_score(y, pred)}
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y, pred, labels=labels, average=average, zero_division=0
        )
        result[f"precision_{average}"] = p
        result[f"recall_{average}"] = r
        result[f"f1_{average}"] = f
    result["confusion_matrix"] = skm.confusion_matrix(y, pred, labels=labels).tolist()
    return result


def _roc_auc(y: np.ndarray, proba: np.ndarray, n_classes: int) -> float | None:
    """Binary: AUC of p(class 1). Multiclass: one-vs-rest macro average over the classes
    present in y (an absent class has no positives, so its AUC is undefined)."""
    present = np.unique(y)
    if len(present) < 2:
        return None
    if n_classes == 2:
        return skm.roc_auc_score(y, proba[:, 1])
    return float(np.mean([skm.roc_auc_score(y == k, proba[:, k]) for k in present]))


def _pr_auc(y: np.ndarray, proba: np.ndarray, n_classes: int) -> float | None:
    """Average precision. Binary: of class 1 (None when no positives). Multiclass:
    macro average over the classes present in y."""
    if n_classes == 2:
        if not (y == 1).any():
            return None
        return skm.average_precision_score(y == 1, proba[:, 1])
    present = np.unique(y)
    return float(np.mean([skm.average_precision_score(y == k, proba[:, k]) for k in present]))


def _regression(task: TaskInfo, y_std: np.ndarray, outputs: np.ndarray) -> Metrics:
    y = y_std * task.target_std + task.target_mean
    pred = outputs[:, 0] * task.target_std + task.target_mean
    mse = skm.mean_squared_error(y, pred)
    return _jsonable(
        {
            "mse": mse,
            "rmse": math.sqrt(mse),
            "mae": skm.mean_absolute_error(y, pred),
            # R² compares with the variance of y: undefined for a single example.
            "r2": skm.r2_score(y, pred) if len(y) > 1 else None,
        }
    )


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays → Python values; NaN/inf → None (not valid JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value
