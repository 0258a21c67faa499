from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from foundry.config.schema import SplitConfig
from foundry.data import split_frame


def frame(n: int = 200) -> pd.DataFrame:
    # 75% "a", 25% "b": an unstratified split would drift from that ratio.
    return pd.DataFrame({"x": np.arange(n), "y": np.where(np.arange(n) % 4 == 0, "b", "a")})


def test_sizes_stratification_and_disjointness() -> None:
    df = frame()
    train, val, test = split_frame(df, SplitConfig(train=0.6, val=0.2, test=0.2), "y")
    assert (len(train), len(val), len(test)) == (120, 40, 40)
    for part in (train, val, test):
        assert list(part.index) == list(range(len(part)))
        assert (part["y"] == "b").mean() == pytest.approx(0.25)
    ids = pd.concat([train.x, val.x, test.x])
    assert sorted(ids) == list(range(200))


def test_same_seed_same_split_other_seed_differs() -> None:
    df = frame()
    a = split_frame(df, SplitConfig(seed=1), "y")
    b = split_frame(df, SplitConfig(seed=1), "y")
    c = split_frame(df, SplitConfig(seed=2), "y")
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x, y)
    assert a[0]["x"].tolist() != c[0]["x"].tolist()


def test_zero_val_and_test() -> None:
    df = frame(10)
    train, val, test = split_frame(df, SplitConfig(train=1.0, val=0.0, test=0.0), None)
    assert len(train) == 10 and len(val) == 0 and len(test) == 0
    assert list(val.columns) == list(test.columns) == ["x", "y"]
    train, val, test = split_frame(df, SplitConfig(train=0.8, val=0.0, test=0.2), None)
    assert (len(train), len(val), len(test)) == (8, 0, 2)


def test_singleton_class_falls_back_with_warning() -> None:
    df = frame(20)
    df.loc[0, "y"] = "lonely"
    with pytest.warns(UserWarning, match="'lonely'.*without stratification"):
        train, val, test = split_frame(df, SplitConfig(), "y")
    assert len(train) + len(val) + len(test) == 20
