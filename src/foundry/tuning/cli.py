"""`foundry tune CONFIG`: a thin wrapper over `foundry.tuning.tune`.

Heavy imports (optuna, torch) happen inside the command so `foundry --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from foundry.tuning.workers import STORAGE_ENV

__all__ = ["tune_command"]


def tune_command(
    config: Path = typer.Argument(..., help="Config YAML with a tune: section."),
    overrides: list[str] | None = typer.Argument(
        None, help="Overrides like train.epochs=10 tune.sampler=random."
    ),
    trials: int | None = typer.Option(
        None, "--trials", "-n", min=1, help="Trials to run [tune.n_trials]."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0.001, help="Time budget in seconds [tune.timeout]."
    ),
    jobs: int | None = typer.Option(
        None, "--jobs", "-j", min=1, help="Worker processes on this machine [tune.n_jobs]."
    ),
    storage: str | None = typer.Option(
        None,
        "--storage",
        envvar=STORAGE_ENV,
        help="Optuna storage URL shared by every process, e.g. postgresql://user:pass@host/db "
        "[tune.storage; default: a SQLite file in the tune output folder].",
    ),
    study_name: str | None = typer.Option(
        None, "--study-name", help="Study to create or join [tune.study_name; the config name]."
    ),
    worker: bool = typer.Option(
        False,
        "--worker",
        help="Only run trials in the shared study: no table, best config or registration "
        "(extra processes and machines).",
    ),
    worker_index: int = typer.Option(
        0, "--worker-index", min=0, help="Offsets the sampler seed; give each machine its own."
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="torch CPU threads for this process's trials."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the result."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Search the hyper-parameters CONFIG's tune: section lists; print the trials, write
    the best config and register its model."""
    from foundry.progress import silenced
    from foundry.tuning import tune

    with silenced(quiet or json_out):
        result = tune(
            config,
            overrides or [],
            n_trials=trials,
            timeout=timeout,
            jobs=jobs,
            storage=storage,
            study_name=study_name,
            worker=worker,
            worker_index=worker_index,
            threads=threads,
            quiet=quiet or json_out,
        )
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "study": result.study_name,
                    "storage": result.storage,
                    "metric": result.metric,
                    "direction": result.direction,
                    "best_trial": result.best_trial,
                    "best_value": result.best_value,
                    "best_params": result.best_params,
                    "best_config": str(result.best_config) if result.best_config else None,
                    "model": result.model_ref,
                    "output_dir": str(result.output_dir),
                    "trials": result.trials,
                },
                default=str,
            )
        )
        return
    if worker:
        done = sum(1 for t in result.trials if t["state"] != "RUNNING")
        typer.echo(f"worker done; study '{result.study_name}' has {done} finished trials")
        return
    from foundry.tuning.results import markdown_table

    typer.echo(markdown_table(result.trials, _keys(result)))
    if result.model_ref:
        typer.echo(
            f"best: trial {result.best_trial} ({result.metric} {result.best_value:.6g})  "
            f"{result.model_ref}  config: {result.best_config}"
        )
    typer.echo(f"results: {result.output_dir}")


def _keys(result) -> list[str]:
    keys: list[str] = []
    for row in result.trials:
        keys += [k for k in row["params"] if k not in keys]
    return keys
