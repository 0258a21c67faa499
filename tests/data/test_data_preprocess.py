from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from foundry.config.schema import FeatureConfig
from foundry.data import Preprocessor, ResolvedFeatures
from foundry.errors import DataError


def resolved(*inputs: FeatureConfig, target: str = "y", target_type="category"):
    return ResolvedFeatures(inputs=list(inputs), target=target, target_type=target_type)


def num(name: str, **number) -> FeatureConfig:
    return FeatureConfig(name=name, type="number", number=number)


def cat(name: str, type: str = "category", **category) -> FeatureConfig:
    return FeatureConfig(name=name, type=type, category=category)


def round_trip(pre: Preprocessor) -> Preprocessor:
    return Preprocessor.from_state(json.loads(json.dumps(pre.state_dict())))


def test_number_normalisations_and_fill() -> None:
    df = pd.DataFrame(
        {
            "a": [1.0, 2.0, 3.0, np.nan],
            "b": [0.0, 5.0, 10.0, 5.0],
            "c": [7.0, 7.0, 7.0, 7.0],
            "y": ["p", "q", "p", "q"],
        }
    )
    pre = Preprocessor.fit(
        df,
        resolved(
            num("a", missing="median"),
            num("b", normalization="minmax"),
            num("c", normalization="standard"),
        ),
    )
    x = pre.transform(df)["numeric"]
    assert x.dtype == torch.float32 and x.shape == (4, 3)
    std = np.std([1.0, 2.0, 3.0])
    expected_a = (np.array([1, 2, 3, 2.0]) - 2.0) / std  # NaN → median 2
    np.testing.assert_allclose(x[:, 0].numpy(), expected_a, rtol=1e-6)
    np.testing.assert_allclose(x[:, 1].numpy(), [0.0, 0.5, 1.0, 0.5])
    np.testing.assert_array_equal(x[:, 2].numpy(), 0.0)  # constant: std 0 → divide by 1
    assert pre.schema.numeric == ["a", "b", "c"] and "categorical" not in pre.transform(df)


def test_number_missing_policies() -> None:
    df = pd.DataFrame({"a": [2.0, np.nan, 4.0, 6.0], "y": ["p", "q", "p", "q"]})
    for policy, fill in [("mean", 4.0), ("zero", 0.0)]:
        pre = Preprocessor.fit(df, resolved(num("a", missing=policy, normalization="none")))
        assert pre.transform(df)["numeric"][1, 0].item() == fill
    pre = Preprocessor.fit(df, resolved(num("a", missing="error")))
    with pytest.raises(DataError, match="'a' has 1 missing value.*row 1.*'error'"):
        pre.transform(df)
    pre = Preprocessor.fit(df, resolved(num("a", missing="drop_row", normalization="none")))
    kept = pre.prepare(df)
    assert kept["a"].tolist() == [2.0, 4.0, 6.0] and list(kept.index) == [0, 1, 2]
    assert pre.transform(kept)["target"].tolist() == [0, 0, 1]


def test_number_errors() -> None:
    df = pd.DataFrame({"a": [1.0, np.inf, -np.inf, 2.0], "y": ["p", "q", "p", "q"]})
    with pytest.raises(DataError, match="'a' has 2 infinite value"):
        Preprocessor.fit(df, resolved(num("a")))
    df = pd.DataFrame({"a": ["1", "2", "oops", ""], "y": ["p", "q", "p", "q"]})
    with pytest.raises(DataError, match="'a' has a non-numeric value 'oops' \\(row 2\\)"):
        Preprocessor.fit(df, resolved(num("a")))


def test_binary_inputs() -> None:
    train = pd.DataFrame(
        {"s": ["yes", "no", "yes"], "b": [True, False, True], "y": ["p", "q", "p"]}
    )
    pre = Preprocessor.fit(train, resolved(cat("s", "binary"), cat("b", "binary")))
    test = pd.DataFrame({"s": ["no", "maybe", None], "b": [False, True, None]})
    x = pre.transform(test, with_target=False)["numeric"].numpy()
    np.testing.assert_array_equal(x[:, 0], [0.0, 0.5, 0.5])  # no < yes; unseen/missing 0.5
    np.testing.assert_array_equal(x[:, 1], [0.0, 1.0, 0.5])
    with pytest.raises(DataError, match="binary column 's' has 3 distinct"):
        Preprocessor.fit(
            pd.DataFrame({"s": ["a", "b", "c"], "y": [0, 1, 0]}), resolved(cat("s", "binary"))
        )


