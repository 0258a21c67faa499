"""Early stopping on one monitored metric (`train.early_stopping`)."""

from __future__ import annotations

import math
from typing import Any, Literal

__all__ = ["EarlyStopping", "resolve_mode"]

# Metric names containing one of these are minimised under `mode: auto`.
_MINIMISED = ("loss", "error", "mse", "rmse", "mae")


def resolve_mode(metric: str, mode: str = "auto") -> Literal["min", "max"]:
    """`auto` → `min` for losses and errors (`val_loss`, `val_rmse`...), else `max`."""
    if mode in ("min", "max"):
        return mode  # type: ignore[return-value]
    return "min" if any(word in metric.lower() for word in _MINIMISED) else "max"


class EarlyStopping:
    """Tracks the best value of `metric` and counts epochs without improvement.

    A value improves on the best by more than `min_delta` in the direction of `mode`.
    `should_stop` turns true after `patience` epochs in a row without improvement
    (`patience=None` never stops). NaN never improves.
    """

    def __init__(
        self,
        metric: str,
        mode: str = "auto",
        patience: int | None = 5,
        min_delta: float = 0.0,
    ) -> None:
        self.metric = metric
        self.mode = resolve_mode(metric, mode)
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.bad_epochs = 0  # epochs since the last improvement

    def update(self, value: float) -> bool:
        """Record one epoch's value; returns whether it is a new best."""
        value = float(value)
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.mode == "min":
            improved = value < self.best - self.min_delta
        else:
            improved = value > self.best + self.min_delta

        if improved:
            self.best = value
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "metric": self.metric,
            "mode": self.mode,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the progress (best value, epochs without improvement); the settings
        given to the constructor are kept."""
        self.best = None if state["best"] is None else float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
