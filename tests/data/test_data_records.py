"""`Preprocessor.transform_records` (the serving path: Python values, no DataFrame) gives
the tensors `Preprocessor.transform` gives on a frame of the same records, bit for bit.

Records are drawn per input from what the API lets through (`RecordValidator.validate`:
numbers within the model's bound, seen / unseen / numeric / boolean / NaN category
values, null where the input is nullable, any text), then cast by the validator; the
reference is `transform(RecordValidator.frame(records))`, the frame the server built
before the records path existed.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from foundry.config.schema import FeatureConfig, FeaturesConfig
from foundry.data import Preprocessor, ResolvedFeatures, infer_features
from foundry.data.encoders.binary import BinaryEncoder
from foundry.data.encoders.category import MISSING, CategoryEncoder
from foundry.data.encoders.number import NumberEncoder
from foundry.data.encoders.text import TextEncoder
from foundry.errors import DataError
from foundry.serve.schemas import InputSpec, Records, RecordValidator
from foundry.serve.served_model import input_spec

WORDS = ["the", "cat", "sat", "on", "a", "mat", "Dog", "ran", "fast", "!", "naïve", "東京"]


def mixed_frame(n: int = 150, seed: int = 0) -> pd.DataFrame:
    """Every tabular and text feature kind, with missing values, constant, numeric and
    boolean categories, a rare category and huge magnitudes."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "n_mean": rng.normal(40, 12, n).round(1),
            "n_median": rng.exponential(3.0, n),
            "n_zero": rng.integers(-5, 5, n).astype(float),
            "n_drop": rng.normal(0, 1e6, n),
            "n_error": rng.uniform(0, 1, n),
            "n_const": np.full(n, 7.0),
            "n_tiny": rng.normal(0, 1e-30, n),
            "c_category": rng.choice(["red", "green", "blue", "rare"], n, p=[0.4, 0.3, 0.28, 0.02]),
            "c_frequent": rng.choice([1, 2, 3, 10, 25], n).astype(float),
            "c_drop": rng.choice(["a", "b", "c", "d", "e"], n),
            "b_category": rng.choice(["yes", "no"], n),
            "b_frequent": pd.Series(rng.choice([True, False], n), dtype=object),
            "b_drop": rng.choice([0, 1], n).astype(float),
            "b_single": np.full(n, "only"),
            "t_word": [" ".join(rng.choice(WORDS, k)) for k in rng.integers(0, 9, n)],
            "t_bpe": [" ".join(rng.choice(WORDS, k)) for k in rng.integers(1, 6, n)],
            "y": rng.choice(["p", "q", "r"], n),
        }
    )
    for name in df.columns.drop(["n_error", "n_const", "n_tiny", "b_single", "y"]):
        df.loc[rng.random(n) < 0.1, name] = None
    return df


def _num(name: str, **number: Any) -> FeatureConfig:
    return FeatureConfig(name=name, type="number", number=number)


def _cat(name: str, type: str = "category", **category: Any) -> FeatureConfig:
    return FeatureConfig(name=name, type=type, category=category)


MIXED_FEATURES = [
    _num("n_mean", missing="mean"),
    _num("n_median", missing="median", normalization="minmax"),
    _num("n_zero", missing="zero", normalization="none"),
    _num("n_drop", missing="drop_row"),
    _num("n_error", missing="error"),
    _num("n_const"),
    _num("n_tiny", normalization="minmax"),
    _cat("c_category", missing="category", min_frequency=5),
    _cat("c_frequent", missing="most_frequent", max_categories=3),
    _cat("c_drop", missing="drop_row"),
    _cat("b_category", "binary", missing="category"),
    _cat("b_frequent", "binary", missing="most_frequent"),
    _cat("b_drop", "binary", missing="drop_row"),
    _cat("b_single", "binary", missing="most_frequent"),
    FeatureConfig(name="t_word", type="text", text={"max_length": 6}),
    FeatureConfig(
        name="t_bpe",
        type="text",
        text={"tokenizer": "bpe", "vocab_size": 40, "max_length": 9, "lowercase": False},
    ),
]


def served(pre: Preprocessor) -> Preprocessor:
    """The preprocessor as a server holds it: rebuilt from the JSON manifest state."""
    return Preprocessor.from_state(json.loads(json.dumps(pre.state_dict())))


