"""Target leakage: columns that record the outcome are named, by their values (a
one-column model predicts the target almost perfectly) or by their names; ordinary
features of real tables are not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tests.data.compas_like import LEAKS, PERSONAL, compas_like
from tests.data.real_tables import real_tables

from foundry.config.schema import FeaturesConfig
from foundry.data.infer import infer_features
from foundry.data.leakage import find_leakage


def _leaks(df: pd.DataFrame, target: str, target_type=None, **kwargs) -> dict[str, str]:
    if target_type is None:
        target_type = infer_features(df, FeaturesConfig(target=target)).target_type
    return {d["column"]: d["rule"] for d in find_leakage(df, target, target_type=target_type,
                                                         **kwargs)}  # fmt: skip


def test_compas_like_outcome_columns_are_named_and_honest_features_are_not():
    df = compas_like(n=800).drop(columns=list(PERSONAL))
    found = _leaks(df, "two_year_recid", "binary")
    assert set(found) == LEAKS
    # `end` (days to re-offence) and `event` say nothing by their names: values find them
    assert found["end"] == found["event"] == "alone"
    assert found["is_recid"] == "name" and found["r_charge_desc"] == "name"


def test_reasons_name_the_rule_and_score():
    df = compas_like(n=800).drop(columns=list(PERSONAL))
    leaks = {d["column"]: d for d in find_leakage(df, "two_year_recid", target_type="binary")}
    assert "ROC AUC" in leaks["end"]["reason"] and leaks["end"]["score"] >= 0.98
    assert "'recid'" in leaks["is_recid"]["reason"]
    assert "prefix 'r_'" in leaks["r_charge_desc"]["reason"]


def _table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    return pd.DataFrame(x, columns=["a", "b", "c", "d"])


def test_a_rescaled_regression_target_is_a_leak():
    df = _table()
    df["price_usd"] = 3 * df["a"] + df["b"] + np.random.default_rng(1).normal(0, 1, len(df))
    df["amount_eur"] = df["price_usd"] * 0.92 + 0.01  # another currency: the target itself
    assert _leaks(df, "price_usd") == {"amount_eur": "alone"}


def test_a_recoded_class_label_is_a_leak_for_several_classes():
    df = _table()
    df["grade"] = pd.cut(df["a"] + df["b"], [-9, -1, 1, 9], labels=["low", "mid", "high"])
    df["grade"] = df["grade"].astype(str)
    df["tier_code"] = df["grade"].map({"low": "L", "mid": "M", "high": "H"})
    assert _leaks(df, "grade") == {"tier_code": "alone"}


def test_one_or_two_columns_are_the_model_not_a_leak():
    # y = 2x + 1 + noise: x alone explains 99% of y, which is the point of the table
    rng = np.random.default_rng(0)
    x = rng.uniform(-5, 5, 500)
    df = pd.DataFrame({"x": x, "y": 2 * x + 1 + rng.normal(0, 0.5, 500)})
    assert _leaks(df, "y") == {}


@pytest.mark.parametrize(
    "target, column, leaks",
    [
        ("two_year_recid", "is_recid", True),
        ("churned", "churn_date", True),  # a word and its stem
        ("income", "outcome_code", True),
        ("income", "label", True),
        ("income", "resultado_final", True),
        ("median_house_value", "median_house_value_2020", True),
        ("median_house_value", "house_age", False),  # a generic word is no match
        ("MedHouseVal", "HouseAge", False),
        ("income", "income_tax_band", True),
        ("species", "island", False),
        ("income", "hours_per_week", False),
        ("age", "age_group", True),  # derived from the target
        ("age", "page_views", False),  # whole words only
        ("target", "mean radius", False),
    ],
)
def test_name_rule(target, column, leaks):
    rng = np.random.default_rng(0)
    # values with no signal: only the name can call the column a leak
    df = pd.DataFrame({target: rng.integers(0, 2, 200), column: rng.normal(size=200),
                       "other1": rng.normal(size=200), "other2": rng.normal(size=200)})  # fmt: skip
    assert (column in _leaks(df, target)) is leaks


def test_a_short_prefix_shared_by_several_columns_names_the_outcome():
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"two_year_recid": rng.integers(0, 2, n), "r_days": rng.normal(size=n),
                       "r_charge": rng.normal(size=n), "c_days": rng.normal(size=n),
                       "c_charge": rng.normal(size=n), "x": rng.normal(size=n)})  # fmt: skip
    assert set(_leaks(df, "two_year_recid")) == {"r_days", "r_charge"}
    df = df.drop(columns=["r_charge"])  # one column alone is no convention
    assert _leaks(df, "two_year_recid") == {}


def test_a_survival_layout_records_the_outcome():
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"two_year_recid": rng.integers(0, 2, n), "start": rng.normal(size=n),
                       "end": rng.normal(size=n), "event": rng.normal(size=n),
                       "x": rng.normal(size=n)})  # fmt: skip
    assert set(_leaks(df, "two_year_recid")) == {"end", "event"}
    # `end` without an event column is just a name
    assert _leaks(df.drop(columns=["event"]), "two_year_recid") == {}


def test_the_threshold_is_a_setting():
    df = compas_like(n=800).drop(columns=list(PERSONAL))
    assert _leaks(df, "two_year_recid", "binary")["event"] == "alone"
    # above its score, the survival-layout name rule still names it
    assert _leaks(df, "two_year_recid", "binary", threshold=0.999)["event"] == "name"


def test_no_ordinary_feature_of_the_projects_datasets_is_called_a_leak(tmp_path):
    """The false-positive check: sklearn's bundled tables, penguins, the examples'."""
    for name, (df, target) in real_tables(tmp_path).items():
        assert _leaks(df, target) == {}, name


def test_text_content_that_predicts_the_label_is_the_task_not_a_leak():
    """A sentiment table's review text alone predicts its label almost perfectly: held to
    the name rule only when it is passed as `content` (what init and train do for text
    and image inputs); measured like any column otherwise."""
    rng = np.random.default_rng(0)
    words = {"pos": ["great", "fine", "lovely"], "neg": ["bad", "awful", "dull"]}
    label = rng.choice(["pos", "neg"], 400)
    df = pd.DataFrame({
        "review": [f"the show was {rng.choice(words[y])}" for y in label],
        "stars": rng.integers(0, 100, 400),
        "length": rng.normal(10, 2, 400),
        "label": label,
    })
    assert _leaks(df, "label", "binary") == {"review": "alone"}
    assert _leaks(df, "label", "binary", content=["review"]) == {}
