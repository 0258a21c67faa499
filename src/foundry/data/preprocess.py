"""`Preprocessor`: fitted on the training rows, turns any frame into `Encoded` tensors.

    pre = Preprocessor.fit(train_df, resolved, base_dir)
    train_df = pre.prepare(train_df)            # drop rows under a drop_row policy
    enc = pre.transform(train_df)               # {"numeric": [N, k] f32, "target": [N], ...}
    pre.transform_records([{"age": 39, ...}])   # API records, no frame: == transform, no target
    json.dumps(pre.state_dict())                # everything needed to transform again
    Preprocessor.from_state(state).transform(df) == pre.transform(df)   # bit for bit

Each feature kind has its encoder in `foundry.data.encoders`; this module only packs
their outputs into the tensors described in `foundry.data.schema`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from foundry.config.schema import FeatureConfig
from foundry.data.encoders.binary import BinaryEncoder
from foundry.data.encoders.category import CategoryEncoder
from foundry.data.encoders.image import ImageEncoder, resolve_paths
from foundry.data.encoders.number import NumberEncoder, to_float
from foundry.data.encoders.target import TargetEncoder
from foundry.data.encoders.text import TextEncoder
from foundry.data.infer import ResolvedFeatures
from foundry.data.schema import ImageInput, InputSchema, TaskInfo, TextInput
from foundry.errors import DataError

Encoder = NumberEncoder | BinaryEncoder | CategoryEncoder | TextEncoder | ImageEncoder
ENCODERS: dict[str, type[Encoder]] = {
    "number": NumberEncoder,
    "binary": BinaryEncoder,
    "category": CategoryEncoder,
    "text": TextEncoder,
    "image": ImageEncoder,
}
STATE_FORMAT = 1
"""Bumped when `state_dict()`'s layout changes incompatibly."""


