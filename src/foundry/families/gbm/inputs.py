"""Table columns as LightGBM takes them: one float64 matrix, categories as codes, missing
numbers as NaN.

    inputs = NativeInputs(Preprocessor.fit(train_df, resolved))
    inputs.transform(df)          # {"features": float64 [N, n_inputs], "target": [N]}
    inputs.transform_records(rs)  # the same matrix from API records, bit for bit

The fitted `Preprocessor` is reused for everything it already does (the category
vocabularies, the binary values, the target's classes or mean/std, the drop_row rule,
the JSON state), so a gbm package stores the same `preprocessing` state as a neural one.
Only the packing differs, because trees want other inputs than a network:

    number     the raw value, NaN when missing: trees need no scaling, and LightGBM
               learns which side of each split missing values go to (the `missing`
               fill policies mean/median/zero do not apply; `error` and `drop_row` do)
    binary     0 / 1 as the neural encoder gives it (0.5 unseen or missing, a value a
               split can isolate as well as NaN)
    category   the vocabulary code (0: unseen or rare), declared `categorical_feature`

Columns are in `features.inputs` order, so column j is input j in the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from foundry.data.encoders.category import CategoryEncoder
from foundry.data.encoders.keys import first_row
from foundry.data.encoders.number import NumberEncoder, refuse_infinities, to_float
from foundry.data.preprocess import Preprocessor
from foundry.errors import ConfigError, DataError
from foundry.families.table import PreprocessorView

__all__ = ["NativeInputs", "check_inputs"]

KEY = "features"
"""The one encoded input: float64 [N, n_inputs]."""


def check_inputs(resolved: Any) -> None:
    """ConfigError naming the inputs a booster cannot take (text, image)."""
    unsupported = [
        f"{f.name} ({f.type})"
        for f in resolved.inputs
        if f.type not in ("number", "binary", "category")
    ]
    if unsupported:
        raise ConfigError(
            f"model type gbm takes number, binary and category inputs, not "
            f"{', '.join(unsupported)} (features.inputs)",
            hint="exclude those columns (features.exclude) or pick model type mlp / text",
        )


class NativeInputs(PreprocessorView):
    """A fitted `Preprocessor` seen as LightGBM's input matrix (see the module docstring).
    It answers what `Predictor`, the API and the evaluation read from a preprocessor."""

    def __init__(self, preprocessor: Preprocessor) -> None:
        check_inputs(preprocessor.resolved)
        self.base = preprocessor

    # What callers read from a preprocessor, delegated (the rest: `PreprocessorView`).
    @property
    def encoders(self) -> list[Any]:
        return self.base.encoders

    @property
    def resolved(self) -> Any:
        return self.base.resolved

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NativeInputs:
        return cls(Preprocessor.from_state(state))

    # -------------------------------------------------------------- the matrix

    @property
    def feature_names(self) -> list[str]:
        return [e.name for e in self.encoders]

    @property
    def categorical(self) -> list[int]:
        """Columns LightGBM splits as categories."""
        return [j for j, e in enumerate(self.encoders) if isinstance(e, CategoryEncoder)]

    def transform(self, df: pd.DataFrame, with_target: bool = True) -> dict[str, torch.Tensor]:
        """Frame → {"features": float64 [N, n_inputs]} (+ "target", as `Preprocessor`)."""
        names = [*self.feature_names, *([self.target.name] if with_target else [])]
        missing = [n for n in names if n not in df.columns]
        if missing:
            raise DataError(
                f"data is missing column(s) {missing}; it has {[str(c) for c in df.columns]}"
            )
        x = np.empty((len(df), len(self.encoders)), dtype=np.float64)
        for j, enc in enumerate(self.encoders):
            if isinstance(enc, NumberEncoder):
                x[:, j] = self._number(enc, to_float(df[enc.name], enc.name), df.index)
            else:
                x[:, j] = enc.transform(df[enc.name])
        out = {KEY: torch.from_numpy(x)}
        if with_target:
            out["target"] = torch.from_numpy(self.target.transform(df[self.target.name]))
        return out

    def transform_records(self, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """API records → the matrix `transform` gives for a frame of the same values."""
        x = np.empty((len(records), len(self.encoders)), dtype=np.float64)
        for j, enc in enumerate(self.encoders):
            values = [r[enc.name] for r in records]
            if isinstance(enc, NumberEncoder):
                # None → NaN, as the frame the validator would build holds them
                raw = np.array(values, dtype=np.float64)
                x[:, j] = self._number(enc, raw, range(len(values)))
            else:
                x[:, j] = enc.encode_list(values)
        return {KEY: torch.from_numpy(x)}

    @staticmethod
    def _number(enc: NumberEncoder, x: np.ndarray, index: Sequence[object] | pd.Index) -> Any:
        """Raw float64 values, NaN kept; infinities refused, and missing values under the
        `error` policy (the neural encoder's rules for those two)."""
        refuse_infinities(x, enc.name, index)
        missing = np.isnan(x)
        if enc.missing == "error" and missing.any():
            raise DataError(
                f"number column '{enc.name}' has {int(missing.sum())} missing value(s) "
                f"(first at row {first_row(missing, index)}) and its missing policy is 'error'"
            )
        return x
