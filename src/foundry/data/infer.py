"""Deciding what each column is (number, binary, category, text, image), which columns
are opaque identifiers (`identifier_reason`: skipped from inputs, and dropped by the PII
scrubber and `foundry init` by the same rule) and what the task is.

All checks run as pandas column operations on a sample of at most 10k non-missing values,
so inference costs the same on 1k rows as on 10M.
"""

from __future__ import annotations

import difflib
import math
import re
import warnings
from collections import Counter
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
"""Strings this unique are no categories (every value would be unseen at prediction):
they are text when they have structure, identifiers when opaque (`identifier_reason`)."""
ID_MIN_ROWS = 20
"""Below this many rows every category looks unique; do not call anything an ID."""
OPAQUE_SHARE = 0.9
"""UUIDs / hex hashes: this share of a column's values must be one."""
NUMBERED_MAX_FORMS = 20
"""Values that differ only in their digits (`CR-00017-B`, `user_912`) are numbered ids
when, digits set aside, at most this many forms (and a tenth of the rows) remain."""
RANDOM_MIN_BITS = 5.0
"""Near-random strings have at least this many bits of entropy per character (Miller-
Madow corrected)... Measured by `python benchmarks/init_rules.py identifiers` (min-max of
5 draws of 20 to 1,000 values): random base64 6.0, random alphanumerics 5.1-5.2; Debian
package names 4.5-4.7, file paths 4.7-4.8, URLs 4.6-4.8, Python module paths 4.3-4.4,
English words 4.1-4.3 (uuid4 4.05 and sha1 4.0 have rules of their own)."""
RANDOM_MAX_SHARED = 0.2
"""...and under this share of values with a sub-token of 3+ characters (`python`, `perl`,
`lib`, `123`) that another value holds too. Measured alike: random base64 and
alphanumerics 0-0.10; Debian package names 0.20-0.50 at 20 values, 0.73-0.77 at 1,000;
module paths, URLs, file paths, manual page names 0.7-1.0; English words 0 (their
entropy keeps them). Random lower-case letters (4.7 bits, shared 0) stay text: entropy
cannot tell them from package names."""
TOKEN_SAMPLE = 1_000
"""Values the sub-token rule reads: random strings share more 3-character runs the more
values are compared (base64 of 24 characters: 0.41 at 5,000), structured ones plateau."""
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
    text: strings averaging >= 4 tokens, mostly-unique long strings, or near-unique
    strings (`python3-foo`, `libbar-perl`: their sub-tokens carry what a category of
    unseen values cannot; opaque ones are dropped by `identifier_reason`); else category.
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
    if _looks_like_text(sample) or (
        len(values) >= ID_MIN_ROWS and _unique_ratio(sample) > ID_UNIQUE_RATIO
    ):
        return "text"
    return "category"


def identifier_reason(col: pd.Series) -> str | None:
    """Why `col` is an opaque identifier (a reason naming the rule, never a value), or None.

    Only integer row counters and near-unique short strings qualify, and of those strings
    only opaque ones: UUIDs, hex hashes, numbered ids (`CR-00017-B`: the values differ
    only in their digits), near-random strings (high entropy per character, no sub-token
    shared between values). Near-unique strings with structure (package names, product
    codes, paths, URLs) are kept: `infer_type` makes them text."""
    values = col.dropna()
    n = len(values)
    if n < ID_MIN_ROWS or pd.api.types.is_bool_dtype(values.dtype):
        return None
    if _is_numeric(values):
        # A saved pandas index or an auto-increment key: n distinct consecutive integers.
        counter = (
            pd.api.types.is_integer_dtype(values.dtype)
            and values.is_unique
            and int(values.max()) - int(values.min()) + 1 == n
        )
        return f"row numbers: {n} distinct consecutive integers" if counter else None
    sample = _sample(values).astype(str)
    if _unique_ratio(sample) <= ID_UNIQUE_RATIO:
        return None
    if sample.str.count(r"\S+").mean() >= TEXT_MIN_TOKENS:
        return None  # free text
    if sample.str.lower().str.endswith(IMAGE_EXTENSIONS).mean() >= 0.9:
        return None  # image paths
    share = sample.str.fullmatch(_UUID).mean()
    if share >= OPAQUE_SHARE:
        return f"UUIDs: {_pct(share)} of values"
    share = sample.str.fullmatch(_HEX).mean()
    if share >= OPAQUE_SHARE:
        return f"hex hashes: {_pct(share)} of values are hex strings of 8+ digits"
    forms = sample.str.replace(r"\d+", "0", regex=True).nunique()
    if forms <= min(NUMBERED_MAX_FORMS, len(sample) // 10):
        return f"numbered ids: the values differ only in their digits, {forms} form(s) without them"
    head = sample.iloc[:TOKEN_SAMPLE]
    bits, shared = _char_entropy(head), _shared_token_share(head)
    if bits >= RANDOM_MIN_BITS and shared < RANDOM_MAX_SHARED:
        return (
            f"near-random strings: {bits:.1f} bits per character, {_pct(shared)} of values "
            "share a sub-token with another"
        )
    return None


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
        reason = identifier_reason(col)
        if reason is not None:
            warnings.warn(
                f"column '{name}' looks like an identifier ({reason}); skipped. List it in "
                "features.inputs to use it anyway",
                stacklevel=3,
            )
            continue
        inputs.append(FeatureConfig(name=str(name), type=infer_type(col)))
    return inputs


_UUID = re.compile(r"\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?", re.I)
_HEX = re.compile(r"(0x)?[0-9a-f]{8,}", re.I)
_SUBTOKEN = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
"""Sub-tokens: words split on punctuation, case changes and digit runs (`libFoo2-perl`
-> lib, Foo, 2, perl)."""


def _char_entropy(strings: pd.Series) -> float:
    """Bits per character over all of `strings`, with the Miller-Madow correction (a few
    hundred characters under-read a 64-letter alphabet by ~0.2 bits otherwise)."""
    counts = Counter("".join(strings))
    total = sum(counts.values())
    if total == 0:
        return 0.0
    bits = -sum(c / total * math.log2(c / total) for c in counts.values())
    return bits + (len(counts) - 1) / (2 * total * math.log(2))


def _shared_token_share(strings: pd.Series) -> float:
    """Share of values holding a sub-token of 3+ characters that another value holds."""
    tokens = [{t.lower() for t in _SUBTOKEN.findall(s) if len(t) >= 3} for s in strings]
    values_with = Counter(t for ts in tokens for t in ts)
    shared = sum(any(values_with[t] >= 2 for t in ts) for ts in tokens)
    return shared / max(len(tokens), 1)


def _unique_ratio(sample: pd.Series) -> float:
    return sample.nunique() / len(sample)


def _pct(share: float) -> str:
    # floor, so 99.6% does not read as "100% of values"
    return f"{int(share * 100)}%"


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
