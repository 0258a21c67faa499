from __future__ import annotations

import json
import math

import pytest

from foundry.training import EarlyStopping
from foundry.training.early_stopping import resolve_mode


@pytest.mark.parametrize(
    ("metric", "mode"),
    [
        ("val_loss", "min"),
        ("train_loss", "min"),
        ("val_log_loss", "min"),
        ("val_rmse", "min"),
        ("val_mae", "min"),
        ("val_error", "min"),
        ("val_accuracy", "max"),
        ("val_roc_auc", "max"),
        ("val_r2", "max"),
    ],
)
def test_auto_mode(metric, mode):
    assert resolve_mode(metric) == mode
    assert EarlyStopping(metric).mode == mode


def test_stops_after_patience_epochs_without_improvement():
    stopper = EarlyStopping("val_loss", patience=2)
    assert stopper.update(1.0)
    assert stopper.update(0.5)
    assert not stopper.update(0.6)
    assert not stopper.should_stop
    assert not stopper.update(0.5)  # equal is not better
    assert stopper.should_stop
    assert stopper.best == 0.5


def test_max_mode_and_min_delta():
    stopper = EarlyStopping("val_accuracy", patience=3, min_delta=0.05)
    assert stopper.update(0.70)
    assert not stopper.update(0.74)  # within min_delta
    assert stopper.update(0.80)
    assert stopper.bad_epochs == 0


def test_nan_never_improves_and_patience_none_never_stops():
    stopper = EarlyStopping("val_loss", patience=None)
    assert not stopper.update(math.nan)
    assert stopper.best is None
    assert stopper.update(3.0)
    for _ in range(50):
        stopper.update(4.0)
    assert not stopper.should_stop


def test_state_round_trips_through_json():
    stopper = EarlyStopping("val_loss", patience=3)
    for value in (1.0, 0.8, 0.9):
        stopper.update(value)
    state = json.loads(json.dumps(stopper.state_dict()))
    restored = EarlyStopping("val_loss", patience=3)
    restored.load_state_dict(state)
    assert (restored.best, restored.bad_epochs) == (0.8, 1)
    assert restored.update(0.9) is stopper.update(0.9)
    assert restored.state_dict() == stopper.state_dict()
