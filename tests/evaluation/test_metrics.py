"""compute_metrics / probabilities against values worked out by hand on tiny arrays."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from foundry.data.schema import TaskInfo
from foundry.errors import DataError
from foundry.evaluation import compute_metrics, probabilities

BINARY = TaskInfo(target="y", task="binary", classes=["no", "yes"])
MULTI = TaskInfo(target="y", task="multiclass", classes=["a", "b", "c"])


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _assert_plain_json(metrics: dict) -> None:
    json.dumps(metrics, allow_nan=False)
    for key, value in metrics.items():
        assert value is None or type(value) in (float, list), (key, type(value))


# Logits of class 1; y = [1, 0, 0, 1] → p1 = [.881, .269, .622, .047], predictions [1, 0, 1, 0].
BIN_LOGITS = np.array([[2.0], [-1.0], [0.5], [-3.0]])
BIN_Y = np.array([1, 0, 0, 1])


def test_binary_one_column_outputs_hand_computed():
    m = compute_metrics(BINARY, BIN_Y, BIN_LOGITS)
    p1 = [_sigmoid(x) for x in BIN_LOGITS[:, 0]]
    assert m["accuracy"] == pytest.approx(0.5)
    for key in ("precision", "recall", "f1"):
        assert m[f"{key}_macro"] == pytest.approx(0.5)
        assert m[f"{key}_weighted"] == pytest.approx(0.5)
    # Positive scores .881 and .047 against negatives .269 and .622: 2 of 4 pairs ranked right.
    assert m["roc_auc"] == pytest.approx(0.5)
    # Ranked: pos (P=1, R=.5), neg, neg, pos (P=.5, R=1) → AP = .5·1 + .5·.5.
    assert m["pr_auc"] == pytest.approx(0.75)
    expected_ll = -np.mean(
        [math.log(p1[0]), math.log(1 - p1[1]), math.log(1 - p1[2]), math.log(p1[3])]
    )
    assert m["log_loss"] == pytest.approx(expected_ll)
    assert m["confusion_matrix"] == [[1, 1], [1, 1]]
    _assert_plain_json(m)


def test_binary_two_column_outputs_match_one_column():
    # softmax([0, x]) == [1 - sigmoid(x), sigmoid(x)]
    two = np.concatenate([np.zeros_like(BIN_LOGITS), BIN_LOGITS], axis=1)
    m1 = compute_metrics(BINARY, BIN_Y, BIN_LOGITS)
    m2 = compute_metrics(BINARY, BIN_Y, two)
    assert m1.keys() == m2.keys()
    for key in m1:
        if isinstance(m1[key], float):
            assert m2[key] == pytest.approx(m1[key]), key
        else:
            assert m2[key] == m1[key], key


# Outputs are log-probabilities, so softmax gives these rows back exactly.
MULTI_P = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.2, 0.45, 0.35], [0.1, 0.1, 0.8]])
MULTI_Y = np.array([0, 1, 2, 2])  # predictions [0, 1, 1, 2]


def test_multiclass_hand_computed():
    m = compute_metrics(MULTI, MULTI_Y, np.log(MULTI_P))
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    # per class precision (1, .5, 1), recall (1, 1, .5), f1 (1, 2/3, 2/3); support (1, 1, 2)
    assert m["precision_macro"] == pytest.approx(2.5 / 3)
    assert m["recall_macro"] == pytest.approx(2.5 / 3)
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["precision_weighted"] == pytest.approx((1 + 0.5 + 2) / 4)
    assert m["recall_weighted"] == pytest.approx(0.75)
    assert m["f1_weighted"] == pytest.approx((1 + 2 / 3 + 4 / 3) / 4)
    # one-vs-rest AUC per class: 1, 1, and for class 2 positives (.35, .8) against
    # negatives (.1, .4) 3 of 4 pairs are ranked right
    assert m["roc_auc"] == pytest.approx((1 + 1 + 0.75) / 3)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(MULTI_Y, MULTI_P, multi_class="ovr"))
    # AP per class: 1, 1, and class 2 ranked pos, neg, pos → .5·1 + .5·(2/3)
    assert m["pr_auc"] == pytest.approx((1 + 1 + (0.5 + 1 / 3)) / 3)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.5, 0.35, 0.8])))
    _assert_plain_json(m)


def test_multiclass_with_absent_class_averages_present_ones_without_warnings():
    y = np.array([0, 1, 0, 1])  # class 2 never occurs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(MULTI, y, np.log(MULTI_P))
    # class 0: positives (.7, .2) beat negatives (.1, .1); class 1: positives (.5, .1)
    # against negatives (.2, .45) win 2 of 4 pairs; class 2 is left out
    assert m["roc_auc"] == pytest.approx((1.0 + 0.5) / 2)
    assert len(m["confusion_matrix"]) == 3
    _assert_plain_json(m)


@pytest.mark.parametrize(
    ("task", "y", "outputs"),
    [
        (BINARY, np.array([0, 0, 0]), np.array([[0.1], [-2.0], [3.0]])),
        (BINARY, np.array([1, 1]), np.array([[0.1, 0.3], [2.0, -1.0]])),
        (MULTI, np.array([2, 2]), np.log(MULTI_P[:2])),
    ],
)
def test_single_class_y_true_gives_none_roc_auc(task, y, outputs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(task, y, outputs)
    assert m["roc_auc"] is None
    assert len(m["confusion_matrix"]) == task.n_classes
    _assert_plain_json(m)


def test_binary_without_positives_has_no_pr_auc():
    m = compute_metrics(BINARY, np.array([0, 0]), np.array([[1.0], [-1.0]]))
    assert m["pr_auc"] is None
    assert m["accuracy"] == pytest.approx(0.5)


def test_regression_maps_back_to_original_units():
    task = TaskInfo(target="price", task="regression", target_mean=10.0, target_std=2.0)
    y_std = np.array([0.0, 1.0, -1.0])  # 10, 12, 8
    outputs = np.array([[0.5], [1.0], [-2.0]])  # 11, 12, 6 → errors 1, 0, -2
    m = compute_metrics(task, y_std, outputs)
    assert m["mse"] == pytest.approx(5 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert m["mae"] == pytest.approx(1.0)
    assert m["r2"] == pytest.approx(1 - 5 / 8)  # total sum of squares around 10 is 8
    assert set(m) == {"mse", "rmse", "mae", "r2"}
    _assert_plain_json(m)


def test_regression_single_example_has_no_r2():
    task = TaskInfo(target="price", task="regression")
    m = compute_metrics(task, np.array([0.5]), np.array([0.0]))
    assert m["r2"] is None
    assert m["mae"] == pytest.approx(0.5)


def test_empty_input_is_a_data_error():
    with pytest.raises(DataError, match="no examples"):
        compute_metrics(BINARY, np.array([], dtype=np.int64), np.zeros((0, 1)))


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="3 classes"):
        compute_metrics(MULTI, np.array([0, 1]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="y_true must be"):
        compute_metrics(BINARY, np.array([0, 1, 1]), np.zeros((2, 1)))


def test_probabilities_are_stable_for_extreme_logits():
    p = probabilities(np.array([[1000.0, -1000.0, 0.0], [-1e4, 1e4, 1e4]]), MULTI)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p, [[1, 0, 0], [0, 0.5, 0.5]], atol=1e-12)
    b = probabilities(np.array([[800.0], [-800.0], [0.0]]), BINARY)
    np.testing.assert_allclose(b, [[0, 1], [1, 0], [0.5, 0.5]], atol=1e-12)
    np.testing.assert_allclose(b.sum(axis=1), 1.0)


def test_probabilities_reject_regression():
    with pytest.raises(ValueError, match="classification"):
        probabilities(np.zeros((2, 1)), TaskInfo(target="y", task="regression"))


def test_evaluate_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, foundry.evaluation; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