class Preprocessor:
    """Fitted encoders for every input plus the target; see the module docstring."""

    def __init__(
        self,
        resolved: ResolvedFeatures,
        encoders: list[Encoder],
        target: TargetEncoder,
        base_dir: Path | None = None,
    ) -> None:
        self.resolved = resolved
        self.encoders = encoders
        self.target = target
        self.base_dir = base_dir
        self._numeric = [e for e in encoders if isinstance(e, (NumberEncoder, BinaryEncoder))]
        self._categorical = [e for e in encoders if isinstance(e, CategoryEncoder)]
        self._text = [e for e in encoders if isinstance(e, TextEncoder)]
        self._image = [e for e in encoders if isinstance(e, ImageEncoder)]

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(
        cls, df: pd.DataFrame, resolved: ResolvedFeatures, base_dir: Path | None = None
    ) -> Preprocessor:
        """Fit every encoder on `df` (training rows only; drop_row rows are left out).

        `base_dir` resolves relative image paths (the data file's folder).
        """
        _require_columns(df, [*resolved.input_names, resolved.target], "training data")
        df = drop_missing_rows(df, resolved)
        if len(df) == 0:
            raise DataError(
                "no training rows left after dropping rows with missing values (missing: drop_row)"
            )
        encoders = [_fit_encoder(df[f.name], f, base_dir) for f in resolved.inputs]
        target = TargetEncoder.fit(df[resolved.target], resolved.target, resolved.target_type)
        return cls(resolved, encoders, target, base_dir)

    def prepare(self, df: pd.DataFrame) -> pd.DataFrame:
        """Training rows with drop_row policies applied (index reset)."""
        return drop_missing_rows(df, self.resolved)

    # ---------------------------------------------------------------- transform

    def transform(
        self,
        df: pd.DataFrame,
        with_target: bool = True,
        *,
        lazy_images: bool = False,
        image_workers: int | None = None,
    ) -> dict[str, Any]:
        """Frame → `Encoded` (see foundry.data.schema); rows stay in order, none dropped.

        `lazy_images`: image columns become `LazyImages` (paths, decoded per batch by
        `image_workers` DataLoader workers; see foundry.data.lazy_images) instead of
        float32 [N, C, H, W] tensors; their rows are the same values."""
        names = [*self.resolved.input_names, *([self.target.name] if with_target else [])]
        _require_columns(df, names, "data")
        out: dict[str, Any] = self._pack(len(df), lambda enc: enc.transform(df[enc.name]))
        for enc in self._image:
            if lazy_images:
                from foundry.data.lazy_images import LazyImages

                paths = resolve_paths(df[enc.name], enc.name, enc.base_dir)
                out[f"image:{enc.name}"] = LazyImages(enc, paths, workers=image_workers)
            else:
                out[f"image:{enc.name}"] = torch.from_numpy(enc.transform(df[enc.name]))
        if with_target:
            out["target"] = torch.from_numpy(self.target.transform(df[self.target.name]))
        return out

    def transform_records(self, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Records (one dict of input values per row) → `Encoded` without the target:
        the same keys, dtypes, shapes and values, bit for bit, as `transform(frame,
        with_target=False)` on a frame of the same values (`RecordValidator.frame`).

        Values are plain Python ones, as a JSON request carries them after
        `RecordValidator.validate`: numbers (None missing), category / binary keys (or
        numbers, booleans; None missing), text (None missing), and images as file bytes
        where a frame holds paths. Each encoder's `encode_list` works on them directly:
        for a handful of records far cheaper than a frame and pandas / Arrow per column.
        """
        columns = record_columns(records, [e.name for e in self.encoders])
        out = self._pack(len(records), lambda enc: enc.encode_list(columns[enc.name]))
        for enc in self._image:
            out[f"image:{enc.name}"] = torch.from_numpy(enc.encode_list(columns[enc.name]))
        return out

    def transform_arrow(self, batch: pa.RecordBatch) -> dict[str, torch.Tensor]:
        """An Arrow record batch → `transform(batch.to_pandas())`, bit for bit: what the
        streaming DataLoader workers encode (`foundry.data.stream`). Each encoder's
        `transform_arrow` reads the Arrow column itself, with no pandas frame, Series or
        index on the way (those cost more than the encoding); a column of a type it does
        not take is converted alone, as `to_pandas` would convert it. Image inputs do
        not stream from a table."""
        if self._image:
            raise DataError(f"image input '{self._image[0].name}' cannot be streamed from a table")
        names = [*self.resolved.input_names, self.target.name]
        _require_columns(batch.schema, names, "data")

        def encode(enc: Any) -> np.ndarray:
            x = enc.transform_arrow(batch.column(enc.name))
            return x if x is not None else enc.transform(_pandas_column(batch, enc.name))

        out = self._pack(batch.num_rows, encode)
        out["target"] = torch.from_numpy(encode(self.target))
        return out

    def _pack(self, n: int, encode: Callable[[Any], np.ndarray]) -> dict[str, Any]:
        """The number, category and text inputs of `n` rows as `Encoded` tensors,
        `encode(encoder)` giving each input's array."""
        out: dict[str, Any] = {}
        if self._numeric:
            numeric = np.empty((n, len(self._numeric)), dtype=np.float32)  # [N, n_numeric]
            for j, enc in enumerate(self._numeric):
                numeric[:, j] = encode(enc)
            out["numeric"] = torch.from_numpy(numeric)
        if self._categorical:
            codes = np.empty((n, len(self._categorical)), dtype=np.int64)  # [N, k]
            for j, enc in enumerate(self._categorical):
                codes[:, j] = encode(enc)
            out["categorical"] = torch.from_numpy(codes)
        for enc in self._text:
            out[f"text:{enc.name}"] = torch.from_numpy(encode(enc))
        return out

    def decode_labels(self, indices: np.ndarray) -> np.ndarray:
        """Class indices [N] → class labels [N] (str, as in `task.classes`)."""
        return self.target.decode(indices)

    def denormalize(self, values: np.ndarray) -> np.ndarray:
        """Regression outputs in standardised units [N] → original units [N]."""
        return self.target.denormalize(values)

    # ---------------------------------------------------------------- describing

    @property
    def schema(self) -> InputSchema:
        return InputSchema(
            numeric=[e.name for e in self._numeric],
            categorical=[e.name for e in self._categorical],
            cardinalities=[e.cardinality for e in self._categorical],
            text=[TextInput(e.name, e.vocab_size, e.max_length) for e in self._text],
            image=[ImageInput(e.name, e.channels, e.height, e.width) for e in self._image],
        )

    @property
    def image_encoders(self) -> list[ImageEncoder]:
        return list(self._image)

    @property
    def task(self) -> TaskInfo:
        return self.target.info

    # ------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Everything `from_state` needs, as JSON-able values (no pickle)."""
        return {
            "format": STATE_FORMAT,
            "features": self.resolved.to_dict(),
            "encoders": [
                {"kind": f.type, **enc.state()}
                for f, enc in zip(self.resolved.inputs, self.encoders, strict=True)
            ],
            "target": self.target.state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], base_dir: Path | None = None) -> Preprocessor:
        """Rebuild a fitted preprocessor; `transform` then gives identical tensors."""
        if state.get("format") != STATE_FORMAT:
            raise DataError(
                f"preprocessing state format {state.get('format')!r} is not "
                f"supported (expected {STATE_FORMAT})"
            )
        encoders: list[Encoder] = []
        for entry in state["encoders"]:
            d = {k: v for k, v in entry.items() if k != "kind"}
            if entry["kind"] == "image":
                encoders.append(ImageEncoder.from_state(d, base_dir=base_dir))
            else:
                encoders.append(ENCODERS[entry["kind"]].from_state(d))
        return cls(
            ResolvedFeatures.from_dict(state["features"]),
            encoders,
            TargetEncoder.from_state(state["target"]),
            base_dir,
        )


