"""Number features: fill missing values, then standardise / min-max scale.

Missing means NaN, None or an empty string; infinities are refused (they would turn
every statistic and every weight they touch into NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from foundry.config.schema import NumberPreprocessing
from foundry.data.encoders.keys import first_row
from foundry.errors import DataError

RowName = Callable[[int], str]
"""Position in a column → how an error names that row ("row 7 of d.csv (...)")."""


def to_float(col: pd.Series, name: str, *, row_name: RowName | None = None) -> np.ndarray:
    """Column → float64 [N] with NaN for missing; DataError on text or infinities.

    `row_name`: how the error names the first bad row, from its position in `col`;
    default "row <index label>" (a split's or a request's own numbering)."""
    if row_name is None:
        row_name = _label_namer(col.index)
    if pd.api.types.is_numeric_dtype(col.dtype):
        x = col.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        parsed = pd.to_numeric(col, errors="coerce")
        # Blank strings are missing values, not malformed numbers.
        present = col.notna() & col.astype(str).str.strip().ne("")
        bad = parsed.isna() & present
        if bad.any():
            raise DataError(
                f"number column '{name}' has a non-numeric value "
                f"{col[bad].iloc[0]!r} ({row_name(int(np.argmax(bad.to_numpy())))})"
            )
        x = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
    refuse_infinities(x, name, col.index, row_name=row_name)
    return x


def arrow_floats(arr: pa.Array) -> np.ndarray | None:
    """An Arrow column of numbers → float64 [N] with NaN for missing, as `to_float` makes
    of `arr.to_pandas()` (a view of the Arrow buffer for float64 with no nulls: never
    write into it); None for other types, which go through pandas. Infinities are left
    for the caller, which refuses them."""
    kind = arr.type
    if not (pa.types.is_integer(kind) or kind in (pa.float32(), pa.float64())):
        return None
    if kind != pa.float64():  # the conversion pandas makes (ints rounded to nearest)
        arr = pc.cast(arr, pa.float64(), safe=False)
    return arr.to_numpy(zero_copy_only=False)


def refuse_infinities(
    x: np.ndarray,
    name: str,
    index: pd.Index | Sequence[object],
    *,
    row_name: RowName | None = None,
) -> None:
    """DataError naming the first row of `x` (float64 [N]) that holds ±inf."""
    inf = np.isinf(x)
    if inf.any():
        where = (row_name or _label_namer(index))(int(np.argmax(inf)))
        raise DataError(
            f"number column '{name}' has {int(inf.sum())} infinite value(s) (first at "
            f"{where}); replace them or leave them empty (missing)"
        )


def _label_namer(index: pd.Index | Sequence[object]) -> RowName:
    return lambda position: f"row {index[position]}"


@dataclass(frozen=True)
class NumberEncoder:
    """(x filled - center) / scale, as float32."""

    name: str
    missing: str
    fill: float
    center: float
    scale: float

    @classmethod
    def fit(cls, col: pd.Series, name: str, config: NumberPreprocessing) -> NumberEncoder:
        x = to_float(col, name)
        observed = x[~np.isnan(x)]
        if observed.size == 0:
            raise DataError(f"number column '{name}' has no values in the training rows")
        median = float(np.median(observed)) if config.missing == "median" else None
        return cls.from_stats(
            name,
            config,
            mean=float(observed.mean()),
            std=float(observed.std()),
            low=float(observed.min()),
            high=float(observed.max()),
            median=median,
        )

    @classmethod
    def from_stats(
        cls,
        name: str,
        config: NumberPreprocessing,
        *,
        mean: float,
        std: float,
        low: float,
        high: float,
        median: float | None,
    ) -> NumberEncoder:
        """The encoder from the training values' statistics (population std; `median`
        needed only under `missing: median`): what `fit` computes in memory and
        `foundry.data.stream_fit` in one streaming pass."""
        # drop_row / error never fill training rows; at prediction time the mean is the
        # least surprising value for a row that cannot be dropped.
        fill = {"median": median, "zero": 0.0}.get(config.missing, mean)
        center, scale = 0.0, 1.0
        if config.normalization == "standard":
            center, scale = mean, std
        elif config.normalization == "minmax":
            center, scale = low, high - low
        if not scale > 0:  # constant column: keep it (as zeros), do not divide by 0
            scale = 1.0
        return cls(name=name, missing=config.missing, fill=float(fill), center=center, scale=scale)  # type: ignore[arg-type]

    def transform(self, col: pd.Series) -> np.ndarray:
        """Column [N] → float32 [N], no NaN."""
        return self._scaled(to_float(col, self.name), col.index)

    def transform_arrow(self, arr: pa.Array) -> np.ndarray | None:
        """Arrow column [N] → `transform(arr.to_pandas())`, bit for bit, without pandas;
        None for a type `arrow_floats` does not take."""
        x = arrow_floats(arr)
        return None if x is None else self._scaled(x, range(len(x)))

    def encode_list(self, values: Sequence[float | int | None]) -> np.ndarray:
        """Python numbers [N] (None or NaN: missing) → float32 [N], equal bit for bit to
        `transform` on a column of the same values."""
        # Exactly the float64 column `RecordValidator.frame` builds (None → NaN, ints
        # rounded to the nearest float64), which to_float passes through unchanged.
        try:
            x = np.array(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"number column '{self.name}' has a non-numeric value ({exc})"
            ) from None
        return self._scaled(x, range(len(x)))

    def _scaled(self, x: np.ndarray, index: pd.Index | Sequence[object]) -> np.ndarray:
        """float64 [N] with NaN for missing → float32 [N]: fill, then (x - center) / scale
        in float64, rounded to float32 once at the end."""
        if not np.isfinite(x).all():  # one check on the common path (a few µs per call)
            x = self._filled(x, index)
        return ((x - self.center) / self.scale).astype(np.float32)

    def _filled(self, x: np.ndarray, index: pd.Index | Sequence[object]) -> np.ndarray:
        """`x` with missing values (NaN) replaced by `fill`; DataError on infinities, or on
        missing values under the `error` policy."""
        refuse_infinities(x, self.name, index)
        missing = np.isnan(x)
        if self.missing == "error":
            raise DataError(
                f"number column '{self.name}' has {int(missing.sum())} missing value(s) "
                f"(first at row {first_row(missing, index)}) and its missing policy is 'error'"
            )
        return np.where(missing, self.fill, x)  # to_numpy may be a view: never write

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> NumberEncoder:
        return cls(**d)
