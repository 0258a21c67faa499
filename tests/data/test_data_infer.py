from __future__ import annotations

import base64
import hashlib
import random
import string
import uuid

import numpy as np
import pandas as pd
import pytest

from foundry.config.schema import FeatureConfig, FeaturesConfig
from foundry.data import ResolvedFeatures, infer_features, infer_type
from foundry.data.infer import ID_MIN_ROWS, identifier_reason
from foundry.errors import DataError

N = 60


def mixed_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "age": rng.normal(40, 10, N),
            "count": rng.integers(0, 5, N),  # few distinct ints: still a number
            "smoker": rng.choice(["yes", "no"], N),
            "flag": rng.choice([True, False], N),
            "color": rng.choice(["red", "green", "blue"], N),
            "review": [f"this product was great number {i} would buy again" for i in range(N)],
            "photo": [f"imgs/{i}.JPG" for i in range(N)],
            "user_id": [f"u{i:05d}" for i in range(N)],
            "row": np.arange(N),
            "label": rng.choice(["a", "b", "c"], N),
        }
    )


def test_infer_type_rules() -> None:
    df = mixed_frame()
    assert infer_type(df["age"]) == "number"
    assert infer_type(df["count"]) == "number"
    assert infer_type(df["smoker"]) == "binary"
    assert infer_type(df["flag"]) == "binary"
    assert infer_type(df["color"]) == "category"
    assert infer_type(df["review"]) == "text"
    assert infer_type(df["photo"]) == "image"
    assert infer_type(pd.Series([0, 1, 1, np.nan])) == "binary"
    assert infer_type(pd.Series(["x" * 40 + str(i) for i in range(50)])) == "text"


def test_infer_features_skips_ids_and_excluded() -> None:
    df = mixed_frame()
    with pytest.warns(UserWarning, match="identifier") as record:
        r = infer_features(df, FeaturesConfig(target="label", exclude=["photo"]))
    skipped = " ".join(str(w.message) for w in record)
    assert "'user_id'" in skipped and "'row'" in skipped
    assert isinstance(r, ResolvedFeatures)
    types = {f.name: f.type for f in r.inputs}
    assert types == {
        "age": "number",
        "count": "number",
        "smoker": "binary",
        "flag": "binary",
        "color": "category",
        "review": "text",
    }
    assert r.target == "label" and r.target_type == "category"


def test_given_inputs_keep_settings_and_fill_types() -> None:
    df = mixed_frame()
    given = [
        FeatureConfig(name="color", category={"min_frequency": 3}),
        FeatureConfig(name="age", type="category"),
    ]
    r = infer_features(df, FeaturesConfig(target="smoker", inputs=given))
    assert [(f.name, f.type) for f in r.inputs] == [("color", "category"), ("age", "category")]
    assert r.inputs[0].category.min_frequency == 3
    assert r.target_type == "binary"


def test_target_types() -> None:
    x = np.random.default_rng(0).normal(size=30)
    df = pd.DataFrame(
        {"x": x, "reg": np.linspace(0, 1, 30), "digit": np.arange(30) % 4, "s": ["1.5", "2"] * 15}
    )
    assert infer_features(df, FeaturesConfig(target="reg")).target_type == "number"
    assert infer_features(df, FeaturesConfig(target="digit")).target_type == "category"
    forced = FeaturesConfig(target="digit", target_type="number")
    assert infer_features(df, forced).target_type == "number"
    # numbers stored as strings: binary by default, accepted as a forced regression target
    assert infer_features(df, FeaturesConfig(target="s")).target_type == "binary"
    as_number = FeaturesConfig(target="s", target_type="number")
    assert infer_features(df, as_number).target_type == "number"


def test_target_errors() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "label": ["a", "a", "a"], "txt": ["p", "q", "r"]})
    with pytest.raises(DataError, match="'lable' not found.*x, label, txt.*did you mean 'label'"):
        infer_features(df, FeaturesConfig(target="lable"))
    with pytest.raises(DataError, match="target column 'label' has only the value 'a'"):
        infer_features(df, FeaturesConfig(target="label"))
    with pytest.raises(DataError, match="'number'.*'txt'.*'p'"):
        infer_features(df, FeaturesConfig(target="txt", target_type="number"))