def validator_for(pre: Preprocessor) -> RecordValidator:
    """The validator `ServedModel` builds for a model with this preprocessing."""
    features = pre.resolved.to_dict()["inputs"]
    specs = [input_spec(f, enc) for f, enc in zip(features, pre.encoders, strict=True)]
    return RecordValidator("m", specs)


@pytest.fixture(scope="module")
def mixed() -> Preprocessor:
    resolved = ResolvedFeatures(inputs=MIXED_FEATURES, target="y", target_type="category")
    return served(Preprocessor.fit(mixed_frame(), resolved))


def _penguins(number: dict[str, Any], category: dict[str, Any]) -> Preprocessor:
    from palmerpenguins import load_penguins

    df = load_penguins()
    inferred = infer_features(df, FeaturesConfig(target="species"))
    inputs = [
        f.model_copy(update={"number": f.number.model_copy(update=number),
                             "category": f.category.model_copy(update=category)})
        for f in inferred.inputs
    ]
    resolved = ResolvedFeatures(inputs, inferred.target, inferred.target_type)
    return served(Preprocessor.fit(df, resolved))


PENGUIN_POLICIES = [
    ({"missing": "mean"}, {"missing": "category"}),
    ({"missing": "median", "normalization": "minmax"}, {"missing": "most_frequent"}),
    ({"missing": "zero", "normalization": "none"}, {"missing": "drop_row"}),
    ({"missing": "drop_row"}, {"missing": "category", "min_frequency": 60}),
    ({"missing": "error"}, {"missing": "most_frequent", "max_categories": 1}),
]


@pytest.fixture(scope="module", params=PENGUIN_POLICIES, ids=lambda p: p[0]["missing"])
def penguins(request) -> Preprocessor:
    return _penguins(*request.param)


# ------------------------------------------------------------------- strategies


def _number(spec: InputSpec) -> st.SearchStrategy:
    bound = spec.bound
    big = int(min(bound, 1e300))
    values = st.one_of(
        st.floats(-bound, bound, allow_nan=False, allow_infinity=False),
        st.integers(-big, big),
        st.sampled_from([0, -0.0, 2**53 + 1, -(2**63) - 1, 2**64 + 3, 1e-310, 0.1]).filter(
            lambda v: abs(v) <= bound
        ),
    )
    return values | st.none() if spec.nullable else values


def _category(known: list[str]) -> st.SearchStrategy:
    return st.one_of(
        st.sampled_from([*known, MISSING]),
        st.none(),
        st.text(max_size=6),
        st.integers(-3, 30),
        st.floats(),  # NaN is missing, inf a key like any other
        st.booleans(),
    )


def _binary(values: list[str]) -> st.SearchStrategy:
    """What the validator lets through to a binary input: its training values or null
    (anything else is a 422 naming the field: tests/serve/test_serve_errors.py)."""
    return st.one_of(st.sampled_from(values), st.none())


def _text() -> st.SearchStrategy:
    sentences = st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join)
    return st.none() | sentences | st.text(max_size=40)


def _value(spec: InputSpec, enc: Any) -> st.SearchStrategy:
    if isinstance(enc, NumberEncoder):
        return _number(spec)
    if isinstance(enc, CategoryEncoder):
        return _category(enc.vocab)
    if isinstance(enc, BinaryEncoder):
        return _binary(enc.values)
    assert isinstance(enc, TextEncoder)
    return _text()


@st.composite
def checked_records(draw: st.DrawFn, pre: Preprocessor) -> list[dict[str, Any]]:
    """0-12 records as the validator passes them on (category numbers cast to keys)."""
    validator = validator_for(pre)
    record = st.fixed_dictionaries(
        {s.name: _value(s, e) for s, e in zip(validator.inputs, pre.encoders, strict=True)}
    )
    items = draw(st.lists(record, max_size=12))
    validator.validate(Records(items, "", True))
    return items


