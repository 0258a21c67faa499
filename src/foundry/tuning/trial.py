"""One trial: the config with the trial's params, trained by `foundry.pipeline.train` with
a per-epoch hook that reports to Optuna and stops the run when the pruner says so."""

from __future__ import annotations

import math
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundry.console import Reporter
from foundry.errors import ConfigError, TrainError

if TYPE_CHECKING:
    from foundry.tuning.study import Plan

__all__ = ["run_trial", "trial_line"]


def run_trial(trial: Any, plan: Plan, say: Reporter) -> float:
    """Train one trial's config; its value is the metric at the epoch whose weights
    are kept."""
    import optuna

    from foundry.pipeline import train
    from foundry.tuning.space import suggest, trial_config

    values = suggest(trial, plan.settings.params)
    loaded = trial_config(plan.raw, values, plan.base_dir)
    run_dir = plan.output_dir / "trials" / f"trial-{trial.number:04d}"
    if run_dir.exists():  # left by a deleted study of the same name: numbers restart at 0
        shutil.rmtree(run_dir)
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("host", socket.gethostname())
    try:
        result = train(
            loaded,
            run_dir=run_dir,
            progress=False,
            quiet=True,
            on_epoch_end=_epoch_reporter(trial, plan.metric),
            register=False,
        )
    except optuna.TrialPruned:
        _tidy(run_dir, marker="PRUNED")
        raise
    except TrainError as exc:  # diverged: this trial fails, the search goes on
        _tidy(run_dir, marker="FAILED")
        trial.set_user_attr("error", str(exc))
        say.warn(f"trial {trial.number}: {exc}")
        return math.nan  # Optuna records a NaN value as FAIL
    except BaseException:
        _tidy(run_dir, marker="FAILED")
        raise
    _tidy(run_dir)
    trial.set_user_attr("best_epoch", result.best_epoch)
    trial.set_user_attr("package", str(result.package_path))
    return float(result.history[result.best_epoch - 1][plan.metric])


def _epoch_reporter(trial: Any, metric: str):
    """`on_epoch_end` hook: report the epoch's metric, stop the trial if it is pruned."""
    import optuna

    def on_epoch_end(record: dict[str, Any]) -> None:
        if metric not in record:
            logged = [k for k in record if k not in ("epoch", "lr", "seconds")]
            raise ConfigError(
                f"tune.metric: '{metric}' is not logged per epoch; logged: {', '.join(logged)}"
            )
        value = float(record[metric])
        trial.report(value, step=record["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {record['epoch']} ({metric} {value:.4g})")

    return on_epoch_end


def _tidy(run_dir: Path, marker: str | None = None) -> None:
    """A trial keeps config.json, metrics.jsonl and its package (or a PRUNED / FAILED
    marker); its checkpoint only served resuming, which trials never do."""
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    if marker is not None and run_dir.is_dir():
        (run_dir / marker).write_text(marker.lower() + "\n")


def trial_line(trial: Any, plan: Plan) -> str:
    from foundry.tuning.space import config_values

    params = ", ".join(
        f"{k}={v}" for k, v in config_values(plan.settings.params, trial.params).items()
    )
    seconds = trial.duration.total_seconds() if trial.duration is not None else 0.0
    state = trial.state.name.lower()
    value = f" {plan.metric}={trial.value:.4g}" if trial.value is not None else ""
    if state == "pruned" and trial.last_step is not None:
        value = f" at epoch {trial.last_step}"
    return f"trial {trial.number}: {state}{value}  {params}  ({seconds:.1f} s)"