def test_input_errors() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    with pytest.raises(DataError, match="input column 'z' not found"):
        infer_features(df, FeaturesConfig(target="y", inputs=[FeatureConfig(name="z")]))
    with pytest.raises(DataError, match="no input columns left"):
        infer_features(df, FeaturesConfig(target="y", exclude=["x"]))
    with pytest.raises(DataError, match="excluded column 'q' not found"):
        infer_features(df, FeaturesConfig(target="y", exclude=["q"]))


def test_resolved_features_round_trip() -> None:
    r = infer_features(mixed_frame()[["age", "color", "label"]], FeaturesConfig(target="label"))
    assert ResolvedFeatures.from_dict(r.to_dict()) == r


def _columns(n: int) -> dict[str, list]:
    """Near-unique columns of each kind issue 15 names, `n` values each (seeded)."""
    rng = random.Random(0)
    words = ["http", "json", "yaml", "crypto", "image", "sound", "mail", "sql", "font", "git"]
    pairs = [(a, b) for a in words for b in words if a != b]
    picks = rng.sample(pairs, n)
    return {
        # structure: kept, as text
        "packages": [
            rng.choice(["python3-{}{}", "lib{}-{}-perl", "golang-{}-{}"]).format(a, b)
            for a, b in picks
        ],
        "paths": [f"src/{a}/{b}_{i}.py" for i, (a, b) in enumerate(picks)],
        "urls": [f"https://example.org/{a}/{b}" for a, b in picks],
        "codes": [f"{a[:3].upper()}-{b[:2].upper()}{rng.randrange(100, 999)}" for a, b in picks],
        "emails": [f"{a}.{b}@example.com" for a, b in picks],
        "words": [f"{a}{b}" for a, b in picks],
        # opaque: dropped
        "uuids": [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)],
        "sha1": [hashlib.sha1(rng.randbytes(8)).hexdigest() for _ in range(n)],
        "base64": [base64.b64encode(rng.randbytes(12)).decode() for _ in range(n)],
        "alnum": [
            "".join(rng.choices(string.ascii_uppercase + string.digits, k=8)) for _ in range(n)
        ],
        "numbered": [f"user_{i}" for i in rng.sample(range(10**6), n)],
    }


@pytest.mark.parametrize("n", [30, 90])
def test_structured_unique_strings_are_text_and_opaque_ones_identifiers(n) -> None:
    reasons = {name: identifier_reason(pd.Series(v)) for name, v in _columns(n).items()}
    kept = {name for name, reason in reasons.items() if reason is None}
    assert kept == {"packages", "paths", "urls", "codes", "emails", "words"}, reasons
    assert reasons["uuids"].startswith("UUIDs: 100% of values")
    assert reasons["sha1"].startswith("hex hashes: 100%")
    assert reasons["base64"].startswith("near-random strings:")
    assert reasons["alnum"].startswith("near-random strings:")
    assert reasons["numbered"].startswith("numbered ids:")
    for name in kept:
        assert infer_type(pd.Series(_columns(n)[name])) == "text", name


def test_identifier_rule_leaves_repeated_values_numbers_and_small_tables_alone() -> None:
    rng = np.random.default_rng(0)
    repeated = pd.Series([str(uuid.UUID(int=int(i), version=4)) for i in rng.integers(0, 5, 60)])
    assert identifier_reason(repeated) is None  # 5 distinct values: a category
    assert infer_type(repeated) == "category"
    assert identifier_reason(pd.Series(rng.normal(size=60))) is None
    assert identifier_reason(pd.Series(rng.permutation(60) * 7)) is None  # not a counter
    assert identifier_reason(pd.Series(np.arange(60) + 1000)).startswith("row numbers:")
    few = pd.Series([str(uuid.UUID(int=i, version=4)) for i in range(ID_MIN_ROWS - 1)])
    assert identifier_reason(few) is None  # below ID_MIN_ROWS every column looks unique
    assert infer_type(pd.Series(["a", "b", "c"] * 3)) == "category"