def assert_same_bits(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(expected)
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype, key
        assert got[key].shape == tensor.shape, key
        assert got[key].numpy().tobytes() == tensor.numpy().tobytes(), key  # -0.0, too


def assert_records_match_frame(pre: Preprocessor, items: list[dict[str, Any]]) -> None:
    expected = pre.transform(validator_for(pre).frame(items), with_target=False)
    assert_same_bits(pre.transform_records(items), expected)


# ------------------------------------------------------------------------ tests

_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(data=st.data())
def test_records_encode_like_their_frame_for_every_feature_kind(mixed, data) -> None:
    assert_records_match_frame(mixed, data.draw(checked_records(mixed)))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_records_encode_like_their_frame_on_penguins(penguins, data) -> None:
    assert_records_match_frame(penguins, data.draw(checked_records(penguins)))


def test_penguin_rows_encode_like_the_csv(penguins) -> None:
    """Real rows as a client sends them (JSON, null for missing) against the frame
    `foundry predict` reads: the records path agrees with the training-side encoding."""
    from palmerpenguins import load_penguins

    df = load_penguins()[pre_inputs(penguins)]
    if any(f.number.missing == "error" for f in penguins.resolved.inputs):
        df = df.dropna()
    records = json.loads(df.to_json(orient="records", double_precision=15))
    validator_for(penguins).validate(Records(records, "", True))
    assert_same_bits(penguins.transform_records(records),
                     penguins.transform(df, with_target=False))


def pre_inputs(pre: Preprocessor) -> list[str]:
    return [e.name for e in pre.encoders]


def test_empty_records_give_empty_tensors(mixed) -> None:
    assert_records_match_frame(mixed, [])
    assert mixed.transform_records([])["text:t_bpe"].shape == (0, 9)


def test_missing_values_under_the_error_policy_are_refused_alike(mixed) -> None:
    row = dict.fromkeys(pre_inputs(mixed), None)
    row["n_error"] = 0.5
    mixed.transform_records([row])  # null is fine everywhere else
    row["n_error"] = None
    with pytest.raises(DataError, match="n_error.*missing policy is 'error'"):
        mixed.transform_records([row])
    with pytest.raises(DataError, match="n_error.*missing policy is 'error'"):
        mixed.transform(pd.DataFrame([row]), with_target=False)
    row["n_error"] = math.inf
    with pytest.raises(DataError, match="n_error.*infinite"):
        mixed.transform_records([row])


def test_a_record_without_an_input_names_it(mixed) -> None:
    row = dict.fromkeys(pre_inputs(mixed), None)
    del row["c_drop"]
    with pytest.raises(DataError, match="lacks the input 'c_drop'"):
        mixed.transform_records([row])


# ------------------------------------------------------------------------ images


def _png(path: Path, size: tuple[int, int], seed: int, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
    return path


@pytest.mark.parametrize(("normalization", "channels"), [("standard", 3), ("unit", 1)])
def test_image_bytes_encode_like_image_files(tmp_path, normalization, channels) -> None:
    """An image model's records (decoded file bytes, next to a number) encode as
    `transform` encodes the files' paths, resized and normalised alike."""
    sizes = [(8, 6), (5, 9), (8, 6), (12, 4)]
    paths = [_png(tmp_path / f"{i}.png", s, i, "RGB" if i % 2 else "L")
             for i, s in enumerate(sizes)]
    df = pd.DataFrame({"img": [p.name for p in paths], "x": [1.0, None, 3.0, 4.5],
                       "y": ["a", "b", "a", "b"]})
    image = {"height": 6, "width": 8, "channels": channels, "normalization": normalization}
    inputs = [FeatureConfig(name="img", type="image", image=image), _num("x")]
    pre = Preprocessor.fit(df, ResolvedFeatures(inputs, "y", "category"), base_dir=tmp_path)
    records = [{"img": p.read_bytes(), "x": x} for p, x in zip(paths, [1.0, None, 3.0, 4.5],
                                                              strict=True)]
    assert_same_bits(pre.transform_records(records), pre.transform(df, with_target=False))


def test_image_records_need_bytes(tmp_path) -> None:
    path = _png(tmp_path / "a.png", (4, 4), 0)
    df = pd.DataFrame({"img": [str(path)] * 2, "y": ["a", "b"]})
    pre = Preprocessor.fit(
        df, ResolvedFeatures([FeatureConfig(name="img", type="image")], "y", "category")
    )
    with pytest.raises(DataError, match="needs the image file's bytes, got str"):
        pre.transform_records([{"img": str(path)}])
    buf = io.BytesIO()
    Image.open(path).save(buf, format="JPEG")
    assert pre.transform_records([{"img": buf.getvalue()}])["image:img"].shape == (1, 3, 4, 4)
