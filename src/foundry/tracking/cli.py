"""`foundry runs list` and `foundry runs compare RUN RUN...` (see foundry.tracking.runs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from foundry.errors import ConfigError

runs_app = typer.Typer(
    help="Training runs: list them, compare their configs and metrics.", no_args_is_help=True
)

_DIRS = typer.Option(
    None,
    "--dir",
    "-d",
    help="Folder holding run directories (repeatable) [./runs, the default output_dir]; "
    "the runs of registered models are found through the registry as well.",
)


def _folders(dirs: list[Path] | None) -> list[Path]:
    return list(dirs) if dirs else [Path("runs")]


def _registry_runs() -> list[Path]:
    from foundry.registry import Registry

    registry = Registry()
    return registry.run_dirs(m.name for m in registry.list_models())


@runs_app.command("list")
def runs_list(
    dirs: list[Path] | None = _DIRS,
    json_out: bool = typer.Option(False, "--json", help="Print the runs as JSON."),
) -> None:
    """Every run, newest first: model, type, status, epochs and the key metric."""
    from foundry.tracking.runs import find_runs

    runs = find_runs(_folders(dirs), _registry_runs())
    if json_out:
        typer.echo(
            json.dumps([{k: v for k, v in r.to_dict().items() if k != "config"} for r in runs])
        )
        return
    if not runs:
        typer.echo(
            f"no runs under {', '.join(map(str, _folders(dirs)))} and none recorded "
            "in the registry — run `foundry train CONFIG`"
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="runs")
    table.add_column("run", overflow="fold")  # the folder name, whole: compare takes it
    for column in ("model", "type", "started (UTC)", "status", "epochs", "key metric"):
        table.add_column(column)
    for r in runs:
        key = r.key_metric()
        table.add_row(
            r.path.name,
            r.model_ref or r.name,
            r.model_type,
            r.started.strftime("%Y-%m-%d %H:%M"),
            r.status,
            str(r.epochs),
            f"{key[0]} {key[1]:.4f}" if key else "",
        )
    Console().print(table)


@runs_app.command("compare")
def runs_compare(
    runs: list[str] = typer.Argument(
        ..., help="Two or more runs: a run folder, its name, or a model ref (adult:3)."
    ),
    dirs: list[Path] | None = _DIRS,
    all_keys: bool = typer.Option(
        False, "--all", help="Show every config key, not only those that differ."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Configs and final metrics of RUNS side by side; config keys that differ between
    them are highlighted (and the only ones shown without --all)."""
    from foundry.registry import Registry
    from foundry.tracking.runs import differing_keys, resolve_run

    if len(runs) < 2:
        raise ConfigError("give at least two runs to compare (`foundry runs list` shows them)")
    registry = Registry()
    found = [resolve_run(spec, _folders(dirs), registry) for spec in runs]
    differ = differing_keys(found)
    if json_out:
        typer.echo(json.dumps({"runs": [r.to_dict() for r in found], "differing": differ}))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    headers = [r.model_ref or r.path.name for r in found]
    config = Table(title=f"config: {len(differ)} of {len(found[0].config)} keys differ")
    config.add_column("key")
    for header in headers:
        config.add_column(header)
    keys = sorted({k for r in found for k in r.config}) if all_keys else differ
    for key in keys:
        style = "bold yellow" if key in differ else None
        config.add_row(key, *(r.config.get(key, "—") for r in found), style=style)
    console.print(config)
    metrics = Table(title="final metrics")
    metrics.add_column("metric")
    for header in headers:
        metrics.add_column(header, justify="right")
    for key in sorted({k for r in found for k in r.metrics}):
        metrics.add_row(key, *(f"{r.metrics[key]:.4f}" if key in r.metrics else "—" for r in found))
    console.print(metrics)