def record_columns(records: list[dict[str, Any]], names: list[str]) -> dict[str, list[Any]]:
    """Records (one dict of input values per row) → each input's values, in row order;
    DataError naming the input a record lacks."""
    try:
        return {name: [r[name] for r in records] for name in names}
    except KeyError as exc:
        raise DataError(f"a record lacks the input {exc} (inputs: {', '.join(names)})") from None


def check_numbers(df: pd.DataFrame, resolved: ResolvedFeatures, source: str) -> None:
    """DataError for a non-numeric or infinite value in a number column (inputs and a
    number target) of `df` as it was read from the file `source`, naming the row by its
    place in that file: 1-based, the header not counted (row 1 is the first data row;
    in a CSV it is on line 2). Run before the split, whose shuffle would otherwise leave
    the encoders only a row's position inside the training split to name."""
    columns = [f.name for f in resolved.inputs if f.type == "number"]
    if resolved.target_type == "number":
        columns.append(resolved.target)
    for name in columns:
        if name in df.columns:
            to_float(
                df[name],
                name,
                row_name=lambda i: (
                    f"row {i + 1} of {source}, counting data rows from 1 without the header"
                ),
            )


def drop_missing_rows(df: pd.DataFrame, resolved: ResolvedFeatures) -> pd.DataFrame:
    """Rows of `df` without missing values in drop_row columns (index reset)."""
    columns = [f.name for f in resolved.inputs if _drops_rows(f)]
    if not columns:
        return df.reset_index(drop=True)
    missing = np.zeros(len(df), dtype=bool)
    for name in columns:
        missing |= is_missing(df[name])
    return df.loc[~missing].reset_index(drop=True)


def is_missing(col: pd.Series) -> np.ndarray:
    """bool [N]: NaN / None, or a blank string in a text-typed column."""
    missing = col.isna().to_numpy()
    if not pd.api.types.is_numeric_dtype(col.dtype):
        missing = missing | col.astype(str).str.strip().eq("").to_numpy(dtype=bool, na_value=False)
    return missing


def _drops_rows(f: FeatureConfig) -> bool:
    if f.type == "number":
        return f.number.missing == "drop_row"
    if f.type in ("binary", "category"):
        return f.category.missing == "drop_row"
    return False


def _fit_encoder(col: pd.Series, f: FeatureConfig, base_dir: Path | None) -> Encoder:
    if f.type == "number":
        return NumberEncoder.fit(col, f.name, f.number)
    if f.type == "binary":
        return BinaryEncoder.fit(col, f.name, f.category)
    if f.type == "category":
        return CategoryEncoder.fit(col, f.name, f.category)
    if f.type == "text":
        return TextEncoder.fit(col, f.name, f.text)
    if f.type == "image":
        return ImageEncoder.fit(col, f.name, f.image, base_dir=base_dir)
    raise DataError(f"input '{f.name}' has no type; run infer_features first")


def _require_columns(df: pd.DataFrame | pa.Schema, names: list[str], what: str) -> None:
    have = df.names if isinstance(df, pa.Schema) else df.columns
    missing = [n for n in names if n not in have]
    if missing:
        raise DataError(f"{what} is missing column(s) {missing}; it has {[str(c) for c in have]}")


def _pandas_column(batch: pa.RecordBatch, name: str) -> pd.Series:
    """One column of `batch` as `batch.to_pandas()` would hold it (the schema's pandas
    metadata, e.g. a nullable integer dtype, applies to it as to the whole batch)."""
    return batch.select([name]).to_pandas()[name]
