from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
)
from fairlearn.postprocessing import ThresholdOptimizer
from sklearn.linear_model import LogisticRegression

from foundry.config.schema import MitigationConfig
from foundry.errors import ConfigError, DataError, ModelError
from foundry.evaluation.fairness import (
    _draws,
    apply_mitigation,
    audit,
    fit_mitigation,
    format_audit,
    group_keys,
    mitigation_columns,
    select_sensitive,
    unseen_groups,
)

INPUTS = ["proxy", "x2", "is_a"]


def biased_table(n: int, seed: int) -> pd.DataFrame:
    """Group "a" (60%) gets the label more often for two reasons: `proxy`, an input that
    is shifted for "a", and a direct +1.2 on the label's logit (the planted bias)."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], n, p=[0.6, 0.4])
    is_a = (group == "a").astype(float)
    skill = rng.normal(size=n)
    proxy = skill + 0.8 * is_a + rng.normal(0, 0.5, n)
    x2 = rng.normal(size=n)
    logit = 1.5 * skill + 0.5 * x2 + 1.2 * is_a - 1.8
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"group": group, "proxy": proxy, "x2": x2, "is_a": is_a, "y": y})


@pytest.fixture(scope="module")
def world():
    """A logistic regression trained on the biased table; separate val and test draws."""
    train, val, test = biased_table(20_000, 0), biased_table(10_000, 1), biased_table(40_000, 2)
    model = LogisticRegression().fit(train[INPUTS], train["y"])
    return {
        "model": model,
        "val": val,
        "test": test,
        "p_val": model.predict_proba(val[INPUTS])[:, 1],
        "p_test": model.predict_proba(test[INPUTS])[:, 1],
    }


def _accuracy(y, decisions) -> float:
    return float(np.mean(np.asarray(y) == np.asarray(decisions)))


# ------------------------------------------------------------------------------- groups


def test_group_keys_one_and_two_features_and_missing():
    df = pd.DataFrame(
        {"sex": ["female", "male", None, "female"], "race": ["black", "white", "asian", None]}
    )
    assert group_keys(df[["sex"]]).tolist() == ["female", "male", "<missing>", "female"]
    assert group_keys(df).tolist() == [
        "female,black",
        "male,white",
        "<missing>,asian",
        "female,<missing>",
    ]
    assert group_keys(df).index.equals(df.index)


def test_group_keys_agree_across_dtypes():
    # A CSV column with a NaN is float; a JSON request sends ints: the same groups.
    from_csv = pd.DataFrame({"g": [1.0, 0.0, np.nan]})
    from_json = pd.DataFrame.from_records([{"g": 1}, {"g": 0}, {"g": None}])
    assert (
        group_keys(from_csv).tolist()
        == group_keys(from_json).tolist()
        == [
            "1",
            "0",
            "<missing>",
        ]
    )


def test_group_keys_escape_commas_between_features():
    df = pd.DataFrame({"a": ["x,y", "x"], "b": ["z", "y,z"]})
    keys = group_keys(df).tolist()
    assert keys[0] != keys[1]


def test_select_sensitive_names_the_missing_column():
    df = pd.DataFrame({"sex": ["f"], "age": [3]})
    assert list(select_sensitive(df, ["sex"]).columns) == ["sex"]
    with pytest.raises(DataError, match="'race'.*evaluate.fairness.sensitive_features"):
        select_sensitive(df, ["sex", "race"], source="the test split")
    with pytest.raises(ConfigError, match="evaluate.fairness.sensitive_features is empty"):
        select_sensitive(df, [])


# -------------------------------------------------------------------------------- audit


def test_audit_matches_hand_computed_rates():
    #                a: 4 rows                  b: 4 rows
    y_true = ["yes", "yes", "no", "no"] + ["yes", "no", "no", "no"]
    y_pred = ["yes", "no", "yes", "no"] + ["yes", "no", "no", "no"]
    sensitive = pd.DataFrame({"g": ["a"] * 4 + ["b"] * 4})
    report = audit(y_true, y_pred, sensitive)
    assert report["positive_class"] == "yes"  # the second class in sorted order
    by = {g["key"]: g for g in report["by_group"]}
    # a: 2 of 4 right; 2 of 4 selected; 1 of 2 positives found; 1 of 2 negatives selected.
    assert by["a"] == {
        "group": {"g": "a"},
        "key": "a",
        "count": 4,
        "accuracy": 0.5,
        "selection_rate": 0.5,
        "tpr": 0.5,
        "fpr": 0.5,
        "small": True,
    }
    # b: all right; 1 of 4 selected; its one positive found; none of 3 negatives selected.
    assert (by["b"]["accuracy"], by["b"]["selection_rate"], by["b"]["tpr"], by["b"]["fpr"]) == (
        1.0,
        0.25,
        1.0,
        0.0,
    )
    assert report["overall"] == {
        "count": 8,
        "accuracy": 0.75,
        "selection_rate": 0.375,
        "tpr": pytest.approx(2 / 3),
        "fpr": 0.2,
    }
    assert report["demographic_parity_difference"] == 0.25
    assert report["demographic_parity_ratio"] == 0.5
    assert report["equalized_odds_difference"] == 0.5  # |FPR 0.5 - 0|, larger than TPR's
    assert report["largest_accuracy_gap"] == 0.5
    assert any("fewer than 30 rows" in note for note in report["notes"])
    json.dumps(report, allow_nan=False)


def test_audit_of_a_model_agrees_with_numpy_and_fairlearn(world):
    test = world["test"]
    pred = (world["p_test"] > 0.5).astype(int)
    report = audit(test["y"], pred, test[["group"]])
    assert report["positive_class"] == "1"
    for g in report["by_group"]:
        rows = (test["group"] == g["key"]).to_numpy()
        y, p = test["y"].to_numpy()[rows], pred[rows]
        assert g["count"] == rows.sum()
        assert g["accuracy"] == pytest.approx(np.mean(y == p))
        assert g["selection_rate"] == pytest.approx(np.mean(p))
        assert g["tpr"] == pytest.approx(np.mean(p[y == 1]))
        assert g["fpr"] == pytest.approx(np.mean(p[y == 0]))
        assert not g["small"]
    groups = test["group"]
    assert report["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(test["y"], pred, sensitive_features=groups)
    )
    assert report["demographic_parity_ratio"] == pytest.approx(
        demographic_parity_ratio(test["y"], pred, sensitive_features=groups)
    )
    assert report["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(test["y"], pred, sensitive_features=groups)
    )
    # The planted bias shows: "a" is selected far more often.
    assert report["demographic_parity_difference"] > 0.15


def test_audit_two_features_and_explicit_positive_class():
    df = pd.DataFrame({"sex": ["f", "f", "m", "m"] * 10, "race": ["x", "y"] * 20})
    y_true = np.array([">50K", "<=50K"] * 20)
    report = audit(y_true, y_true, df, positive_class="<=50K", classes=["<=50K", ">50K"])
    assert report["positive_class"] == "<=50K"
    assert report["sensitive_features"] == ["sex", "race"]
    assert {g["key"] for g in report["by_group"]} == {"f,x", "f,y", "m,x", "m,y"}
    assert {"sex": "m", "race": "y"} in [g["group"] for g in report["by_group"]]
    assert report["overall"]["accuracy"] == 1.0
    with pytest.raises(ConfigError, match="evaluate.fairness.positive_class 'yes'"):
        audit(y_true, y_true, df, positive_class="yes", classes=["<=50K", ">50K"])


def test_audit_leaves_undefined_rates_out():
    # Group b has no positive row: no TPR, and it must not count as 0 in the EO gap.
    y_true = [1, 0, 1, 0, 0, 0]
    y_pred = [1, 0, 0, 0, 1, 0]
    report = audit(y_true, y_pred, pd.DataFrame({"g": list("aaaabb")}))
    b = next(g for g in report["by_group"] if g["key"] == "b")
    assert b["tpr"] is None and b["fpr"] == 0.5
    assert report["equalized_odds_difference"] == 0.5  # FPR a 0 vs b 0.5; TPR a alone
    assert any("no TPR" in note for note in report["notes"])


def test_audit_multiclass_reports_accuracy_gaps():
    y_true = ["x", "y", "z", "x"] * 10 + ["x", "y", "z", "z"] * 10
    y_pred = ["x", "y", "z", "x"] * 10 + ["x", "x", "z", "y"] * 10
    sensitive = pd.DataFrame({"g": ["a"] * 40 + ["b"] * 40})
    report = audit(y_true, y_pred, sensitive)
    by = {g["key"]: g for g in report["by_group"]}
    assert by["a"]["accuracy"] == 1.0 and by["b"]["accuracy"] == 0.5
    assert report["largest_accuracy_gap"] == 0.5
    assert by["a"]["selection_rate"] is None and report["demographic_parity_difference"] is None
    assert any("binary target" in note for note in report["notes"])
    assert "n/a" in format_audit(report)

    one_vs_rest = audit(y_true, y_pred, sensitive, positive_class="z")
    by = {g["key"]: g for g in one_vs_rest["by_group"]}
    assert by["b"]["selection_rate"] == 0.25  # "z" predicted on 10 of 40 rows
    assert by["b"]["tpr"] == 0.5  # 10 of the 20 true "z" rows
    assert any("one-vs-rest" in note for note in one_vs_rest["notes"])


def test_audit_of_a_single_group_says_there_is_nothing_to_compare():
    report = audit([0, 1] * 20, [0, 1] * 20, pd.DataFrame({"g": ["a"] * 40}))
    assert report["demographic_parity_difference"] == 0.0
    assert report["largest_accuracy_gap"] == 0.0
    assert any("nothing to compare" in note for note in report["notes"])


def test_format_audit_is_a_table():
    report = audit(
        ["no", "yes"] * 20 + ["no"] * 5,
        ["no", "yes"] * 20 + ["yes"] * 5,
        pd.DataFrame({"sex": ["female"] * 40 + ["male"] * 5}),
    )
    text = format_audit(report)
    assert "| female | 40 | 1.0000 | 0.5000 | 1.0000 | 0.0000 |" in text
    assert "| male (small) | 5 |" in text
    assert "demographic parity difference 0.5000" in text


# --------------------------------------------------------------------------- mitigation


def test_demographic_parity_mitigation_halves_the_gap_for_under_two_points(world):
    val, test = world["val"], world["test"]
    state = fit_mitigation(world["p_val"], val["y"], val[["group"]], MitigationConfig(), seed=0)
    before = (world["p_test"] > 0.5).astype(int)
    after = apply_mitigation(state, world["p_test"], test[["group"]])
    dp_before = audit(test["y"], before, test[["group"]])["demographic_parity_difference"]
    dp_after = audit(test["y"], after, test[["group"]])["demographic_parity_difference"]
    accuracy_drop = _accuracy(test["y"], before) - _accuracy(test["y"], after)
    assert dp_after <= 0.5 * dp_before, (dp_before, dp_after)
    assert accuracy_drop <= 0.02, accuracy_drop


def test_equalized_odds_mitigation_cuts_the_odds_gap(world):
    val, test = world["val"], world["test"]
    config = MitigationConfig(constraint="equalized_odds", objective="balanced_accuracy_score")
    state = fit_mitigation(world["p_val"], val["y"], val[["group"]], config)
    assert state["constraint"] == "equalized_odds"
    before = (world["p_test"] > 0.5).astype(int)
    after = apply_mitigation(state, world["p_test"], test[["group"]])
    eo_before = audit(test["y"], before, test[["group"]])["equalized_odds_difference"]
    eo_after = audit(test["y"], after, test[["group"]])["equalized_odds_difference"]
    assert eo_after <= 0.5 * eo_before, (eo_before, eo_after)


def test_relaxed_parity_keeps_half_the_cut_for_less_accuracy(world):
    val, test = world["val"], world["test"]
    val_gap = audit(val["y"], (world["p_val"] > 0.5).astype(int), val[["group"]])[
        "demographic_parity_difference"
    ]
    before = (world["p_test"] > 0.5).astype(int)
    dp_before = audit(test["y"], before, test[["group"]])["demographic_parity_difference"]
    exact, relaxed = (
        apply_mitigation(
            fit_mitigation(
                world["p_val"], val["y"], val[["group"]], MitigationConfig(), tolerance=tol
            ),
            world["p_test"],
            test[["group"]],
        )
        for tol in (None, 0.4 * val_gap)
    )
    dp_relaxed = audit(test["y"], relaxed, test[["group"]])["demographic_parity_difference"]
    assert dp_relaxed <= 0.5 * dp_before
    assert _accuracy(test["y"], relaxed) > _accuracy(test["y"], exact)
    with pytest.raises(ConfigError, match="demographic_parity"):
        fit_mitigation(
            world["p_val"],
            val["y"],
            val[["group"]],
            MitigationConfig(constraint="equalized_odds"),
            tolerance=0.05,
        )


@pytest.mark.parametrize("constraint", ["demographic_parity", "equalized_odds"])
def test_apply_reproduces_fairlearns_threshold_optimizer(world, constraint):
    """Fairlearn fitted independently (on the model's predict_proba, the raw group column)
    gives the same thresholds, and its randomised predictions the same group rates."""
    val, test = world["val"], world["test"]
    state = fit_mitigation(
        world["p_val"], val["y"], val[["group"]], MitigationConfig(constraint=constraint)
    )
    reference = ThresholdOptimizer(
        estimator=world["model"],
        constraints=constraint,
        prefit=True,
        predict_method="predict_proba",
    ).fit(val[INPUTS], val["y"], sensitive_features=val["group"])
    for key, choice in reference.interpolated_thresholder_.interpolation_dict.items():
        ours = state["groups"][key]
        assert ours["threshold0"] == choice.operation0.threshold
        assert ours["threshold1"] == choice.operation1.threshold
        assert ours["p0"] == choice.p0 and ours["p_ignore"] == choice.get("p_ignore", 0.0)

    ours = apply_mitigation(state, world["p_test"], test[["group"]])
    theirs = reference.predict(test[INPUTS], sensitive_features=test["group"], random_state=0)
    expected = reference._pmf_predict(test[INPUTS], sensitive_features=test["group"])[:, 1]
    certain = (expected == 0) | (expected == 1)
    np.testing.assert_array_equal(ours[certain], theirs[certain])
    for g in ("a", "b"):
        rows = (test["group"] == g).to_numpy()
        # Both are Bernoulli draws around the same expected rate: 4 standard errors.
        tolerance = 4 * np.sqrt(np.sum(expected[rows] * (1 - expected[rows]))) / rows.sum()
        assert abs(ours[rows].mean() - expected[rows].mean()) <= tolerance + 1e-12
        assert abs(theirs[rows].mean() - expected[rows].mean()) <= tolerance + 1e-12


def test_state_round_trips_through_json(world):
    val, test = world["val"], world["test"]
    config = MitigationConfig(constraint="equalized_odds")
    state = fit_mitigation(world["p_val"], val["y"], val[["group"]], config, seed=7)
    loaded = json.loads(json.dumps(state, allow_nan=False))
    assert loaded == state
    assert mitigation_columns(loaded) == ["group"]
    assert loaded["seed"] == 7 and loaded["fairlearn_version"]
    np.testing.assert_array_equal(
        apply_mitigation(loaded, world["p_test"], test[["group"]]),
        apply_mitigation(state, world["p_test"], test[["group"]]),
    )


def test_decisions_do_not_depend_on_the_batch(world):
    val, test = world["val"], world["test"].head(300)
    config = MitigationConfig(constraint="equalized_odds")
    state = fit_mitigation(world["p_val"], val["y"], val[["group"]], config)
    scores = world["p_test"][:300]
    whole = apply_mitigation(state, scores, test[["group"]])
    one_by_one = [
        apply_mitigation(state, scores[i : i + 1], test[["group"]].iloc[i : i + 1])[0]
        for i in range(len(test))
    ]
    np.testing.assert_array_equal(whole, one_by_one)
    reversed_ = apply_mitigation(state, scores[::-1], test[["group"]].iloc[::-1])
    np.testing.assert_array_equal(whole, reversed_[::-1])
    # The seed keys the draws: another seed redraws the randomised rows only.
    other = apply_mitigation(state, scores, test[["group"]], seed=1)
    assert (other != whole).any()


def test_identical_rows_in_one_call_are_split_in_the_stored_proportion():
    always, never = (
        {"operator0": ">", "threshold0": "-inf"},
        {"operator1": ">", "threshold1": "inf"},
    )
    state = {
        "sensitive_features": ["g"],
        "seed": 0,
        "groups": {"a": {"p0": 0.3, "p1": 0.7, **always, **never}},
    }
    n = 20_000
    decisions = apply_mitigation(state, np.full(n, 0.5), pd.DataFrame({"g": ["a"] * n}))
    assert abs(decisions.mean() - 0.3) < 4 * np.sqrt(0.21 / n)
    # Alone, the same input always gets the same answer.
    alone = {int(apply_mitigation(state, [0.5], pd.DataFrame({"g": ["a"]}))[0]) for _ in "xyz"}
    assert len(alone) == 1


def test_draws_are_uniform_even_for_neighbouring_scores():
    scores = np.linspace(0.4, 0.4 + 1e-9, 100_000)  # floats a few ulps apart
    u = _draws(0, np.zeros(len(scores), dtype=np.intp), ["a"], scores)
    assert u.min() >= 0 and u.max() < 1
    counts = np.histogram(u, bins=20, range=(0, 1))[0]
    expected = len(u) / 20
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 60  # 19 degrees of freedom: 60 is far beyond the 0.9999 quantile (~50)


def test_unseen_group_keeps_the_models_decision(world):
    val = world["val"]
    state = fit_mitigation(world["p_val"], val["y"], val[["group"]], MitigationConfig())
    scores = np.array([0.2, 0.7, 0.7])
    sensitive = pd.DataFrame({"group": ["c", "c", None]})
    np.testing.assert_array_equal(apply_mitigation(state, scores, sensitive), [0, 1, 1])
    assert unseen_groups(state, sensitive) == {"c": 2, "<missing>": 1}


def test_apply_names_a_missing_sensitive_column(world):
    val = world["val"]
    state = fit_mitigation(world["p_val"], val["y"], val[["group"]], MitigationConfig())
    with pytest.raises(DataError, match="sensitive column 'group'"):
        apply_mitigation(state, [0.5], pd.DataFrame({"sex": ["f"]}))


def test_malformed_state_is_a_model_error():
    state = {"sensitive_features": ["g"], "groups": {"a": {"p0": 1.0}}}
    with pytest.raises(ModelError, match="malformed"):
        apply_mitigation(state, [0.5], pd.DataFrame({"g": ["a"]}))


def test_mitigation_is_for_binary_classifiers_only():
    sensitive = pd.DataFrame({"g": ["a", "b"] * 50})
    with pytest.raises(ModelError, match="binary"):
        fit_mitigation(np.full(100, 0.5), [0, 1, 2, 1] * 25, sensitive, MitigationConfig())
    with pytest.raises(ModelError, match="binary"):
        fit_mitigation(np.full((100, 3), 1 / 3), [0, 1] * 50, sensitive, MitigationConfig())


def test_mitigation_needs_two_groups_with_both_labels():
    scores, y = np.linspace(0, 1, 100), [0, 1] * 50
    with pytest.raises(DataError, match="single group"):
        fit_mitigation(scores, y, pd.DataFrame({"g": ["a"] * 100}), MitigationConfig())
    groups = pd.DataFrame({"g": ["a"] * 90 + ["b"] * 10})
    with pytest.raises(DataError, match="group.* b have only one label"):
        fit_mitigation(scores, [0, 1] * 45 + [0] * 10, groups, MitigationConfig())
