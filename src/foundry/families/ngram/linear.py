"""The linear head over the n-gram matrix: fitted by scikit-learn, kept as two arrays.

    weight, bias = fit_head(x, y, config, task, sample_weight, seed)   # float32 arrays
    model = LinearModel(weight, bias)
    model({"features": SparseRows})     # float32 tensor [N, n_outputs], as a network's
    model.contributions(x)              # float64 [N, n_outputs, F]: weight x value

Raw scores play a network's logits: the log-odds of the second class (binary, one
column), one score per class (multi-class: softmax, divided by the calibrated
temperature, gives the probabilities), or the standardised target (regression). So
`Predictor`'s probabilities, temperature scaling, fairness thresholds, metrics and the
API's decoding apply unchanged. An SVM's scores are margins, not log-odds: the
temperature calibration fits on the validation split (`evaluate.calibration`, on by
default) is what makes its probabilities honest.

The arrays are stored as float32 and the in-memory model holds them rounded the same
way, so the fitted model and the loaded package give the same outputs bit for bit.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["LinearModel", "fit_head"]


class LinearModel:
    """scores = x @ weight.T + bias, x the `NGramInputs` matrix."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight = np.asarray(weight, dtype=np.float32)  # [n_outputs, F]
        self.bias = np.asarray(bias, dtype=np.float32)  # [n_outputs]
        # computed in float64 from the float32 values (what the package stores)
        self._weight_t = self.weight.astype(np.float64).T  # [F, n_outputs]
        self._bias = self.bias.astype(np.float64)

    @property
    def n_outputs(self) -> int:
        return self.weight.shape[0]

    def scores(self, x: sp.csr_matrix) -> np.ndarray:
        """float64 [N, n_outputs]."""
        return np.asarray(x @ self._weight_t) + self._bias

    def __call__(self, inputs: dict[str, Any]) -> torch.Tensor:
        return torch.from_numpy(self.scores(inputs["features"].matrix).astype(np.float32))

    def contributions(
        self, x: sp.csr_matrix, row: int, output: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(the columns row `row` of `x` has, float64 weight x value of each for output
        `output`): summed with the bias they give the row's raw score."""
        start, stop = x.indptr[row], x.indptr[row + 1]
        columns = x.indices[start:stop]
        return columns, x.data[start:stop] * self._weight_t[columns, output]

    def local_explainer(self, predictor: Any) -> Any:
        """Explanations for `foundry explain` and /explain: each n-gram's exact share of
        the score (weight x tf-idf), no gradients."""
        from foundry.families.ngram.explain import LinearContributions

        return LinearContributions(predictor)


def fit_head(
    x: sp.csr_matrix,
    y: np.ndarray,
    model: Any,
    task: Any,
    sample_weight: np.ndarray | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(weight float32 [n_outputs, F], bias float32 [n_outputs]) of the head `model`
    (`NGramConfig`) names, fitted on `x` [N, F] and targets `y` (class indices, or the
    standardised number)."""
    from sklearn.exceptions import ConvergenceWarning

    if not task.is_classification:
        from sklearn.linear_model import Ridge

        head: Any = Ridge(alpha=1.0 / (2.0 * model.C), max_iter=model.max_iter, random_state=seed)
        y = y.astype(np.float64)
    elif model.head == "svm":
        from sklearn.svm import LinearSVC

        # The primal (dual=False) is faster with more rows than useful columns; n-gram
        # matrices have more columns than rows, where the dual wins.
        head = LinearSVC(
            C=model.C, max_iter=model.max_iter, random_state=seed, dual=x.shape[1] > x.shape[0]
        )
    else:
        from sklearn.linear_model import LogisticRegression

        head = LogisticRegression(C=model.C, max_iter=model.max_iter, random_state=seed)
    with warnings.catch_warnings():
        # Not converging within max_iter still gives a usable model; the metrics say how
        # good, and the card records max_iter.
        warnings.simplefilter("ignore", ConvergenceWarning)
        head.fit(x, y, sample_weight=sample_weight)
    weight = np.atleast_2d(np.asarray(head.coef_, dtype=np.float64))
    bias = np.atleast_1d(np.asarray(head.intercept_, dtype=np.float64))
    if not task.is_classification:
        weight, bias = weight.reshape(1, -1), bias.reshape(1)
    elif task.n_classes > 2:
        weight, bias = _every_class(weight, bias, head.classes_, task.n_classes)
    return weight.astype(np.float32), bias.astype(np.float32)


ABSENT_SCORE = -30.0
"""The score of a class no training row has (exp(-30) ~ 1e-13: never predicted)."""


def _every_class(
    weight: np.ndarray, bias: np.ndarray, present: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One row per class of the task when the training split lacks some (a rare class
    that fell into validation): scikit-learn fits rows for the classes it saw only."""
    present = np.asarray(present, dtype=np.int64)
    if len(present) == n_classes:
        return weight, bias
    full_w = np.zeros((n_classes, weight.shape[1]))
    full_b = np.full(n_classes, ABSENT_SCORE)
    if len(present) == 2:  # one score s for the second: softmax of (-s/2, s/2) is sigmoid(s)
        full_w[present] = [-weight[0] / 2, weight[0] / 2]
        full_b[present] = [-bias[0] / 2, bias[0] / 2]
    else:
        full_w[present], full_b[present] = weight, bias
    return full_w, full_b
