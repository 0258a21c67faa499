"""Table columns as one sparse matrix for a linear model.

    inputs = NGramInputs.fit(train_df, resolved, config)    # + the training matrix
    inputs.transform(df)          # {"features": SparseRows [N, F], "target": [N]}
    inputs.transform_records(rs)  # the same matrix from API records, bit for bit

Each input becomes a block of columns, in `features.inputs` order:

    text       word n-grams, then character n-grams, TF-IDF (`vectorize.TextNGrams`)
    number     the shared `NumberEncoder`'s standardised value (missing: its fill)
    binary     the shared `BinaryEncoder`'s 0 / 1 (0.5 unseen or missing)
    category   one-hot over the shared `CategoryEncoder`'s codes (0: unseen or rare)

Everything but text goes through the shared `Preprocessor` (fitted on the non-text
inputs and the target), so the target's classes or mean / std, the missing-value rules
and the JSON state are the ones every table model has. Text columns skip its tokenizer:
their n-grams are this family's own state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from foundry.data.encoders.category import CategoryEncoder
from foundry.data.infer import ResolvedFeatures
from foundry.data.preprocess import Preprocessor, record_columns
from foundry.errors import ConfigError, DataError
from foundry.families.ngram.vectorize import TextNGrams, texts_of
from foundry.families.table import PreprocessorView

__all__ = ["KEY", "Block", "NGramInputs", "SparseRows", "check_inputs"]

KEY = "features"
"""The one encoded input: a `SparseRows` [N, F]."""


def check_inputs(resolved: ResolvedFeatures) -> None:
    """ConfigError naming image inputs (a linear model over n-grams cannot read pixels)."""
    images = [f.name for f in resolved.inputs if f.type == "image"]
    if images:
        raise ConfigError(
            f"model type ngram takes text, number, binary and category inputs, not the "
            f"image input(s) {', '.join(images)} (features.inputs)",
            hint="exclude those columns (features.exclude) or pick model type cnn",
        )


class SparseRows:
    """A scipy CSR matrix [N, F] in the encoded-inputs dict: `run_model` moves inputs to
    the model's device (`.to`, a no-op: this model runs on the CPU) and slices rows."""

    def __init__(self, matrix: sp.csr_matrix) -> None:
        self.matrix = matrix

    def to(self, device: Any) -> SparseRows:
        return self

    def __getitem__(self, rows: slice) -> SparseRows:
        return SparseRows(self.matrix[rows])

    def __len__(self) -> int:
        return self.matrix.shape[0]


@dataclass(frozen=True)
class Block:
    """Columns [start, stop) of the matrix come from input `name`."""

    name: str
    kind: str
    """word, char, number (number and binary inputs), category."""
    start: int
    stop: int


