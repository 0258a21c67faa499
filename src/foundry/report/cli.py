"""The `foundry report` command (registered in `foundry.cli`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def report(
    model: str = typer.Argument(
        ..., help="Model reference (name, name:3, name:latest, name:compressed) or a "
        "training run directory (output_dir/NAME-TIME)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o",
        help="HTML file to write [NAME-VERSION-report.html in the run directory, else here].",
    ),
    data: Path | None = typer.Option(
        None, "--data", "-d",
        help="Labelled file to draw the confusion matrix, ROC / PR curves and residuals "
        "from [the model's evaluation split].",
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Print only the report's path: no notes on stderr."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print path, size, sections and omitted sections as JSON."
    ),
) -> None:
    """Write one self-contained HTML report of MODEL: curves, metrics, confusion matrix,
    ROC / PR, calibration, fairness, feature importance, compression and cost."""
    from foundry.progress import silenced
    from foundry.report import write_report

    with silenced(quiet or json_out):
        result = write_report(model, output, data=data)
    if json_out:
        typer.echo(json.dumps({
            "path": str(result.path),
            "size_bytes": result.size_bytes,
            "sections": list(result.sections),
            "omitted": dict(result.omitted),
        }))
        return
    if quiet:
        typer.echo(str(result.path))
        return
    for section, reason in result.omitted.items():
        typer.echo(f"{section}: not in the report ({reason})", err=True)
    typer.echo(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, "
               f"{len(result.sections)} sections)")
