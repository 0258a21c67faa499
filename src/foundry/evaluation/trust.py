"""The evaluate stage after training: calibration, metrics, fairness, feature importance.

    report = assess(predictor, splits.val, eval_df, cfg, say)
    report.metrics                     # on the evaluation split, temperature-scaled; of the
                                       # decisions returned (fairness mitigation applied)
    manifest.update(report.sections)   # calibration / fairness / explain: card + prediction

Order matters: the temperature is fitted first (on validation outputs) so the metrics,
the fairness audit and the mitigation thresholds all see the probabilities that
predictions will have.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from foundry.config.schema import FoundryConfig
from foundry.console import Reporter
from foundry.errors import DataError


@dataclass(frozen=True)
class Assessment:
    metrics: dict[str, Any]
    """Metrics on the evaluation split (calibrated probabilities for classifiers) of the
    decisions the model returns: with fairness mitigation, the thresholded ones, and the
    most probable class's under "unmitigated" (`returned_metrics`)."""
    sections: dict[str, Any]
    """Manifest sections: `calibration`, `fairness`, `explain` (those that ran)."""
    predictor: Any
    """The predictor with the fitted temperature and mitigation."""


def assess(
    predictor: Any,
    val_df: pd.DataFrame,
    eval_df: pd.DataFrame,
    cfg: FoundryConfig,
    say: Reporter,
    holdout: Any = None,
) -> Assessment:
    """Calibrate on `val_df`, score `eval_df`, audit fairness and mitigate, and rank the
    inputs by permutation importance (on `val_df`, or `eval_df` when there is no
    validation split).

    `holdout`: when `predictor` was trained on `val_df`'s rows too (gbm's refit on train +
    val), a predictor that was not (the early-stopped booster): the temperature and the
    fairness thresholds are fitted on its validation outputs, since the returned model's
    own would be in-sample (overconfident), and permutation importance uses `eval_df`."""
    from foundry.evaluation.metrics import returned_metrics

    task = predictor.task
    settings = cfg.evaluate
    sections: dict[str, Any] = {}
    y_eval, out_eval = predictor.labelled_outputs(eval_df)
    has_val = len(val_df) > 0
    scorer = predictor if holdout is None else holdout
    y_val, out_val = scorer.labelled_outputs(val_df) if has_val else (None, None)

    if task.is_classification and has_val:
        from foundry.evaluation.calibration import calibrate

        calibration = calibrate(out_val, y_val, out_eval, y_eval, task, settings.calibration)
        if calibration is not None:
            sections["calibration"] = calibration
            temperature = float(calibration["temperature"])
            predictor = replace(predictor, temperature=temperature)
            out_eval, out_val = predictor.calibrated(out_eval), predictor.calibrated(out_val)
            if calibration.get("note"):  # not fitted, or fitted and not kept
                say.info(f"calibration: {calibration['note']}")
            else:
                say.info(
                    f"calibration: temperature {temperature:.3f}, expected calibration "
                    f"error {calibration['ece_before']:.4f} → {calibration['ece_after']:.4f} "
                    f"({cfg.evaluate.split} split)"
                )
    fairness = settings.fairness
    if fairness.sensitive_features and task.is_classification:
        sections["fairness"], predictor = _fairness(
            predictor, cfg, val_df, eval_df, (y_val, out_val), (y_eval, out_eval), say
        )
    elif fairness.sensitive_features:
        say.warn("evaluate.fairness: the audit needs a classifier; skipped for a regressor")
    # after mitigation is fitted: the headline metrics are those of the decisions the
    # model returns (group thresholds applied), the most probable class's beside them
    metrics = returned_metrics(predictor, eval_df, y_eval, out_eval)
    if "calibration" in sections:
        metrics["ece"] = sections["calibration"]["ece_after"]

    if settings.explain.permutation_importance:
        from foundry.evaluation.explain import permutation_importance

        frame = val_df if has_val and holdout is None else eval_df
        importance = permutation_importance(
            predictor,
            frame,
            repeats=settings.explain.repeats,
            max_rows=settings.explain.max_rows,
            seed=cfg.train.seed,
        )
        sections["explain"] = {"permutation_importance": importance}
        top = ", ".join(
            f"{f['feature']} {f['importance']:+.3f}" for f in importance["features"][:5]
        )
        say.info(f"permutation importance ({importance['metric']} drop): {top}")
    return Assessment(metrics=metrics, sections=sections, predictor=predictor)


