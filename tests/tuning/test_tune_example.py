"""examples/penguins_tune.yaml searches as written (with a smaller budget here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from foundry.tuning import tune

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.slow
def test_the_penguins_example_tunes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_data", EXAMPLES / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["penguins"])

    result = tune(
        EXAMPLES / "penguins_tune.yaml",
        ["train.epochs=2", f"output_dir={tmp_path}"],
        n_trials=2,
        quiet=True,
    )
    assert (result.metric, result.direction) == ("val_accuracy", "maximize")
    assert len(result.trials) == 2 and result.model_ref == "penguins:1"
    best = yaml.safe_load(result.best_config.read_text())
    assert set(result.best_params) == {
        "train.optimizer.lr",
        "train.optimizer.weight_decay",
        "train.batch_size",
        "model.layers",
        "model.dropout",
    }
    assert best["model"]["layers"] == result.best_params["model.layers"]
    # best.yaml lives in the tune folder; its data path still finds examples/data
    assert (result.best_config.parent / best["data"]["path"]).resolve() == (
        EXAMPLES / "data" / "penguins.csv"
    )
