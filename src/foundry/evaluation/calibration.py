"""Are a classifier's probabilities honest? Expected calibration error, reliability-diagram
data and temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017).

A model is calibrated when, among the predictions it makes with confidence 0.8, 80% are
right. Networks trained to a low training loss are usually overconfident. Temperature
scaling divides the logits by one number T > 0 fitted on the validation split:

    calibrated probabilities = probabilities(outputs / T, task)

T > 1 softens overconfident probabilities and T < 1 sharpens underconfident ones. Dividing
by a positive number keeps the order of the logits (and the sign of a single BCE logit), so
the predicted class never changes. The fitted T is stored with the model and applied at
prediction time - but only when it lowers the expected calibration error on the
validation split it was fitted on. T minimises the negative log-likelihood, not the ECE,
and on a model that is calibrated already the two can disagree (on Adult, T raised the
ECE from 0.0074 to 0.0104); then T = 1 is kept and the result says so (`kept`, `note`).
The decision looks at the validation split only: the evaluation split stays unseen.

Every value `calibrate` returns is a plain ``float``, ``int``, ``str``, ``list``, ``dict``
or ``None``, so it goes to JSON unchanged.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from foundry.evaluation.metrics import probabilities

if TYPE_CHECKING:
    from foundry.config.schema import CalibrationConfig
    from foundry.data.schema import TaskInfo

__all__ = [
    "apply_temperature",
    "calibrate",
    "expected_calibration_error",
    "fit_temperature",
    "reliability",
]

TEMPERATURE_BOUNDS = (0.05, 20.0)
"""Search range of T. Guo et al. report fitted values between about 1 and 3; the range is
wide enough for badly overtrained models yet keeps a degenerate fit from running to 0 or
infinity."""

MIN_EXAMPLES = 10
"""Fewer validation examples than this leave T = 1: a single parameter fitted to a handful
of rows follows whichever row is wrong."""


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Top-label expected calibration error with equal-width confidence bins.

    proba: [N, C] class probabilities; y: [N] true class indices. Each example falls in the
    bin ``(m-1)/bins < confidence <= m/bins`` of its top probability; ECE is the
    example-weighted mean of |accuracy - mean confidence| over the bins, in [0, 1].
    """
    rows = reliability(proba, y, bins)
    n = sum(r["count"] for r in rows)
    if n == 0:
        raise ValueError("expected_calibration_error needs at least one example")
    return float(
        sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"]) / n
    )


def reliability(proba: np.ndarray, y: np.ndarray, bins: int = 15) -> list[dict[str, Any]]:
    """Reliability-diagram data: one dict per confidence bin, empty bins included.

    Keys: ``lower``, ``upper`` (bin edges), ``count`` (examples in the bin), ``confidence``
    (their mean top probability) and ``accuracy`` (the fraction predicted right); the last
    two are ``None`` for an empty bin. A calibrated model has accuracy ≈ confidence in
    every bin.
    """
    confidence, correct = _top_label(proba, y)
    if bins < 1:
        raise ValueError(f"The 'bins' parameter must be >= 1. Got {bins} instead.")
    edges = np.linspace(0.0, 1.0, bins + 1)
    # side="left" puts a confidence equal to an edge in the bin that edge closes, as in
    # Guo et al.'s ((m-1)/M, m/M]; a confidence of exactly 0 joins the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        in_bin = index == b
        count = int(in_bin.sum())
        rows.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "confidence": float(confidence[in_bin].mean()) if count else None,
                "accuracy": float(correct[in_bin].mean()) if count else None,
            }
        )
    return rows


