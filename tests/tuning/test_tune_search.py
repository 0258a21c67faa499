"""Real searches on iris (2-epoch MLP trials): samplers, pruners, outputs, registration."""

from __future__ import annotations

import csv
import json

import optuna
import pandas as pd
import pytest
import yaml

import foundry
from foundry.config import load_config
from foundry.errors import ConfigError
from foundry.registry import Registry
from foundry.tuning import tune

LR = {"type": "log_float", "low": 1e-3, "high": 1e-1}
LAYERS = {"type": "choice", "values": [[8], [32, 16]]}


def states(result):
    return [t["state"] for t in result.trials]


def test_random_search_writes_the_table_best_config_and_registers_the_best(write_config):
    path = write_config(
        tune={
            "sampler": "random",
            "n_trials": 3,
            "pruner": {"type": "none"},
            "params": {"train.optimizer.lr": LR, "model.layers": LAYERS},
        }
    )
    result = tune(path, quiet=True)

    assert [t["trial"] for t in result.trials] == [0, 1, 2]
    assert states(result) == ["COMPLETE"] * 3
    assert (result.metric, result.direction) == ("val_loss", "minimize")
    values = [t["value"] for t in result.trials]
    assert result.best_value == min(values)
    assert result.best_params == result.trials[values.index(min(values))]["params"]

    # the results table, three ways
    out = result.output_dir
    assert out == (path.parent / "runs" / "tune-iris").resolve()
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    assert set(rows[0]) >= {
        "trial",
        "state",
        "value",
        "seconds",
        "train.optimizer.lr",
        "model.layers",
    }
    assert json.loads((out / "trials.json").read_text())["trials"][0]["trial"] == 0
    assert "| trial | state | value | seconds |" in (out / "trials.md").read_text()

    # best.yaml: the whole config with the best params, no tune section, and it loads
    # from its own folder (the data path was rebased)
    best = yaml.safe_load(result.best_config.read_text())
    assert "tune" not in best
    assert best["train"]["optimizer"]["lr"] == result.best_params["train.optimizer.lr"]
    assert best["model"]["layers"] == result.best_params["model.layers"]
    assert best["train"]["epochs"] == 2  # untouched settings stay
    reloaded = load_config(result.best_config)
    assert reloaded.resolve(reloaded.config.data.path).resolve() == (path.parent / "iris.csv")

    # one registered model: the best trial's, with the tuning recorded
    registry = Registry()
    assert [r.ref for r in registry.versions("iris")] == [result.model_ref] == ["iris:1"]
    manifest = registry.load(result.model_ref).manifest
    assert manifest["tuning"]["trial"] == result.best_trial
    assert manifest["tuning"]["params"] == result.best_params
    assert manifest["config"]["model"]["layers"] == result.best_params["model.layers"]
    assert manifest["config"]["train"]["optimizer"]["lr"] == pytest.approx(
        result.best_params["train.optimizer.lr"]
    )
    assert manifest["config"]["tune"] is None
    rows = pd.read_csv(path.parent / "iris.csv").head(3)
    assert len(foundry.load(result.model_ref).predict(rows)) == 3


def test_tpe_runs_the_requested_trials_and_a_second_run_continues_the_study(write_config):
    path = write_config(
        tune={"sampler": "tpe", "n_trials": 2, "params": {"train.optimizer.lr": LR}}
    )
    first = tune(path, quiet=True)
    assert states(first) == ["COMPLETE"] * 2
    second = tune(path, n_trials=1, quiet=True)  # same study name and storage: joined
    assert [t["trial"] for t in second.trials] == [0, 1, 2]
    # the best trial is registered once, however many runs report it
    expected = 1 if second.best_trial == first.best_trial else 2
    assert len(Registry().versions("iris")) == expected


def test_grid_search_tries_every_point_once(write_config):
    path = write_config(
        tune={
            "sampler": "grid",
            "n_trials": None,  # until the grid is done
            "pruner": {"type": "none"},
            "params": {
                "model.layers": LAYERS,
                "train.batch_size": {"type": "int", "low": 32, "high": 64, "step": 32},
            },
        }
    )
    result = tune(path, quiet=True)
    points = {
        (json.dumps(t["params"]["model.layers"]), t["params"]["train.batch_size"])
        for t in result.trials
    }
    assert len(result.trials) == 4 and len(points) == 4
    assert states(result) == ["COMPLETE"] * 4


