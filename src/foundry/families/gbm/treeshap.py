"""Local explanations of a gbm model: exact TreeSHAP contributions from LightGBM
(`Booster.predict(x, pred_contrib=True)`), in the format `foundry explain` and the
/explain route give for every model (see `evaluation.explain`).

Per row and explained class, `attributions[input]` is that input's SHAP value of the
raw score (log-odds of the class for a binary model, the class's score before softmax
for a multi-class one, the predicted value in the target's units for a regressor), and
`baseline_output` is the expected raw score over the training data (the trees' bias
term), so attributions sum to `output - baseline_output` exactly: `convergence_delta` is
only float rounding. The explained output is before temperature scaling, as for networks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# one JSON rule for every explainer's numbers and labels
from foundry.evaluation.explain import _json_value, _num

__all__ = ["METHOD", "TreeShap"]

METHOD = "tree_shap"


class TreeShap:
    """Has the methods `evaluation.explain.Explainer` asks of a network: `encode_frame`,
    `encode_records`, and `explain_encoded` in place of the integral."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.task = predictor.task
        self.model = predictor.model

    def encode_frame(self, df: Any) -> np.ndarray:
        frame = self.predictor.scrub(df)  # as `Predictor.outputs` encodes: PII rule first
        return self.predictor.preprocessor.transform(frame, with_target=False)["features"].numpy()

    def encode_records(self, records: list[dict[str, Any]]) -> np.ndarray:
        if self.predictor.scrubber is not None:
            records = self.predictor.scrubber.transform_records(records)
        return self.predictor.preprocessor.transform_records(records)["features"].numpy()

    def explain_encoded(
        self, x: np.ndarray, predicted: list[Any], fixed: int | None
    ) -> dict[str, Any]:
        """Attributions for the rows of `x` (float64 [N, F]) for class `fixed` or, when
        None, each row's predicted label (`predicted`)."""
        task = self.task
        contrib = self.model.contributions(x)  # [N, n_outputs, F + 1]
        if not task.is_classification:  # the value in the target's units
            explained = contrib[:, :1] * task.target_std
            explained[:, :, -1] += task.target_mean
        elif contrib.shape[1] == 1:  # one log-odds score: class 1's, negated for class 0
            explained = np.concatenate([-contrib, contrib], axis=1)
        else:
            explained = contrib
        classes = [str(c) for c in task.classes]
        columns = self.predictor.input_columns
        rows = []
        for i, label in enumerate(predicted):
            if fixed is not None:
                k = fixed
            elif label is not None and str(label) in classes:
                k = classes.index(str(label))
            else:  # a regressor (one output), or no label: the top score
                k = int(explained[i, :, :].sum(-1).argmax())
            values = explained[i, k]  # [F + 1]
            output, base = float(values.sum()), float(values[-1])
            attributions = {c: _num(v) for c, v in zip(columns, values[:-1], strict=True)}
            rows.append(
                {
                    "prediction": _json_value(label),
                    "target_class": classes[k] if classes else None,
                    "output": _num(output),
                    "baseline_output": _num(base),
                    "attributions": attributions,
                    "convergence_delta": _num(output - base - float(values[:-1].sum())),
                }
            )
        return {
            "model": self.predictor.ref,
            "method": METHOD,
            "steps": None,
            "output": _meaning(task, self.model.n_outputs),
            "baseline": {
                c: "the expected output over the training rows (TreeSHAP)" for c in columns
            },
            "rows": rows,
        }


def _meaning(task: Any, n_outputs: int) -> str:
    if not task.is_classification:
        return f"the predicted '{task.target}' value, in its units"
    if n_outputs == 1:
        return "the log-odds of the target class (the trees' raw score, negated for the first)"
    return "the raw score of the target class (before softmax and temperature)"

