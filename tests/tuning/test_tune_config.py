"""The tune: section: what a bad search space says, and how params map to config values.

No training here: every check runs before the first trial.
"""

from __future__ import annotations

import optuna
import pytest

from foundry.config import load_config
from foundry.config.schema import ParamSpec
from foundry.errors import ConfigError
from foundry.tuning import tune
from foundry.tuning.space import (
    TrialSeededRandomSampler,
    apply_params,
    config_values,
    grid_space,
)
from foundry.tuning.workers import split_trials

BASE = {"data": {"path": "train.csv"}, "features": {"target": "y"}}
LR = {"type": "log_float", "low": 1e-4, "high": 1e-1}


def load_tune(tune_section, **sections):
    return load_config({**BASE, **sections, "tune": tune_section}).config


def test_a_valid_section_loads_with_documented_defaults():
    cfg = load_tune(
        {
            "params": {
                "train.optimizer.lr": LR,
                "model.layers": {"type": "choice", "values": [[64], [128, 64]]},
            }
        }
    )
    assert cfg.tune.sampler == "tpe"
    assert cfg.tune.pruner.type == "median"
    assert cfg.tune.n_trials == 20 and cfg.tune.n_jobs == 1
    assert cfg.tune.params["model.layers"].values == [[64], [128, 64]]
    # configs without the section are unchanged
    assert load_config(BASE).config.tune is None


@pytest.mark.parametrize(
    ("tune_section", "expected"),
    [
        (
            {"params": {"train.optimizer.lrr": LR}},
            "tune.params.train.optimizer.lrr: not a config key; did you mean 'train.optimizer.lr'?",
        ),
        (
            {"params": {"model.layrs": {"type": "choice", "values": [[8]]}}},
            "tune.params.model.layrs: not a config key; did you mean 'model.layers'?",
        ),
        (
            {"params": {"model.layers": {"type": "choice", "values": []}}},
            "tune.params.model.layers: type choice needs a non-empty `values` list",
        ),
        (
            {"params": {"train.batch_size": {"type": "int", "low": 64, "high": 32}}},
            "tune.params.train.batch_size: low must be < high, got low=64 and high=32",
        ),
        (
            {"params": {"train.optimizer.lr": {"type": "log_float", "low": 0, "high": 0.1}}},
            "tune.params.train.optimizer.lr: log_float needs low > 0, got low=0",
        ),
        (
            {"sampler": "grid", "params": {"train.optimizer.lr": LR}},
            "the grid sampler searches choice and int params only; "
            "tune.params.train.optimizer.lr is log_float",
        ),
        (
            {"sampler": "bayes", "params": {"train.optimizer.lr": LR}},
            "tune.sampler: Input should be 'tpe', 'random' or 'grid'",
        ),
        (
            {"params": {"train.optimizer": LR}},
            "tune.params.train.optimizer: 'train.optimizer' is a section",
        ),
        (
            {"params": {"train.batch_size": {"type": "int", "low": 1.5, "high": 8}}},
            "tune.params.train.batch_size: type int needs whole numbers",
        ),
        ({"params": {}}, "tune.params: Dictionary should have at least 1 item"),
        (
            {"n_trials": None, "params": {"train.optimizer.lr": LR}},
            "n_trials or timeout must be set",
        ),
    ],
)
def test_bad_search_spaces_name_the_key(tune_section, expected):
    with pytest.raises(ConfigError) as err:
        load_tune(tune_section)
    assert expected in str(err.value)


def test_model_keys_are_checked_against_the_configured_architecture():
    conv = {"type": "choice", "values": [[{"filters": 8}]]}
    assert load_tune({"params": {"model.conv": conv}}, model={"type": "cnn"})
    with pytest.raises(ConfigError, match="tune.params.model.conv: not a config key"):
        load_tune({"params": {"model.conv": conv}}, model={"type": "mlp"})


def test_a_value_the_config_rejects_fails_before_any_trial(write_config):
    path = write_config(
        tune={"params": {"train.batch_size": {"type": "choice", "values": [32, 0]}}}
    )
    with pytest.raises(ConfigError) as err:
        tune(path, quiet=True)
    message = str(err.value)
    assert message.startswith("tune.params.train.batch_size: the value 0 makes an invalid config")
    assert "train.batch_size: Input should be greater than or equal to 1" in message
    assert not (path.parent / "runs").exists()  # nothing ran, nothing was written


def test_a_config_without_a_tune_section_is_refused(write_config):
    with pytest.raises(ConfigError, match="no tune: section"):
        tune(write_config(), quiet=True)


def test_an_embedding_package_is_refused_before_any_trial(write_config):
    path = write_config(
        tune={"params": {"train.optimizer.lr": LR}},
        model={"type": "hf", "name_or_path": "no/such-model", "task": "embedding"},
    )
    with pytest.raises(ConfigError, match="model.task embedding trains nothing"):
        tune(path, quiet=True)
    assert not (path.parent / "runs").exists()  # refused before a study was opened


def test_params_apply_through_the_override_machinery():
    raw = {**BASE, "train": {"optimizer": {"lr": 0.1}}}
    out = apply_params(
        raw, {"train.optimizer.lr": 1e-5, "model.layers": [128, 64], "train.optimizer.type": "sgd"}
    )
    assert out["train"]["optimizer"] == {"lr": 1e-5, "type": "sgd"}
    assert out["model"] == {"layers": [128, 64]}
    assert raw["train"]["optimizer"] == {"lr": 0.1}  # the caller's dict is untouched


def test_list_choices_round_trip_through_optuna():
    params = {
        "model.layers": ParamSpec(type="choice", values=[[64], [128, 64]]),
        "train.batch_size": ParamSpec(type="int", low=32, high=96, step=32),
        "model.dropout": ParamSpec(type="choice", values=[0.0, None]),
    }
    assert grid_space(params) == {
        "model.layers": ["[64]", "[128, 64]"],
        "train.batch_size": [32, 64, 96],
        "model.dropout": [0.0, None],
    }
    stored = {"model.layers": "[128, 64]", "train.batch_size": 64, "model.dropout": None}
    assert config_values(params, stored) == {
        "model.layers": [128, 64],
        "train.batch_size": 64,
        "model.dropout": None,
    }


def test_random_trials_depend_only_on_seed_and_trial_number():
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    def draws(seed, n):
        study = optuna.create_study(sampler=TrialSeededRandomSampler(seed))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)
        return [t.params["x"] for t in study.trials]

    assert draws(7, 4) == draws(7, 6)[:4]  # reproducible
    assert draws(7, 4) != draws(8, 4)
    assert len(set(draws(7, 8))) == 8


def test_trials_are_shared_out_between_workers():
    assert split_trials(10, 3) == [4, 3, 3]
    assert split_trials(1, 2) == [1, 0]
    assert split_trials(None, 2) == [None, None]


@pytest.mark.parametrize(
    ("model", "train", "epochs"),
    [
        ({"type": "mlp"}, {}, 20),  # foundry's default
        ({"type": "mlp"}, {"epochs": 7}, 7),
        ({"type": "hf", "name_or_path": "some/model"}, {}, 3),  # fine-tuning's default
        ({"type": "hf", "name_or_path": "some/model"}, {"epochs": 5}, 5),
    ],
)
def test_hyperband_budgets_count_the_epochs_a_trial_runs(model, train, epochs):
    from foundry.config.load import validate_config
    from foundry.tuning.study import trial_epochs

    raw = {"name": "t", "data": {"path": "d.csv"}, "features": {"target": "y"},
           "model": model, "train": train}  # fmt: skip
    assert trial_epochs(validate_config(raw, origin="test")) == epochs