def _fairness(
    predictor: Any,
    cfg: FoundryConfig,
    val_df: pd.DataFrame,
    eval_df: pd.DataFrame,
    val: tuple[Any, Any],
    evaluated: tuple[np.ndarray, np.ndarray],
    say: Reporter,
) -> tuple[dict[str, Any], Any]:
    from foundry.evaluation.fairness import (
        apply_mitigation,
        audit,
        fit_mitigation,
        format_audit,
    )
    from foundry.evaluation.metrics import probabilities

    fairness = cfg.evaluate.fairness
    columns = list(fairness.sensitive_features)
    for frame, name in ((eval_df, cfg.evaluate.split), (val_df, "val")):
        missing = [c for c in columns if c not in frame.columns]
        if missing and len(frame):
            raise DataError(
                f"evaluate.fairness.sensitive_features: column(s) {missing} are not in the "
                f"{name} split (columns: {', '.join(map(str, frame.columns))})"
            )
    task, decode = predictor.task, predictor.preprocessor.decode_labels
    classes = list(task.classes)
    positive = _positive_index(classes, fairness.positive_class)
    y_eval, out_eval = evaluated
    proba_eval = probabilities(out_eval, task)
    y_true = decode(y_eval)
    y_pred = decode(proba_eval.argmax(axis=1))
    positive_class = classes[positive] if len(classes) == 2 else fairness.positive_class
    before = audit(
        y_true, y_pred, eval_df[columns], positive_class=positive_class, classes=classes
    )
    section: dict[str, Any] = {"audit": before, "mitigation": None}
    for line in _lines(format_audit(before)):
        say.info(line)

    if fairness.mitigation is None:
        return section, predictor
    y_val, out_val = val
    if y_val is None:
        say.warn("evaluate.fairness.mitigation needs a validation split to fit on; skipped")
        return section, predictor
    if len(classes) != 2:
        from foundry.errors import ConfigError

        raise ConfigError(
            "evaluate.fairness.mitigation needs a binary target: ThresholdOptimizer "
            f"decides between two classes, '{task.target}' has {len(classes)}",
            hint="remove evaluate.fairness.mitigation (the audit still runs)",
        )
    scores_val = probabilities(out_val, task)[:, positive]
    state = fit_mitigation(
        scores_val,
        (y_val == positive).astype(int),
        val_df[columns],
        fairness.mitigation,
        seed=cfg.train.seed,
        positive_class=str(classes[positive]),
        positive_index=positive,
        tolerance=fairness.mitigation.tolerance,
    )
    state["positive_index"] = positive
    decisions = apply_mitigation(state, proba_eval[:, positive], eval_df[columns])
    y_after = decode(np.where(decisions.astype(bool), positive, 1 - positive))
    after = audit(y_true, y_after, eval_df[columns], positive_class=positive_class,
                  classes=classes)
    accuracy_before = float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))
    accuracy_after = float(np.mean(np.asarray(y_true) == np.asarray(y_after)))
    section["mitigation"] = {
        "constraint": fairness.mitigation.constraint,
        "objective": fairness.mitigation.objective,
        "tolerance": fairness.mitigation.tolerance,
        "fitted_on": "val",
        "audit_after": after,
        "accuracy_before": accuracy_before,
        "accuracy_after": accuracy_after,
        "state": state,
    }
    gap = (
        "equalized_odds_difference"
        if fairness.mitigation.constraint == "equalized_odds"
        else "demographic_parity_difference"
    )
    say.info(
        f"mitigation ({fairness.mitigation.constraint}): {gap} {before[gap]:.3f} → "
        f"{after[gap]:.3f}, accuracy {accuracy_before:.4f} → {accuracy_after:.4f}"
    )
    return section, replace(predictor, mitigation=state)


def _positive_index(classes: list[Any], positive_class: str | None) -> int:
    """Index of the class that counts as selected: `positive_class`, else the second."""
    if positive_class is None:
        return 1 if len(classes) > 1 else 0
    names = [str(c) for c in classes]
    if str(positive_class) not in names:
        from foundry.errors import ConfigError

        raise ConfigError(
            f"evaluate.fairness.positive_class '{positive_class}' is not a class of the "
            f"target (classes: {', '.join(names)})"
        )
    return names.index(str(positive_class))


def _lines(text: Any) -> list[str]:
    return text.splitlines() if isinstance(text, str) else list(text)
