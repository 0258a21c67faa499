"""Deciding what each column is (number, binary, category, text, image) and what the task is.

All checks run as pandas column operations on a sample of at most 10k non-missing values,
so inference costs the same on 1k rows as on 10M.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from foundry.config.schema import FeatureConfig, FeaturesConfig, FeatureType
from foundry.data.load import IMAGE_EXTENSIONS
from foundry.errors import DataError

TargetType = Literal["binary", "category", "number"]

SAMPLE_ROWS = 10_000
"""Inference looks at this many non-missing values at most (seeded sample)."""
TEXT_MIN_TOKENS = 4.0
"""Strings averaging this many whitespace-separated tokens are free text."""
TEXT_MIN_CHARS = 30.0
"""...and so are mostly-unique strings averaging this many characters."""
ID_UNIQUE_RATIO = 0.95
"""Short strings this unique are identifiers, not categories (skipped from inputs)."""
ID_MIN_ROWS = 20
"""Below this many rows every category looks unique; do not call anything an ID."""
CLASS_TARGET_MAX_INTS = 10
"""An integer target with at most this many distinct values is a class label."""


@dataclass(frozen=True)
class ResolvedFeatures:
    """The feature section with everything inferred filled in.

    `inputs` keep their config order and every one has `type` set; `target_type` decides
    the task (binary / category → classification, number → regression).
    """

    inputs: list[FeatureConfig]
    target: str
    target_type: TargetType

    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.inputs]

    def to_dict(self) -> dict:
        return {
            "inputs": [f.model_dump(mode="json") for f in self.inputs],
            "target": self.target,
            "target_type": self.target_type,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ResolvedFeatures:
        return cls(
            inputs=[FeatureConfig.model_validate(f) for f in d["inputs"]],
            target=d["target"],
            target_type=d["target_type"],
        )


def infer_type(series: pd.Series) -> FeatureType:
    """Guess a column's feature type from its values (missing values ignored).

    image: strings ending in an image extension; binary: exactly 2 distinct values;
    number: any other numeric column (few distinct integers stay numbers);
    text: strings averaging >= 4 tokens, or mostly-unique long strings; else category.
    """
    values = series.dropna()
    if len(values) == 0:
        return "number" if pd.api.types.is_numeric_dtype(series.dtype) else "category"
    if pd.api.types.is_bool_dtype(values.dtype):
        return "binary"
    if _is_numeric(values):
        return "binary" if _has_two_values(values) else "number"
    sample = _sample(values).astype(str)
    if sample.str.lower().str.endswith(IMAGE_EXTENSIONS).mean() >= 0.9:
        return "image"
    if _has_two_values(values.astype(str) if values.dtype == object else values):
        return "binary"
    if _looks_like_text(sample):
        return "text"
    return "category"


def infer_features(df: pd.DataFrame, features: FeaturesConfig) -> ResolvedFeatures:
    """Resolve the target type and every input's type against `df`.

    Uses `features.inputs` when given (only missing types are inferred), else every column
    except the target and `features.exclude`, skipping identifier-like and empty columns
    with a warning. Raises `DataError` for unknown columns, a one-valued target, a
    non-numeric regression target, and when no input is left.
    """
    columns = [str(c) for c in df.columns]
    target = features.target
    if target not in df.columns:
        raise DataError(f"target column '{target}' not found; {_available(columns, target)}")
    target_type = _resolve_target_type(df[target], target, features.target_type)

    if features.inputs is not None:
        inputs = _resolve_given_inputs(df, features, columns)
    else:
        inputs = _infer_inputs(df, features, columns)
    if not inputs:
        raise DataError(
            f"no input columns left: the data has {columns}, target '{target}', "
            f"excluded {features.exclude}"
        )
    return ResolvedFeatures(inputs=inputs, target=target, target_type=target_type)


# ------------------------------------------------------------------------ helpers


def _resolve_target_type(col: pd.Series, name: str, forced: TargetType | None) -> TargetType:
    values = col.dropna()
    n_distinct = values.nunique()
    if n_distinct < 2:
        seen = f"only the value {values.iloc[0]!r}" if n_distinct else "no values"
        raise DataError(f"target column '{name}' has {seen}; it needs at least two")
    numeric = _is_numeric(values) and not pd.api.types.is_bool_dtype(values.dtype)
    if forced == "number":
        # Forced: accept numbers stored as strings too (the target encoder parses them).
        bad = pd.to_numeric(values, errors="coerce").isna() if not numeric else None
        if bad is not None and bad.any():
            example = values[bad].iloc[0]
            raise DataError(
                f"target_type 'number' needs a numeric target, but column '{name}' has "
                f"non-numeric values such as {example!r}"
            )
        return "number"
    if forced == "binary" and n_distinct != 2:
        raise DataError(
            f"target_type 'binary' needs exactly 2 classes, column '{name}' has {n_distinct}"
        )
    if forced is not None:
        return forced
    if n_distinct == 2:
        return "binary"
    if numeric:
        x = pd.to_numeric(values).to_numpy(dtype=np.float64)
        # Class labels stored as small integers (0/1/2, digits) are a classification
        # task; pass target_type: number to regress on them instead.
        if n_distinct <= CLASS_TARGET_MAX_INTS and np.all(x == np.round(x)):
            return "category"
        return "number"
    return "category"


def _resolve_given_inputs(
    df: pd.DataFrame, features: FeaturesConfig, columns: list[str]
) -> list[FeatureConfig]:
    inputs = features.inputs or []
    for f in inputs:
        if f.name not in df.columns:
            raise DataError(f"input column '{f.name}' not found; {_available(columns, f.name)}")
        if f.name == features.target:
            raise DataError(f"column '{f.name}' is the target and cannot also be an input")
    return [
        f if f.type is not None else f.model_copy(update={"type": infer_type(df[f.name])})
        for f in inputs
    ]


def _infer_inputs(
    df: pd.DataFrame, features: FeaturesConfig, columns: list[str]
) -> list[FeatureConfig]:
    for name in features.exclude:
        if name not in df.columns:
            # A typo here would silently leak the column it meant to drop.
            raise DataError(f"excluded column '{name}' not found; {_available(columns, name)}")
    skip = {features.target, *features.exclude}
    inputs = []
    for name in df.columns:
        if name in skip:
            continue
        col = df[name]
        if col.isna().all():
            warnings.warn(f"column '{name}' is entirely missing; skipped", stacklevel=3)
            continue
        feature_type = infer_type(col)
        if _looks_like_id(col, feature_type):
            warnings.warn(
                f"column '{name}' looks like an identifier (almost every value is unique); "
                "skipped. List it in features.inputs to use it anyway",
                stacklevel=3,
            )
            continue
        inputs.append(FeatureConfig(name=str(name), type=feature_type))
    return inputs


def _looks_like_id(col: pd.Series, feature_type: FeatureType) -> bool:
    """Short near-unique strings, or integers that are exactly a row counter."""
    values = col.dropna()
    n = len(values)
    if n < ID_MIN_ROWS:
        return False
    if feature_type == "category":
        sample = _sample(values).astype(str)
        unique_ratio = sample.nunique() / len(sample)
        return unique_ratio > ID_UNIQUE_RATIO and sample.str.len().mean() <= 40
    if feature_type == "number" and pd.api.types.is_integer_dtype(values.dtype):
        # A saved pandas index or an auto-increment key: n distinct consecutive integers.
        return values.is_unique and int(values.max()) - int(values.min()) + 1 == n
    return False


def _has_two_values(values: pd.Series) -> bool:
    """Exactly two distinct values in the whole column (a rare third one must not be
    missed); the sample settles most columns without hashing every row."""
    if _sample(values).nunique() > 2:
        return False
    return values.nunique() == 2


def _looks_like_text(sample: pd.Series) -> bool:
    tokens = sample.str.count(r"\S+").mean()
    if tokens >= TEXT_MIN_TOKENS:
        return True
    unique_ratio = sample.nunique() / len(sample)
    return unique_ratio > 0.5 and sample.str.len().mean() >= TEXT_MIN_CHARS


def _is_numeric(values: pd.Series) -> bool:
    """Numeric dtype, or an object column whose every value parses as a number."""
    if pd.api.types.is_numeric_dtype(values.dtype):
        return True
    if values.dtype != object:
        return False
    sample = _sample(values)
    is_str = sample.map(type).eq(str)
    return not is_str.any() and pd.to_numeric(sample, errors="coerce").notna().all()


def _sample(values: pd.Series) -> pd.Series:
    if len(values) <= SAMPLE_ROWS:
        return values
    return values.sample(SAMPLE_ROWS, random_state=0)


def _available(columns: list[str], wanted: str) -> str:
    text = "available columns: " + ", ".join(columns)
    close = difflib.get_close_matches(wanted, columns, n=1)
    if close:
        text += f"; did you mean '{close[0]}'?"
    return text
