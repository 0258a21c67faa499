"""Local explanations of an ngram model: a linear score is a sum, so each n-gram's share
is exact (its weight x its tf-idf value in the row), in the format `foundry explain` and
the /explain route give for every model (see `evaluation.explain`).

Per row and explained class, `attributions[input]` is the sum of that input's columns'
shares of the raw score (a text input: all its n-grams; a category: its one-hot column;
a number: weight x standardised value), `baseline_output` is the bias (the score of a
row with no n-grams and every number at its training mean), so attributions sum to
`output - baseline_output` exactly: `convergence_delta` is only float rounding. `tokens`
lists the row's n-grams with the largest shares, `[["word:python3 foo", share], ...]`
(`char:` for character n-grams; the input's name first when the model has several text
inputs). The explained output is before temperature scaling, as for networks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# one JSON rule for every explainer's numbers and labels
from foundry.evaluation.explain import _json_value, _num
from foundry.families.ngram.vectorize import texts_of

__all__ = ["METHOD", "TOP_NGRAMS", "LinearContributions"]

METHOD = "linear_contributions"
TOP_NGRAMS = 10
"""N-grams listed per explained row (largest shares by magnitude)."""


class LinearContributions:
    """Has the methods `evaluation.explain.Explainer` asks of a network: `encode_frame`,
    `encode_records`, and `explain_encoded` in place of the integral."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.task = predictor.task
        self.model = predictor.model
        self.inputs = predictor.preprocessor
        self._text_columns = sorted({g.column for g in self.inputs.texts})

    def encode_frame(self, df: Any) -> dict[str, Any]:
        frame = self.predictor.scrub(df)  # as `Predictor.outputs` encodes: PII rule first
        x = self.inputs.transform(frame, with_target=False)["features"].matrix
        return {"x": x, "texts": {c: texts_of(frame[c], c) for c in self._text_columns}}

    def encode_records(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        if self.predictor.scrubber is not None:
            records = self.predictor.scrubber.transform_records(records)
        x = self.inputs.transform_records(records)["features"].matrix
        texts = {c: texts_of([r[c] for r in records], c) for c in self._text_columns}
        return {"x": x, "texts": texts}

    def explain_encoded(
        self, encoded: dict[str, Any], predicted: list[Any], fixed: int | None
    ) -> dict[str, Any]:
        """Shares for the rows of `encoded` for class `fixed` or, when None, each row's
        predicted label (`predicted`)."""
        task, model, x = self.task, self.model, encoded["x"]
        scores = model.scores(x)  # [N, n_outputs]
        classes = [str(c) for c in task.classes]
        rows = []
        for i, label in enumerate(predicted):
            if not task.is_classification:
                k, sign, scale, shift = 0, 1.0, task.target_std, task.target_mean
            else:
                if fixed is not None:
                    k = fixed
                elif label is not None and str(label) in classes:
                    k = classes.index(str(label))
                else:
                    k = int(np.argmax(scores[i])) if model.n_outputs > 1 else int(scores[i, 0] > 0)
                scale, shift = 1.0, 0.0
                # one log-odds score for the second class: negated for the first
                sign = (1.0 if k == 1 else -1.0) if model.n_outputs == 1 else 1.0
            output = 0 if model.n_outputs == 1 else k  # the score column explained
            columns, shares = model.contributions(x, i, output)
            shares = shares * sign * scale
            base = float(model.bias[output]) * sign * scale + shift
            attributions = dict.fromkeys(self.predictor.input_columns, 0.0)
            named: list[tuple[str, float]] = []
            for block in self.inputs.blocks:
                inside = (columns >= block.start) & (columns < block.stop)
                attributions[block.name] += float(shares[inside].sum())
                if block.kind in ("word", "char") and inside.any():
                    named += self._ngrams(
                        block, encoded["texts"], i, columns[inside], shares[inside]
                    )
            named.sort(key=lambda item: -abs(item[1]))
            total = float(shares.sum())
            out = base + total
            rows.append(
                {
                    "prediction": _json_value(label),
                    "target_class": classes[k] if classes else None,
                    "output": _num(out),
                    "baseline_output": _num(base),
                    "attributions": {c: _num(v) for c, v in attributions.items()},
                    "tokens": [[name, _num(v)] for name, v in named[:TOP_NGRAMS]],
                    "convergence_delta": _num(out - base - sum(attributions.values())),
                }
            )
        return {
            "model": self.predictor.ref,
            "method": METHOD,
            "steps": None,
            "output": _meaning(task, model.n_outputs),
            "baseline": {
                c: "absent (no n-grams), at the training mean, or the unseen category"
                for c in self.predictor.input_columns
            },
            "rows": rows,
        }

    def _ngrams(
        self,
        block: Any,
        texts: dict[str, list[str]],
        row: int,
        columns: np.ndarray,
        shares: np.ndarray,
    ) -> list[tuple[str, float]]:
        """(label, share) of each n-gram column of `block` the row has."""
        grams = next(
            g for g in self.inputs.texts if g.column == block.name and g.kind == block.kind
        )
        prefix = f"{block.name}:" if len(self._text_columns) > 1 else ""
        if grams.vocabulary is not None:
            names = [grams.vocabulary[j - block.start] for j in columns]
        else:  # hashing: the row's own n-grams that land in each column
            by_column = grams.grams_of(texts[block.name][row])
            names = [" | ".join(by_column.get(int(j - block.start), ["?"])) for j in columns]
        return [
            (f"{prefix}{block.kind}:{name}", float(v))
            for name, v in zip(names, shares, strict=True)
        ]


def _meaning(task: Any, n_outputs: int) -> str:
    if not task.is_classification:
        return f"the predicted '{task.target}' value, in its units"
    if n_outputs == 1:
        return "the log-odds score of the target class (the linear score, negated for the first)"
    return "the linear score of the target class (before softmax and temperature)"
