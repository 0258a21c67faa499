"""The target: class indices for classification, standardised floats for regression."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from foundry.data.encoders.keys import arrow_lookup, category_keys, first_row, lookup, sort_keys
from foundry.data.encoders.number import arrow_floats, to_float
from foundry.data.schema import TaskInfo
from foundry.errors import DataError


@dataclass(frozen=True)
class TargetEncoder:
    name: str
    task: str
    """"binary" (2 classes), "multiclass" (> 2) or "regression"."""
    classes: list[str]
    mean: float
    std: float

    @property
    def info(self) -> TaskInfo:
        return TaskInfo(
            target=self.name,
            task=self.task,
            classes=list(self.classes),  # type: ignore[arg-type]
            target_mean=self.mean,
            target_std=self.std,
        )

    @classmethod
    def fit(cls, col: pd.Series, name: str, target_type: str) -> TargetEncoder:
        _refuse_missing(col, name)
        if target_type == "number":
            y = to_float(col, name)
            return cls.regression(name, mean=float(y.mean()), std=float(y.std()))
        return cls.classification(name, [str(k) for k in category_keys(col).unique()], target_type)

    @classmethod
    def regression(cls, name: str, *, mean: float, std: float) -> TargetEncoder:
        """A number target from its training mean and (population) std."""
        return cls(name=name, task="regression", classes=[], mean=mean, std=std if std > 0 else 1.0)

    @classmethod
    def classification(cls, name: str, labels: list[str], target_type: str) -> TargetEncoder:
        """A class target from the distinct label keys of the training rows."""
        classes = sort_keys(labels)
        if len(classes) < 2:
            raise DataError(
                f"target column '{name}' has only one class ({classes[0]!r}) in the training rows"
            )
        if target_type == "binary" and len(classes) != 2:
            raise DataError(
                f"target_type 'binary' needs 2 classes, target column '{name}' "
                f"has {len(classes)} in the training rows"
            )
        task = "binary" if len(classes) == 2 else "multiclass"
        return cls(name=name, task=task, classes=classes, mean=0.0, std=1.0)

    def transform(self, col: pd.Series) -> np.ndarray:
        """Column [N] → int64 [N] class indices, or float32 [N] standardised values."""
        _refuse_missing(col, self.name)
        if self.task == "regression":
            return ((to_float(col, self.name) - self.mean) / self.std).astype(np.float32)
        keys = category_keys(col)
        idx = lookup(keys, self.classes)
        unseen = idx < 0
        if unseen.any():
            values = sorted(set(keys[unseen].tolist()))
            raise DataError(
                f"target column '{self.name}' has label(s) not seen in training: "
                f"{', '.join(map(repr, values[:5]))} (first at row "
                f"{first_row(unseen, col.index)}); known: {self.classes}"
            )
        return idx.astype(np.int64)

    def transform_arrow(self, arr: pa.Array) -> np.ndarray | None:
        """Arrow column [N] → `transform(arr.to_pandas())`, bit for bit, without pandas.
        None for a type with no Arrow path, and for a missing, infinite or unseen value:
        `transform` on the pandas column then raises the error naming it."""
        if self.task == "regression":
            y = arrow_floats(arr)
            if y is None or not np.isfinite(y).all():
                return None
            return ((y - self.mean) / self.std).astype(np.float32)
        found = arrow_lookup(arr, self.classes)
        if found is None or found[1].any() or (found[0] < 0).any():
            return None
        return found[0]

    def decode(self, indices: np.ndarray) -> np.ndarray:
        """Class indices [N] → labels [N] (object array of str)."""
        return np.asarray(self.classes, dtype=object)[np.asarray(indices, dtype=np.int64)]

    def denormalize(self, values: np.ndarray) -> np.ndarray:
        """Standardised predictions → original units (float64)."""
        return np.asarray(values, dtype=np.float64) * self.std + self.mean

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> TargetEncoder:
        return cls(**d)


def _refuse_missing(col: pd.Series, name: str) -> None:
    missing = col.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"target column '{name}' is missing in {int(missing.sum())} row(s) (first at row "
            f"{first_row(missing, col.index)}); drop or fill them"
        )
