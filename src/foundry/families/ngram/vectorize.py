"""One text column as TF-IDF n-gram columns: fitted on the training rows, rebuilt from
JSON (vocabulary, settings) and an idf vector, never from a pickled scikit-learn object.

    grams = TextNGrams.fit("description", texts, kind="word", settings)
    grams.transform(texts)          # scipy CSR float64 [N, n_columns], rows L2-normalised
    TextNGrams.from_state(grams.state(), grams.idf).transform(texts)   # the same, bit for bit
    grams.grams_of(text)            # {column: [n-gram, ...]}: what explanations name

Counting is scikit-learn's (`CountVectorizer` over a given vocabulary, or
`HashingVectorizer`: both documented to need no fitting then); the TF-IDF weighting is
the few lines below, TfidfVectorizer's formulas (smooth idf, sublinear tf, L2 norm), so
the state is a vocabulary and an idf vector and nothing else.

Word n-grams split on every character that is not a letter or a digit (underscore too):
`python3-foo` → `python3 foo`, `src/a_b.py` → `src a b py`, `https://x.org/y` → `https x
org y`, so the parts of a structured name are words the model can share across rows
(scikit-learn's default pattern drops one-character words and keeps `a_b` whole).
Character n-grams are `char_wb`: inside whitespace-separated words, padded with a space,
so they see `-perl`, `lib`, `.py` as they are written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from foundry.errors import DataError
from foundry.families.ngram.chargrams import CharCounter

__all__ = ["TOKEN_PATTERN", "TextNGrams", "texts_of"]

TOKEN_PATTERN = r"(?u)[^\W_]+"
"""A word: a run of letters and digits (every other character separates words)."""

Kind = Literal["word", "char"]


def texts_of(values: Sequence[Any] | pd.Series, column: str) -> list[str]:
    """A text column's values as strings: missing (None, NaN) → "", anything that is not
    a string → DataError naming the column and the first such row."""
    out: list[str] = []
    items = values.tolist() if isinstance(values, pd.Series) else list(values)
    index = values.index if isinstance(values, pd.Series) else range(len(items))
    for position, value in enumerate(items):
        if isinstance(value, str):
            out.append(value)
        elif value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            out.append("")
        else:
            raise DataError(
                f"text column '{column}' has a {type(value).__name__} value {value!r} "
                f"(row {index[position]}); text inputs take strings (or null when missing)",
                hint=f"convert '{column}' to strings, or declare it as a number or "
                "category input (features.inputs)",
            )
    return out


@dataclass
class TextNGrams:
    """The n-grams of one kind (word or char) of one text input, TF-IDF weighted."""

    column: str
    kind: Kind
    ngram_range: tuple[int, int]
    lowercase: bool
    sublinear_tf: bool
    vocabulary: list[str] | None
    """Terms in column order; None in hashing mode."""
    n_columns: int
    idf: np.ndarray
    """float64 [n_columns]: ln((1 + rows) / (1 + rows with the n-gram)) + 1."""
    _built: Any = field(default=None, repr=False, compare=False)
    """The counter, built once: a CountVectorizer indexes its vocabulary on first use
    (~0.1 s for 300k terms), which a served batch should not pay each time."""

    @property
    def name(self) -> str:
        """The input's name, as every encoder has one (the API describes inputs by it)."""
        return self.column

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(
        cls,
        column: str,
        texts: list[str],
        *,
        kind: Kind,
        ngram_range: tuple[int, int],
        lowercase: bool,
        sublinear_tf: bool,
        min_df: int,
        max_features: int | None,
        hash_features: int | None,
    ) -> tuple[TextNGrams, sp.csr_matrix]:
        """Fit on the training texts; returns the fitted n-grams and the training rows'
        TF-IDF matrix (counted once, not twice)."""
        from sklearn.feature_extraction.text import CountVectorizer

        common = {"ngram_range": tuple(ngram_range), "lowercase": lowercase}
        vocabulary: list[str] | None
        try:
            if hash_features is not None:
                vocabulary, n_columns = None, hash_features
                counts = _counter(kind, common, None, n_columns).transform(texts)
            elif kind == "char":
                _, vocabulary, counts = CharCounter.fit(
                    texts,
                    ngram_range,
                    lowercase,
                    min_df=min(min_df, max(1, len(texts))),
                    max_features=max_features,
                )
                n_columns = len(vocabulary)
            else:
                counter = CountVectorizer(
                    **WORDS,
                    **common,
                    min_df=min(min_df, max(1, len(texts))),
                    max_features=max_features,
                    dtype=np.float64,
                )
                counts = counter.fit_transform(texts)
                vocabulary = [str(t) for t in counter.get_feature_names_out()]
                n_columns = len(vocabulary)
        except ValueError as exc:  # "empty vocabulary" / "no terms remain"
            raise DataError(
                f"text column '{column}' gives no {kind} n-grams to learn from ({exc})",
                hint="check that the column holds text; a lower model.min_df keeps rarer n-grams",
            ) from None
        counts = counts.tocsr()
        rows_with = np.bincount(counts.indices, minlength=n_columns).astype(np.float64)
        idf = np.log((1.0 + len(texts)) / (1.0 + rows_with)) + 1.0
        grams = cls(
            column, kind, tuple(ngram_range), lowercase, sublinear_tf, vocabulary, n_columns, idf
        )
        grams.idf = grams.idf.astype(np.float32).astype(np.float64)  # as stored
        return grams, grams._weigh(counts)

    # ---------------------------------------------------------------- transform

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        """Texts [N] → TF-IDF float64 CSR [N, n_columns], each non-empty row of unit L2
        norm; n-grams outside the vocabulary are ignored."""
        return self._weigh(self._counter().transform(texts).tocsr())

    def _weigh(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        from sklearn.preprocessing import normalize

        x = counts.astype(np.float64)
        x.sort_indices()
        if self.sublinear_tf:
            np.log(x.data, out=x.data)
            x.data += 1.0
        x.data *= self.idf[x.indices]
        return normalize(x, norm="l2", copy=False)

    def _counter(self) -> Any:
        if self._built is None:
            common = {"ngram_range": self.ngram_range, "lowercase": self.lowercase}
            self._built = _counter(self.kind, common, self.vocabulary, self.n_columns)
        return self._built

    def grams_of(self, text: str) -> dict[int, list[str]]:
        """The n-grams of one text by the column they count in (several in hashing mode
        when they collide): what an explanation names a column by."""
        counter = self._counter()
        if isinstance(counter, CharCounter):
            return counter.grams_of(text)
        grams = sorted(set(counter.build_analyzer()(text)))
        if self.vocabulary is not None:
            index = counter.vocabulary_  # term → column, as `_counter` indexed it
            out: dict[int, list[str]] = {}
            for g in grams:
                if g in index:
                    out.setdefault(index[g], []).append(g)
            return out
        # one "document" per n-gram: the hasher gives each its column
        single = _counter(
            "word",
            {"ngram_range": (1, 1), "lowercase": False},
            None,
            self.n_columns,
            analyzer=lambda g: [g],
        )
        columns = single.transform(grams).tocsr().indices if grams else []
        out = {}
        for g, j in zip(grams, columns, strict=True):
            out.setdefault(int(j), []).append(g)
        return out

    # ------------------------------------------------------------------- state

    def state(self) -> dict[str, Any]:
        """JSON settings and vocabulary; the idf vector is stored apart (safetensors)."""
        return {
            "column": self.column,
            "kind": self.kind,
            "ngram_range": list(self.ngram_range),
            "lowercase": self.lowercase,
            "sublinear_tf": self.sublinear_tf,
            "vocabulary": self.vocabulary,
            "n_columns": self.n_columns,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], idf: np.ndarray) -> TextNGrams:
        n_columns = int(state["n_columns"])
        vocabulary = state["vocabulary"]
        if vocabulary is not None and len(vocabulary) != n_columns:
            raise ValueError(f"{len(vocabulary)} vocabulary terms for {n_columns} columns")
        if idf.shape != (n_columns,):
            raise ValueError(f"idf of shape {tuple(idf.shape)} for {n_columns} columns")
        return cls(
            str(state["column"]),
            state["kind"],
            tuple(state["ngram_range"]),
            bool(state["lowercase"]),
            bool(state["sublinear_tf"]),
            None if vocabulary is None else [str(t) for t in vocabulary],
            n_columns,
            np.asarray(idf, dtype=np.float64),
        )


WORDS = {"analyzer": "word", "token_pattern": TOKEN_PATTERN}


def _counter(
    kind: Kind,
    common: dict[str, Any],
    vocabulary: list[str] | None,
    n_columns: int,
    analyzer: Any = None,
) -> Any:
    """What counts `kind` n-grams into columns: a `CharCounter`, scikit-learn's
    CountVectorizer over `vocabulary` or, without one, its HashingVectorizer."""
    from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer

    if kind == "char" and analyzer is None:
        return CharCounter(common["ngram_range"], common["lowercase"], vocabulary, n_columns)
    if vocabulary is not None:
        counter = CountVectorizer(**WORDS, **common, vocabulary=vocabulary, dtype=np.float64)
        counter.transform([""])  # indexes the vocabulary now, not in a served request
        return counter
    # counts, not signed or normalised: the TF-IDF weighting is ours, as for a vocabulary
    return HashingVectorizer(
        **(WORDS if analyzer is None else {"analyzer": analyzer}),
        **common,
        n_features=n_columns,
        alternate_sign=False,
        norm=None,
        dtype=np.float64,
    )