def fit_temperature(outputs_val: np.ndarray, y_val: np.ndarray, task: TaskInfo) -> float:
    """The temperature T that minimises the negative log-likelihood of ``y_val`` under
    ``probabilities(outputs_val / T, task)``.

    outputs_val: raw logits [N, n_outputs] ([N, 1] for a BCE binary model); y_val: [N]
    class indices. The NLL is convex in 1/T, so a bounded 1-D search over log T finds the
    optimum within ``TEMPERATURE_BOUNDS``. Returns 1.0 (no change) when the split cannot
    support a fit; see `_unfittable`.
    """
    logits, y = _check(outputs_val, y_val, task)
    if _unfittable(logits, y, task) is not None:
        return 1.0
    from scipy.optimize import minimize_scalar

    low, high = (math.log(t) for t in TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_t: _nll(logits / math.exp(log_t), y, task),
        bounds=(low, high),
        method="bounded",
        # xatol is in log T: 1e-5 is a relative precision of 0.001% on T.
        options={"xatol": 1e-5},
    )
    return float(math.exp(result.x))


def apply_temperature(outputs: np.ndarray, temperature: float) -> np.ndarray:
    """Raw outputs [N, n_outputs] divided by T: what `probabilities` turns into calibrated
    class probabilities. The predicted class is unchanged for any T > 0."""
    if not temperature > 0:
        raise ValueError(f"The 'temperature' parameter must be > 0. Got {temperature} instead.")
    return np.asarray(outputs, dtype=np.float64) / temperature


def calibrate(
    outputs_val: np.ndarray,
    y_val: np.ndarray,
    outputs_eval: np.ndarray,
    y_eval: np.ndarray,
    task: TaskInfo,
    config: CalibrationConfig | None = None,
) -> dict[str, Any] | None:
    """Fit temperature scaling on the validation split and measure it on the evaluation
    split. Returns None for a regression task (no class probabilities).

    outputs_*: raw logits [N, n_outputs]; y_*: [N] class indices (``Encoded["target"]``).
    With ``config.temperature_scaling`` off, the ECE is reported at T = 1 (the "after"
    values equal the "before" ones). Keys:

        method            "temperature", or None when scaling is off
        temperature       T to divide the logits by at prediction (1.0: unchanged)
        fitted_on         "val", or None when nothing was fitted
        fitted_temperature  the T that minimised the validation NLL (None: not fitted)
        val_ece_before/after  top-label ECE on the validation split at T = 1 and at the
                          fitted T (None: not fitted)
        kept              whether the fitted T is applied: only when val_ece_after <
                          val_ece_before; otherwise temperature is 1.0 (the identity)
        note              why T stayed 1 although scaling is on (tiny or one-class split,
                          no mistakes on it, or the fitted T did not lower the validation
                          ECE); absent otherwise
        bins              number of equal-width confidence bins
        n_val, n_eval     examples in each split
        ece_before/after  top-label ECE on the evaluation split, raw and scaled
        accuracy_before/after, nll_before/after   on the evaluation split
        reliability_before/after                  `reliability` rows of each
    """
    if not task.is_classification:
        return None
    if config is None:
        from foundry.config.schema import CalibrationConfig

        config = CalibrationConfig()
    bins = config.bins
    val_logits, val_y = _check(outputs_val, y_val, task)
    logits, y = _check(outputs_eval, y_eval, task)
    if len(y) == 0:
        raise ValueError("calibrate needs at least one evaluation example")

    result: dict[str, Any] = {
        "method": None,
        "temperature": 1.0,
        "fitted_on": None,
        "fitted_temperature": None,
        "val_ece_before": None,
        "val_ece_after": None,
        "kept": False,
    }
    if config.temperature_scaling:
        result.update(method="temperature", fitted_on="val")
        reason = _unfittable(val_logits, val_y, task)
        if reason is None:
            # Rounded before use: the stored T and the reported "after" numbers must agree.
            fitted = float(f"{fit_temperature(val_logits, val_y, task):.6g}")
            val_before = _round(
                expected_calibration_error(probabilities(val_logits, task), val_y, bins)
            )
            val_after = _round(
                expected_calibration_error(probabilities(val_logits / fitted, task), val_y, bins)
            )
            result.update(
                fitted_temperature=fitted, val_ece_before=val_before, val_ece_after=val_after
            )
            if val_after is not None and val_before is not None and val_after < val_before:
                result.update(temperature=fitted, kept=True)
            else:
                result["note"] = (
                    f"temperature left at 1: the fitted T = {fitted:.4g} did not lower the "
                    f"validation ECE ({val_before:.4f} → {val_after:.4f})"
                )
        else:
            result["note"] = f"temperature left at 1: {reason}"
    temperature = result["temperature"]

    before = probabilities(logits, task)
    after = probabilities(logits / temperature, task)
    result.update(bins=bins, n_val=int(len(val_y)), n_eval=int(len(y)))
    for name, proba, scaled in (("before", before, logits), ("after", after, logits / temperature)):
        result[f"ece_{name}"] = _round(expected_calibration_error(proba, y, bins))
        result[f"accuracy_{name}"] = _round(float((proba.argmax(axis=1) == y).mean()))
        result[f"nll_{name}"] = _round(_nll(scaled, y, task))
    for name, proba in (("before", before), ("after", after)):
        result[f"reliability_{name}"] = [
            {k: _round(v) if isinstance(v, float) else v for k, v in row.items()}
            for row in reliability(proba, y, bins)
        ]
    return result


