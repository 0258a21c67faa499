"""`foundry evaluate`: a registered model on a labelled data file → metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import foundry.crypto as crypto
from foundry.errors import DataError, ModelError


@dataclass(frozen=True)
class EvaluationResult:
    model_ref: str
    data_path: Path
    rows: int
    """Rows scored (documents or conversations for a language model)."""
    metrics: dict[str, Any]
    output_path: Path | None
    classes: list[Any] = field(default_factory=list)
    """Class labels, in the order of the confusion matrix (classifiers)."""


def evaluate_model(
    ref: str,
    data: str | Path,
    *,
    output: str | Path | None = None,
    progress: bool | None = None,
) -> EvaluationResult:
    """Score model `ref` on the labelled file `data`; write `metrics.json` to `output`.

    Classifiers and regressors (tabular, image, text, fine-tuned Hugging Face) get the
    metrics training reported; language models their perplexity on the file's text.
    `progress`: bars on stderr while a big file is read and scored (None: by
    `foundry.progress.progress_enabled`; False: never)."""
    from foundry.data import read_table
    from foundry.evaluation.metrics import returned_metrics
    from foundry.lm.load import is_language_package
    from foundry.predictor import Predictor, load

    path = Path(data)
    pinned, manifest = _manifest(ref)
    task = (manifest.get("hf") or {}).get("task")
    if is_language_package(manifest) and task not in ("classification", "regression"):
        if task == "embedding":
            raise ModelError(
                f"model {pinned} is an embedding model: it has no labels or perplexity "
                "to evaluate"
            )
        from foundry.lm.evaluate import evaluate_lm_file
        from foundry.registry import Registry, read_package
        from foundry.registry.refs import is_package_dir

        package = (
            read_package(Path(ref)) if is_package_dir(Path(ref)) else Registry().load(pinned)
        )
        rows, metrics = evaluate_lm_file(package, pinned, path)
        return EvaluationResult(pinned, path, rows, metrics, _write(metrics, output))

    predictor = load(ref)
    df = read_table(path, progress=progress)
    target = predictor.task.target
    if target not in df.columns:
        raise DataError(
            f"{data}: evaluation needs the target column '{target}' "
            f"(columns: {', '.join(map(str, df.columns))})"
        )
    if isinstance(predictor, Predictor):
        y, outputs = predictor.labelled_outputs(df, progress=progress)
    else:  # a fine-tuned Hugging Face model batches on its own
        y, outputs = predictor.labelled_outputs(df)
    # the decisions the model returns for these rows (fairness mitigation applied when
    # the file has the sensitive columns), the most probable class's beside them
    metrics = returned_metrics(predictor, df, y, outputs)
    metrics.update(trust_metrics(predictor, df, y, outputs))
    return EvaluationResult(
        predictor.ref,
        path,
        len(df),
        metrics,
        _write(metrics, output),
        classes=list(predictor.task.classes),
    )


def trust_metrics(predictor: Any, df: Any, y: Any, outputs: Any) -> dict[str, Any]:
    """What the model's trust settings add to its metrics on a labelled file: the
    expected calibration error (classifiers) and, when the file has the sensitive
    columns of `evaluate.fairness`, the per-group audit of the model's decisions (the
    mitigated ones too, when it has mitigation)."""
    import numpy as np

    from foundry.evaluation.metrics import probabilities

    task = getattr(predictor, "task", None)
    if task is None or not task.is_classification or len(y) == 0:
        return {}
    from foundry.evaluation.calibration import expected_calibration_error

    manifest = getattr(predictor, "manifest", {}) or {}
    bins = (manifest.get("calibration") or {}).get("bins", 15)
    proba = probabilities(outputs, task)
    out: dict[str, Any] = {"ece": expected_calibration_error(proba, y, bins=bins)}
    settings = ((manifest.get("config") or {}).get("evaluate") or {}).get("fairness") or {}
    columns = settings.get("sensitive_features") or []
    if not columns or not all(c in df.columns for c in columns):
        return out
    from foundry.evaluation.fairness import audit

    decode = predictor.preprocessor.decode_labels
    classes = list(task.classes)
    mitigation = getattr(predictor, "mitigation", None)
    positive = int(mitigation["positive_index"]) if mitigation else (1 if len(classes) > 1 else 0)
    positive_class = classes[positive] if len(classes) == 2 else settings.get("positive_class")
    y_true = decode(np.asarray(y))
    y_pred = decode(proba.argmax(axis=1))
    out["fairness"] = audit(
        y_true, y_pred, df[columns], positive_class=positive_class, classes=classes
    )
    if mitigation:  # its accuracy is the headline one (`returned_metrics`)
        chosen = predictor.mitigated(proba, df[columns])
        out["fairness_mitigated"] = audit(
            y_true, decode(chosen), df[columns], positive_class=positive_class, classes=classes
        )
    return out


def _manifest(ref: str) -> tuple[str, dict[str, Any]]:
    """(pinned ref, manifest) of a registry reference or a package directory."""
    from foundry.lm.load import read_manifest
    from foundry.registry.refs import is_package_dir

    if is_package_dir(Path(ref)):
        manifest_path = Path(ref) / "foundry.json"
        try:
            manifest = json.loads(crypto.read_text(manifest_path))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{manifest_path}: cannot read the model manifest: {exc}") from exc
        return f"{manifest.get('name', Path(ref).name)}:{manifest.get('version')}", manifest
    return read_manifest(ref)


def _write(metrics: dict[str, Any], output: str | Path | None) -> Path | None:
    if output is None:
        return None
    out_path = Path(output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(metrics, indent=2))
    return out_path
