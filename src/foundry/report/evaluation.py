"""The model's predictions on its evaluation rows: what the confusion matrix, the ROC and
precision-recall curves and the regression plots are drawn from.

The rows are the model's own evaluation split (`evaluate.split`, read and split again
from the training config with its seed, as `foundry compress` does), or a labelled file.
They are scored as `foundry evaluate` scores them: `Predictor.labelled_outputs`, i.e. the
training's PII rule and the fitted temperature applied, and the decisions the model
returns for them (`returned_metrics`): with fairness mitigation and the sensitive columns
present, the group-thresholded class; otherwise the class with the highest probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foundry.errors import DataError, FoundryError


@dataclass(frozen=True)
class Evaluated:
    """Predictions on labelled rows."""

    source: str
    """Where the rows came from: `the test split`, or the file's path."""
    rows: int
    classification: bool
    classes: list[str]
    """Class labels in the order of `proba`'s columns (empty for a regressor)."""
    y: np.ndarray
    """True class indices [N] (classifier) or true values [N] in target units (regressor)."""
    proba: np.ndarray | None = None
    """Class probabilities [N, n_classes] (classifier)."""
    predicted: np.ndarray | None = None
    """Predicted values [N] in target units (regressor)."""
    metrics: dict[str, Any] | None = None
    """`returned_metrics` of these predictions (what `foundry evaluate` prints)."""
    decisions: np.ndarray | None = None
    """Class indices [N] the model returns when fairness mitigation changed them from
    `proba.argmax(axis=1)`; None otherwise."""


@dataclass(frozen=True)
class Unavailable:
    """Why there are no predictions to draw (one line, shown in the report)."""

    reason: str


def evaluate(sources: Any, data: str | Path | None) -> Evaluated | Unavailable:
    """Predict the evaluation rows of the model in `sources` (or the labelled file
    `data`). A model that cannot predict labels, or rows that cannot be found, give an
    `Unavailable` saying why; a file that does not fit the model raises its DataError."""
    from foundry.lm.load import is_language_package

    manifest = sources.manifest
    task = (manifest.get("hf") or {}).get("task")
    if is_language_package(manifest) and task not in ("classification", "regression"):
        if task == "embedding":
            return Unavailable("an embedding model makes vectors, not labels")
        return Unavailable("a language model predicts tokens, not labels")
    if manifest.get("task") == "recommend":  # its ranking metrics are in the metrics table
        return Unavailable("a recommender ranks items, it predicts no labels")
    from foundry.predictor import load

    if sources.registry is not None:
        predictor = load(sources.ref, registry=sources.registry)
    else:
        predictor = load(Path(sources.package_path))
    if data is not None:
        from foundry.data import read_table

        frame, source = read_table(Path(data)), str(data)
        target = predictor.task.target
        if target not in frame.columns:
            raise DataError(
                f"{data}: the report needs the target column '{target}' to score "
                f"predictions (columns: {', '.join(map(str, frame.columns))})"
            )
    else:
        found = _evaluation_split(manifest)
        if isinstance(found, Unavailable):
            return found
        frame, source = found
    if len(frame) == 0:
        return Unavailable(f"{source} has no rows")
    return _score(predictor, frame, source)


def _evaluation_split(manifest: dict[str, Any]) -> tuple[Any, str] | Unavailable:
    """The rows training evaluated on, read again from the training data (same seed)."""
    from foundry.config.load import LoadedConfig
    from foundry.config.schema import FoundryConfig
    from foundry.console import Reporter
    from foundry.data.dataset import load_splits

    try:
        cfg = FoundryConfig.model_validate(manifest["config"])
    except (KeyError, ValueError) as exc:
        return Unavailable(f"the package's training config cannot be read again ({exc})")
    base_dir = Path((manifest.get("data") or {}).get("base_dir") or Path.cwd())
    try:
        splits, _ = load_splits(LoadedConfig(cfg, base_dir), Reporter(quiet=True))
    except (FoundryError, OSError) as exc:
        message = exc.message if isinstance(exc, FoundryError) else str(exc)
        return Unavailable(
            f"the training data cannot be read again ({message}); pass --data FILE, a "
            "labelled file, to score the model on"
        )
    frame, name = splits.evaluation(cfg.evaluate.split)  # what training evaluated on
    return frame, f"the {name} split"


def _score(predictor: Any, frame: Any, source: str) -> Evaluated:
    from foundry.evaluation.metrics import probabilities, returned_metrics

    task = predictor.task
    y, outputs = predictor.labelled_outputs(frame)
    metrics = returned_metrics(predictor, frame, y, outputs)
    if task.is_classification:
        proba = probabilities(outputs, task)
        sensitive = predictor.sensitive_of(frame) if hasattr(predictor, "sensitive_of") else None
        return Evaluated(
            source=source,
            rows=len(frame),
            classification=True,
            classes=[str(c) for c in task.classes],
            y=np.asarray(y, dtype=np.int64),
            proba=proba,
            metrics=metrics,
            decisions=None if sensitive is None else predictor.mitigated(proba, sensitive),
        )
    # as compute_metrics reports regression: back in the target's units
    std, mean = float(task.target_std), float(task.target_mean)
    out = np.asarray(outputs, dtype=np.float64)
    out = out[:, 0] if out.ndim == 2 else out
    return Evaluated(
        source=source,
        rows=len(frame),
        classification=False,
        classes=[],
        y=np.asarray(y, dtype=np.float64) * std + mean,
        predicted=out * std + mean,
        metrics=metrics,
    )