def test_the_median_pruner_stops_bad_trials_which_leave_no_model(write_config):
    def tune_lr(low, high, n_trials):
        section = {
            "sampler": "random",
            "pruner": {"type": "median", "startup_trials": 1},
            "params": {"train.optimizer.lr": {"type": "float", "low": low, "high": high}},
        }
        return tune(write_config(train={"epochs": 3}, tune=section), n_trials=n_trials, quiet=True)

    tune_lr(0.04, 0.06, 1)  # a good trial finishes first
    # then, in the same study, lr ~1e-6 barely moves the loss: at epoch 1 it is worse
    result = tune_lr(1e-6, 2e-6, 2)
    assert states(result) == ["COMPLETE", "PRUNED", "PRUNED"]
    assert result.best_params["train.optimizer.lr"] > 0.04
    for t in result.trials[1:]:
        run_dir = result.output_dir / "trials" / f"trial-{t['trial']:04d}"
        assert (run_dir / "PRUNED").is_file()
        assert not (run_dir / "package").exists() and not (run_dir / "checkpoint").exists()
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1  # epoch 1 only
        assert t["value"] > result.best_value  # its last reported (epoch 1) value
    assert len(Registry().versions("iris")) == 1  # only the best trial's model


def test_hyperband_accuracy_and_diverging_trials(write_config):
    """Hyperband budgets in epochs; a named metric is maximised; a trial whose training
    diverges is recorded as FAIL and the search goes on."""
    path = write_config(
        train={"epochs": 3, "optimizer": {"type": "sgd", "lr": 0.01}},
        tune={
            "sampler": "grid",
            "metric": "accuracy",
            "pruner": {"type": "hyperband", "min_epochs": 1},
            "params": {"train.optimizer.lr": {"type": "choice", "values": [0.05, 1e12]}},
        },
    )
    result = tune(path, quiet=True)
    assert (result.metric, result.direction) == ("val_accuracy", "maximize")
    by_lr = {t["params"]["train.optimizer.lr"]: t for t in result.trials}
    assert by_lr[1e12]["state"] == "FAIL"
    assert "diverged" in by_lr[1e12]["error"]
    assert by_lr[0.05]["state"] == "COMPLETE"
    assert result.best_params == {"train.optimizer.lr": 0.05}


def test_the_time_budget_stops_the_search(write_config):
    path = write_config(
        tune={"n_trials": None, "timeout": 0.01, "params": {"train.optimizer.lr": LR}}
    )
    result = tune(path, quiet=True)
    # the budget is checked between trials: the first one runs, then no other starts
    assert len(result.trials) == 1


def test_the_tune_command_prints_the_table(write_config, capsys):
    from foundry.cli import app

    path = write_config(tune={"sampler": "random", "params": {"train.optimizer.lr": LR}})
    with pytest.raises(SystemExit) as done:
        app(
            [
                "tune",
                str(path),
                "train.epochs=1",
                "--trials",
                "2",
                "--study-name",
                "cli",
                "--storage",
                f"sqlite:///{path.parent / 'elsewhere.db'}",
                "--quiet",
            ]
        )
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "| trial | state | value | seconds | train.optimizer.lr |" in out
    assert "iris:1" in out
    assert (path.parent / "runs" / "tune-cli" / "best.yaml").is_file()
    assert not (path.parent / "runs" / "tune-cli" / "study.db").exists()
    names = [
        s.study_name
        for s in optuna.get_all_study_summaries(f"sqlite:///{path.parent / 'elsewhere.db'}")
    ]
    assert names == ["cli"]


def test_a_changed_choice_list_on_an_existing_study_names_the_key(write_config):
    def section(values):
        return {"n_trials": 1, "params": {"model.layers": {"type": "choice", "values": values}}}

    tune(write_config(tune=section([[8], [16]])), quiet=True)
    with pytest.raises(ConfigError, match="tune.params.model.layers: study 'iris' in sqlite"):
        tune(write_config(tune=section([[8], [32]])), quiet=True)


def test_tpe_processes_sharing_a_study_and_a_seed_draw_different_trials(tmp_path):
    """Two samplers with one seed on one storage (two `foundry tune` processes started
    at once): each trial's draw follows its number, so no point is tried twice, and a
    trial number gets the same point whichever process runs it."""
    from foundry.tuning.space import TrialSeededTPESampler

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="s", storage=storage)

    def objective(trial: optuna.Trial) -> float:
        return (trial.suggest_float("x", -5, 5) - 1) ** 2 + trial.suggest_int("n", 1, 50)

    drawn: dict[int, tuple] = {}
    for _ in range(6):  # the two processes take turns, as they would when interleaved
        for process in range(2):
            study = optuna.load_study(
                study_name="s", storage=storage, sampler=TrialSeededTPESampler(7)
            )
            trial = study.ask()
            value = objective(trial)
            study.tell(trial, value)
            drawn[trial.number] = (trial.params["x"], trial.params["n"], process)
    points = [(x, n) for x, n, _ in drawn.values()]
    assert len(drawn) == 12 and len(set(points)) == 12

    again = optuna.create_study(sampler=TrialSeededTPESampler(7))
    first = again.ask()
    assert (first.suggest_float("x", -5, 5), first.suggest_int("n", 1, 50)) == points[0]
