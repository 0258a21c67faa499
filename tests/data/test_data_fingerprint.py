from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from foundry.data import fingerprint
from foundry.errors import DataError


def test_stable_and_sensitive_to_values_and_names() -> None:
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    fp = fingerprint(df)
    assert len(fp) == 64 and fp == fingerprint(df.copy())
    changed = df.copy()
    changed.loc[1, "b"] = "q"
    assert fingerprint(changed) != fp
    assert fingerprint(df.rename(columns={"a": "c"})) != fp
    assert fingerprint(df.iloc[::-1]) != fp  # row order is part of the content


def test_image_bytes_are_hashed(tmp_path: Path, png) -> None:
    path = png(tmp_path / "a.png", (1, 2, 3))
    df = pd.DataFrame({"image": [str(path)], "label": ["x"]})
    fp = fingerprint(df, image_columns=["image"])
    assert fp == fingerprint(df, image_columns=["image"]) != fingerprint(df)
    png(path, (9, 9, 9))  # same path, new pixels
    assert fingerprint(df, image_columns=["image"]) != fp
    rel = pd.DataFrame({"image": ["a.png"], "label": ["x"]})
    assert fingerprint(rel, ["image"], base_dir=tmp_path) != fingerprint(rel)
    with pytest.raises(DataError, match="cannot read image file .*a.png"):
        fingerprint(rel, ["image"])


def test_unhashable_cells() -> None:
    df = pd.DataFrame({"tags": [["a", "b"], ["c"]]})
    assert fingerprint(df) == fingerprint(df.copy())