class NGramInputs(PreprocessorView):
    """The fitted shared `Preprocessor` (non-text inputs, target) plus each text input's
    n-grams; answers what `Predictor`, the API and the evaluation ask of a preprocessor."""

    def __init__(
        self, resolved: ResolvedFeatures, base: Preprocessor, texts: list[TextNGrams]
    ) -> None:
        check_inputs(resolved)
        self.resolved = resolved
        self.base = base
        self.texts = texts
        by_name = {e.name: e for e in base.encoders}
        grams_of: dict[str, list[TextNGrams]] = {}
        for grams in texts:
            grams_of.setdefault(grams.column, []).append(grams)
        # Every input in `features.inputs` order: the API describes inputs from these.
        self._inputs: list[tuple[Any, Any]] = []
        blocks, start = [], 0
        for f in resolved.inputs:
            if f.type == "text":
                parts = grams_of.get(f.name, [])
                self._inputs.append((f, parts))
                for grams in parts:
                    blocks.append(Block(f.name, grams.kind, start, start + grams.n_columns))
                    start += grams.n_columns
            else:
                enc = by_name[f.name]
                width = enc.cardinality if isinstance(enc, CategoryEncoder) else 1
                kind = "category" if isinstance(enc, CategoryEncoder) else "number"
                self._inputs.append((f, enc))
                blocks.append(Block(f.name, kind, start, start + width))
                start += width
        self.blocks = blocks
        self.n_columns = start

    @classmethod
    def fit(
        cls, df: pd.DataFrame, resolved: ResolvedFeatures, model: Any
    ) -> tuple[NGramInputs, dict[str, Any]]:
        """Fit on the training rows (`model`: the `NGramConfig`); returns the inputs and
        the training rows encoded (n-grams counted once)."""
        check_inputs(resolved)
        others = ResolvedFeatures(
            [f for f in resolved.inputs if f.type != "text"],
            resolved.target,
            resolved.target_type,
        )
        base = Preprocessor.fit(df, others)
        df = base.prepare(df)
        fitted: list[TextNGrams] = []
        matrices: dict[int, sp.csr_matrix] = {}
        for f in resolved.inputs:
            if f.type != "text":
                continue
            texts = texts_of(_column(df, f.name, "training data"), f.name)
            for kind, ngrams in (("word", model.word_ngrams), ("char", model.char_ngrams)):
                if ngrams is None:
                    continue
                grams, x = TextNGrams.fit(
                    f.name,
                    texts,
                    kind=kind,
                    ngram_range=ngrams,
                    lowercase=model.lowercase,
                    sublinear_tf=True,
                    min_df=model.min_df,
                    max_features=model.max_features,
                    hash_features=model.hash_features,
                )
                matrices[id(grams)] = x
                fitted.append(grams)
        inputs = cls(resolved, base, fitted)
        encoded = inputs._encode(df, lambda grams, _: matrices[id(grams)])
        encoded["target"] = torch.from_numpy(base.target.transform(df[resolved.target]))
        return inputs, encoded

    # What callers read from a preprocessor, delegated (the rest: `PreprocessorView`).
    @property
    def encoders(self) -> list[Any]:
        """One per input, in order: the shared encoder, or a text input's n-grams."""
        return [enc for _, enc in self._inputs if not isinstance(enc, list)] + self.texts

    # -------------------------------------------------------------- the matrix

    def transform(self, df: pd.DataFrame, with_target: bool = True) -> dict[str, Any]:
        """Frame → {"features": SparseRows [N, F]} (+ "target", as `Preprocessor`)."""
        names = [*self.resolved.input_names, *([self.target.name] if with_target else [])]
        missing = [n for n in names if n not in df.columns]
        if missing:
            raise DataError(
                f"data is missing column(s) {missing}; it has {[str(c) for c in df.columns]}"
            )
        out = self._encode(df, lambda grams, texts: grams.transform(texts))
        if with_target:
            out["target"] = torch.from_numpy(self.target.transform(df[self.target.name]))
        return out

    def transform_records(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """API records → the matrix `transform` gives for a frame of the same values."""
        columns = record_columns(records, self.resolved.input_names)
        blocks = []
        for f, enc in self._inputs:
            values = columns[f.name]
            if isinstance(enc, list):
                texts = texts_of(values, f.name)
                blocks.extend(grams.transform(texts) for grams in enc)
            else:
                blocks.append(self._dense(enc, np.asarray(enc.encode_list(values))))
        return {KEY: SparseRows(_stack(blocks, len(records)))}

    def _encode(self, df: pd.DataFrame, text_matrix: Any) -> dict[str, Any]:
        blocks = []
        for f, enc in self._inputs:
            if isinstance(enc, list):
                texts = texts_of(df[f.name], f.name) if enc else []
                blocks.extend(text_matrix(grams, texts) for grams in enc)
            else:
                blocks.append(self._dense(enc, np.asarray(enc.transform(df[f.name]))))
        return {KEY: SparseRows(_stack(blocks, len(df)))}

    @staticmethod
    def _dense(enc: Any, values: np.ndarray) -> sp.csr_matrix:
        """A number / binary value as one column, a category code as one-hot columns."""
        n = len(values)
        if isinstance(enc, CategoryEncoder):
            codes = values.astype(np.int64)
            return sp.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, enc.cardinality))
        return sp.csr_matrix(values.astype(np.float64).reshape(n, 1))

    # ------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """JSON state (the shared preprocessing, the n-gram settings and vocabularies);
        the idf vectors are `idf_tensors()`."""
        return {
            "features": self.resolved.to_dict(),
            "preprocessing": self.base.state_dict(),
            "text": [grams.state() for grams in self.texts],
        }

    def idf_tensors(self) -> dict[str, torch.Tensor]:
        return {
            f"idf.{i}": torch.from_numpy(g.idf.astype(np.float32)) for i, g in enumerate(self.texts)
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], weights: dict[str, torch.Tensor]) -> NGramInputs:
        texts = [
            TextNGrams.from_state(entry, weights[f"idf.{i}"].double().numpy())
            for i, entry in enumerate(state["text"])
        ]
        return cls(
            ResolvedFeatures.from_dict(state["features"]),
            Preprocessor.from_state(state["preprocessing"]),
            texts,
        )


def _column(df: pd.DataFrame, name: str, what: str) -> pd.Series:
    if name not in df.columns:
        raise DataError(f"{what} is missing column '{name}'")
    return df[name]


def _stack(blocks: list[sp.csr_matrix], n: int) -> sp.csr_matrix:
    if not blocks:
        return sp.csr_matrix((n, 0), dtype=np.float64)
    return sp.hstack(blocks, format="csr", dtype=np.float64)