def test_category_vocabulary_unknown_rare_and_missing() -> None:
    train = pd.DataFrame(
        {
            "c": ["a", "a", "a", "b", "b", "rare", None, None],
            "y": [0, 1, 0, 1, 0, 1, 0, 1],
        }
    )
    pre = Preprocessor.fit(train, resolved(cat("c", min_frequency=2)))
    # ranked by count then value: a (3), __missing__ (2), b (2); "rare" is dropped
    assert pre.schema.categorical == ["c"] and pre.schema.cardinalities == [4]
    test = pd.DataFrame({"c": ["a", "b", None, "rare", "never"]})
    codes = pre.transform(test, with_target=False)["categorical"]
    assert codes.dtype == torch.int64
    assert codes[:, 0].tolist() == [1, 3, 2, 0, 0]

    pre = Preprocessor.fit(train, resolved(cat("c", missing="most_frequent", max_categories=1)))
    assert pre.transform(test, with_target=False)["categorical"][:, 0].tolist() == [1, 0, 1, 0, 0]

    pre = Preprocessor.fit(train, resolved(cat("c", missing="drop_row")))
    assert len(pre.prepare(train)) == 6


def test_numeric_categories_match_across_dtypes() -> None:
    train = pd.DataFrame({"zip": [10, 20, 10, 30], "y": [0, 1, 0, 1]})
    pre = Preprocessor.fit(train, resolved(cat("zip")))
    # floats (a NaN forces float64) and Python objects map to the same keys as int64
    test = pd.DataFrame({"zip": pd.Series([20.0, np.nan, 30.0])})
    assert pre.transform(test, with_target=False)["categorical"][:, 0].tolist() == [2, 0, 3]
    obj = pd.DataFrame({"zip": pd.Series([10, "20", None], dtype=object)})
    assert pre.transform(obj, with_target=False)["categorical"][:, 0].tolist() == [1, 2, 0]


def test_classification_target() -> None:
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "y": [2, 10, 2, 1]})
    pre = Preprocessor.fit(df, resolved(num("a")))
    assert pre.task.task == "multiclass" and pre.task.classes == ["1", "2", "10"]
    y = pre.transform(df)["target"]
    assert y.dtype == torch.int64 and y.tolist() == [1, 2, 1, 0]
    assert pre.decode_labels(np.array([2, 0])).tolist() == ["10", "1"]
    with pytest.raises(DataError, match="target column 'y' has label.*not seen in training: '7'"):
        pre.transform(pd.DataFrame({"a": [1.0], "y": [7]}))
    with pytest.raises(DataError, match="target column 'y' is missing in 1 row"):
        pre.transform(pd.DataFrame({"a": [1.0, 2.0], "y": [1, None]}))

    binary = Preprocessor.fit(
        pd.DataFrame({"a": [1.0, 2.0], "y": ["yes", "no"]}),
        resolved(num("a"), target_type="binary"),
    )
    assert binary.task.task == "binary" and binary.task.classes == ["no", "yes"]


def test_regression_target() -> None:
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [10.0, 20.0, 30.0]})
    pre = Preprocessor.fit(df, resolved(num("a"), target_type="number"))
    task = pre.task
    assert task.task == "regression" and task.classes == []
    assert task.target_mean == 20.0 and task.target_std == pytest.approx(np.std([10, 20, 30]))
    y = pre.transform(df)["target"]
    assert y.dtype == torch.float32
    np.testing.assert_allclose(pre.denormalize(y.numpy()), [10, 20, 30], rtol=1e-6)


def test_missing_columns() -> None:
    df = pd.DataFrame({"a": [1.0, 2.0], "y": [0, 1]})
    pre = Preprocessor.fit(df, resolved(num("a")))
    with pytest.raises(DataError, match=r"missing column\(s\) \['a'\]"):
        pre.transform(pd.DataFrame({"b": [1.0]}), with_target=False)
    assert "target" not in pre.transform(df[["a"]], with_target=False)


def test_state_round_trip_is_bit_for_bit(rng: np.random.Generator) -> None:
    n = 50
    df = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.integers(0, 100, n).astype(float),
            "s": rng.choice(["yes", "no"], n),
            "c": rng.choice(list("abcdefg"), n),
            "t": [
                " ".join(rng.choice(["red", "fox", "jumps", "lazy", "dog"], 5)) for _ in range(n)
            ],
            "y": rng.normal(size=n),
        }
    )
    df.loc[3, "a"] = np.nan
    r = resolved(
        num("a"),
        num("b", normalization="minmax"),
        cat("s", "binary"),
        cat("c"),
        FeatureConfig(name="t", type="text", text={"max_length": 6}),
        target_type="number",
    )
    pre = Preprocessor.fit(df, r)
    again = round_trip(pre)
    a, b = pre.transform(df), again.transform(df)
    assert a.keys() == b.keys() == {"numeric", "categorical", "text:t", "target"}
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    assert again.schema == pre.schema and again.task == pre.task
    assert again.state_dict() == pre.state_dict()


def test_empty_frame_gives_empty_tensors() -> None:
    df = pd.DataFrame({"a": [1.0, 2.0], "c": ["x", "y"], "y": [0, 1]})
    pre = Preprocessor.fit(df, resolved(num("a"), cat("c")))
    enc = pre.transform(df.iloc[:0])
    assert enc["numeric"].shape == (0, 1) and enc["categorical"].shape == (0, 1)
    assert enc["target"].shape == (0,)