# --------------------------------------------------------------------------- helpers


def _top_label(proba: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence [N], correct [N] as 0/1) of the most probable class."""
    p = np.asarray(proba, dtype=np.float64)
    labels = np.asarray(y)
    if p.ndim != 2 or labels.ndim != 1 or len(p) != len(labels):
        raise ValueError(f"proba must be [N, C] and y [N]; got shapes {p.shape} and {labels.shape}")
    return p.max(axis=1), (p.argmax(axis=1) == labels).astype(np.float64)


def _check(outputs: np.ndarray, y: np.ndarray, task: TaskInfo) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(outputs, dtype=np.float64)
    if logits.ndim == 1:
        logits = logits[:, None]
    labels = np.asarray(y).astype(np.int64)
    if logits.ndim != 2 or labels.ndim != 1 or len(logits) != len(labels):
        raise ValueError(
            f"outputs must be [N, n_outputs] and y [N]; got shapes {logits.shape} and "
            f"{labels.shape}"
        )
    if not np.isfinite(logits).all():
        raise ValueError("outputs contain NaN or infinite logits; the model diverged")
    if len(labels) and (labels.min() < 0 or labels.max() >= task.n_classes):
        raise ValueError(
            f"y holds class indices outside 0..{task.n_classes - 1} for target '{task.target}'"
        )
    return logits, labels


def _unfittable(logits: np.ndarray, y: np.ndarray, task: TaskInfo) -> str | None:
    """Why a temperature cannot be fitted on this split, or None when it can."""
    if len(y) < MIN_EXAMPLES:
        return f"only {len(y)} validation examples (fewer than {MIN_EXAMPLES})"
    if len(np.unique(y)) < 2:
        return "the validation split holds one class only"
    pred = probabilities(logits, task).argmax(axis=1)
    if (pred == y).all():
        # With no mistakes the NLL keeps falling as T → 0: the "optimum" would be the
        # lower bound, making the model maximally overconfident on new data.
        return "every validation example is classified correctly"
    return None


def _nll(logits: np.ndarray, y: np.ndarray, task: TaskInfo) -> float:
    """Mean negative log-likelihood of y under `probabilities(logits, task)`, computed in
    log space so saturated probabilities of an overconfident model stay finite."""
    if logits.shape[1] == 1 and task.n_classes == 2:
        # -log sigmoid(±x) = softplus(∓x), where the sign is + for class 1.
        sign = np.where(y == 1, -1.0, 1.0)
        return float(np.logaddexp(0.0, sign * logits[:, 0]).mean())
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    return float((log_z - shifted[np.arange(len(y)), y]).mean())


def _round(value: float) -> float | None:
    """Six significant digits: below the noise of any split, and short in JSON."""
    return float(f"{value:.6g}") if math.isfinite(value) else None
