"""Trials in several processes: `--jobs`, and separate `foundry tune` commands sharing one
study through its storage (what machines sharing a PostgreSQL URL do)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest

from foundry.registry import Registry
from foundry.tuning import tune

LR = {"type": "log_float", "low": 1e-3, "high": 1e-1}
SECTION = {"sampler": "random", "pruner": {"type": "none"}, "params": {"train.optimizer.lr": LR}}


def foundry_tune(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "foundry", "tune", *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out)


@pytest.mark.slow
def test_two_tune_commands_started_at_once_share_one_study(write_config, tmp_path):
    path = write_config(train={"epochs": 1}, tune=SECTION)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"  # a fresh database: both create tables
    procs = [foundry_tune(str(path), "--trials", "2", "--storage", storage) for _ in range(2)]
    results = [finish(p) for p in procs]

    summaries = optuna.get_all_study_summaries(storage)
    assert [s.study_name for s in summaries] == ["iris"]
    trials = optuna.load_study(study_name="iris", storage=storage).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # 2 + 2, no number twice
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # the trial-seeded random sampler: the two processes did not draw the same values
    assert len({t.params["train.optimizer.lr"] for t in trials}) == 4
    # whichever finished last saw all four trials; both registered a best model
    assert max(len(r["trials"]) for r in results) == 4
    assert {r["model"] for r in results} <= {r.ref for r in Registry().versions("iris")}


@pytest.mark.slow
def test_jobs_run_trials_in_worker_processes(write_config):
    path = write_config(train={"epochs": 1}, tune={**SECTION, "n_trials": 4})
    result = finish(foundry_tune(str(path), "--jobs", "2"))

    assert [t["trial"] for t in result["trials"]] == [0, 1, 2, 3]
    assert {t["state"] for t in result["trials"]} == {"COMPLETE"}
    assert result["model"] == "iris:1"
    # every trial's run directory is in the one tune folder, whichever process ran it
    run_dirs = {t["run_dir"] for t in result["trials"]}
    assert len(run_dirs) == 4
    assert all(d.startswith(result["output_dir"]) for d in run_dirs)


@pytest.mark.slow
def test_a_worker_elsewhere_joins_the_study_through_postgresql(write_config, postgres_url):
    """What a second machine does: `foundry tune --worker` with the storage URL in its
    environment, while the first runs the search and writes the results."""
    path = write_config(train={"epochs": 1}, tune=SECTION)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "foundry",
            "tune",
            str(path),
            "--worker",
            "--worker-index",
            "1",
            "--trials",
            "2",
            "--quiet",
        ],
        # libpq's plain form, as users copy it: foundry reads it as psycopg 3
        env={**os.environ, "FOUNDRY_TUNE_STORAGE": postgres_url.replace("+psycopg", "", 1)},
        stderr=subprocess.PIPE,
        text=True,
    )
    result = tune(path, n_trials=2, storage=postgres_url, quiet=True)
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err

    trials = optuna.load_study(study_name="iris", storage=postgres_url).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert result.storage.startswith("postgresql+psycopg://") and result.model_ref == "iris:1"
    assert "study.db" not in {p.name for p in result.output_dir.iterdir()}
