"""Writing result tables in the format their file name asks for."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import foundry.crypto as crypto
from foundry.errors import DataError

_WRITERS = {
    ".csv": lambda df, p: df.to_csv(p, index=False),
    ".parquet": lambda df, p: df.to_parquet(p, index=False),
    ".jsonl": lambda df, p: df.to_json(p, orient="records", lines=True),
}


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write `df` as CSV, Parquet or JSONL, chosen by the extension; atomically."""
    path = Path(path)
    writer = _WRITERS.get(path.suffix.lower())
    if writer is None:
        raise DataError(
            f"cannot write {path}: unknown extension '{path.suffix}' "
            f"(use one of {', '.join(_WRITERS)})"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    writer(df, tmp)
    crypto.seal_file(tmp)  # rows of customer data: encrypted when a key is set
    tmp.replace(path)
    return path
