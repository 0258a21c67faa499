"""Content fingerprint of a training frame, stored with a model to tell what it saw."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from foundry.errors import DataError

_CHUNK = 1 << 20  # read image files 1 MiB at a time


def fingerprint(
    df: pd.DataFrame, image_columns: Sequence[str] = (), base_dir: Path | None = None
) -> str:
    """sha256 hex digest of `df`'s column names and values (row order matters).

    Values are hashed with pandas' vectorised `hash_pandas_object` (64 bits per row);
    for each column in `image_columns` the bytes of every referenced file are hashed too,
    so replacing an image changes the fingerprint even when its path does not. Relative
    image paths are resolved against `base_dir` (default: the working directory).
    """
    h = hashlib.sha256()
    h.update(json.dumps([str(c) for c in df.columns]).encode())
    h.update(str(len(df)).encode())
    h.update(_row_hashes(df).tobytes())
    for column in image_columns:
        h.update(f"\0image:{column}\0".encode())
        for path in df[column].astype(str):
            full = Path(path) if base_dir is None else Path(base_dir) / path
            h.update(_file_digest(full))
    return h.hexdigest()


def _row_hashes(df: pd.DataFrame) -> np.ndarray:
    try:
        return pd.util.hash_pandas_object(df, index=False).to_numpy()
    except TypeError:
        # Unhashable cells (lists or dicts from JSONL): hash their text instead.
        return pd.util.hash_pandas_object(df.astype(str), index=False).to_numpy()


def file_fingerprint(paths: list[Path | None]) -> str:
    """sha256 of data files' names and bytes, in order, skipping None (text corpora and
    instruction files, which language models read whole rather than as a frame)."""
    h = hashlib.sha256()
    for path in paths:
        if path is None:
            continue
        h.update(path.name.encode())
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def _file_digest(path: Path) -> bytes:
    """sha256 of one file's bytes (a fixed 32 bytes per image keeps file boundaries)."""
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise DataError(f"cannot read image file {path}: {e.strerror or e}") from e
    return h.digest()
