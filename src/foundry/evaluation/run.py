"""`foundry evaluate`: a registered model on a labelled data file → metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry.errors import DataError


@dataclass(frozen=True)
class EvaluationResult:
    model_ref: str
    data_path: Path
    rows: int
    metrics: dict[str, Any]
    output_path: Path | None


def evaluate_model(
    ref: str, data: str | Path, *, output: str | Path | None = None
) -> EvaluationResult:
    """Score model `ref` on the labelled file `data`; write `metrics.json` to `output`."""
    from foundry.data import read_table
    from foundry.evaluation.metrics import compute_metrics
    from foundry.predictor import load

    predictor = load(ref)
    df = read_table(Path(data))
    target = predictor.task.target
    if target not in df.columns:
        raise DataError(
            f"{data}: evaluation needs the target column '{target}' "
            f"(columns: {', '.join(map(str, df.columns))})"
        )
    encoded = predictor.preprocessor.transform(df, with_target=True)
    from foundry.predictor import run_model

    outputs = run_model(predictor.model, encoded, len(df))
    metrics = compute_metrics(predictor.task, encoded["target"].numpy(), outputs)
    out_path = None
    if output is not None:
        out_path = Path(output)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(metrics, indent=2))
    return EvaluationResult(predictor.ref, Path(data), len(df), metrics, out_path)
