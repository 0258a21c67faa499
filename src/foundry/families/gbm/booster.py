"""A LightGBM booster as the `model` of a `Predictor`: encoded inputs in, raw scores out.

    model = BoosterModel.from_string(text, n_outputs)   # lgb.Booster(model_str=...)
    model({"features": x})                             # float32 tensor [N, n_outputs]
    model.contributions(x)                             # TreeSHAP [N, n_outputs, F + 1]

Raw scores are what a network's logits are to the rest of foundry: the log-odds of the
second class (binary, one column), one score per class (multi-class, softmax gives the
probabilities), or the standardised target (regression, trained on the target scaled
as the neural family scales it). So `Predictor`'s probabilities, temperature scaling,
fairness thresholds, metrics and the API's decoding apply unchanged.

Stored as LightGBM's own text format (`model_to_string`): plain text, no pickle, read
back by `lgb.Booster(model_str=...)` to the same trees and the same outputs.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import torch

from foundry.errors import ModelError

__all__ = ["MODEL_FILE", "BoosterModel", "sha256_text", "threads_for"]

MODEL_FILE = "model.txt"
"""The booster's file inside a package."""


class BoosterModel:
    """A trained `lgb.Booster` and how many raw scores it gives per row."""

    def __init__(self, booster: Any, n_outputs: int) -> None:
        self.booster = booster
        self.n_outputs = n_outputs

    @classmethod
    def from_string(cls, text: str, n_outputs: int) -> BoosterModel:
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as exc:
            raise ModelError(f"{MODEL_FILE} is not a LightGBM model: {exc}") from None
        return cls(booster, n_outputs)

    def to_string(self) -> str:
        """The best iteration's trees only (those the outputs use)."""
        return self.booster.model_to_string()

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw scores, float32 [N, n_outputs], as a network's forward gives them."""
        x = inputs["features"].numpy()
        raw = self.booster.predict(x, raw_score=True, num_threads=threads_for(len(x)))
        return torch.from_numpy(np.asarray(raw, dtype=np.float32).reshape(len(x), -1))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """TreeSHAP: float64 [N, n_outputs, n_features + 1], the last column the expected
        raw score (the bias); each row of a score sums to that raw score."""
        contrib = self.booster.predict(x, pred_contrib=True, num_threads=threads_for(len(x)))
        return np.asarray(contrib, dtype=np.float64).reshape(len(x), self.n_outputs, -1)

    def local_explainer(self, predictor: Any) -> Any:
        """Explanations for `foundry explain` and /explain: exact TreeSHAP, not
        integrated gradients (trees have no gradients)."""
        from foundry.families.gbm.treeshap import TreeShap

        return TreeShap(predictor)


def threads_for(n_rows: int) -> int:
    """LightGBM threads when `train.num_threads` is not set: one per 50,000 rows, up to
    the cores. OpenMP threads spin while they wait, so on small tables more threads are
    slower, and on a busy machine far slower (`benchmarks/gbm_defaults.py --threads`:
    569 rows, 188 rounds, 0.30 s on 1 thread vs 2.5 s on 2 on a loaded 2-core machine).
    Prediction takes the same rule: an API batch of a few rows runs on one thread.
    """
    # the cores this process may run on (a container's limit), not the machine's
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, n_rows // 50_000))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
