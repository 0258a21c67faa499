"""The parts of foundry.json and of the model card that every family writes the same way."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from typing import Any

from foundry.config import dump_config
from foundry.config.schema import FoundryConfig

__all__ = ["card_header", "data_section", "provenance", "table_card", "training_section"]


def provenance(cfg: FoundryConfig, **versions: str) -> dict[str, Any]:
    """format_version, the config, library versions (foundry, torch, python and the
    family's own: `transformers=...`) and the creation time."""
    import torch

    from foundry.version import __version__

    return {
        "format_version": 1,
        "config": dump_config(cfg),
        "versions": {
            "foundry": __version__,
            "torch": torch.__version__,
            **versions,
            "python": platform.python_version(),
        },
        "created_at": datetime.now(timezone.utc).isoformat(),
    }


def data_section(run: Any, splits: Any) -> dict[str, Any]:
    """manifest["data"] of a model trained on rows split three ways: the data path, the
    rows per split, and where relative data paths start (`run.loaded.base_dir`):
    `foundry compress` reads the splits again."""
    return {
        "path": run.config.data.path,
        "rows": splits.rows,  # of the whole table when streamed (not of its samples)
        "base_dir": str(run.loaded.base_dir),
    }


def card_header(cfg: FoundryConfig) -> list[str]:
    """A model card's first lines: the name, the description, and the `## Data` heading
    whose lines the family writes next."""
    return [
        f"# {cfg.name}",
        "",
        cfg.description or "_No description given (set `description` in the config)._",
        "",
        "## Data",
    ]


def training_section(fitted: Any) -> dict[str, Any]:
    """manifest["training"] from a `FitResult`: what the report, the card and `foundry
    cost` read (epochs, best epoch, seconds, whether it stopped early)."""
    return {
        "best_epoch": fitted.best_epoch,
        "epochs_run": fitted.epochs_run,
        "seconds": round(fitted.seconds, 3),
        "stopped_early": fitted.stopped_early,
        "best_metrics": fitted.best_metrics,
    }


def table_card(cfg: FoundryConfig, manifest: dict[str, Any], metrics: dict[str, Any]) -> str:
    """A short human-readable card for a model over table columns (neural networks,
    Hugging Face classifiers); a registered package's card is rendered from the manifest
    (`evaluation.card`), this one goes into unregistered (tuning trial) packages."""
    rows = manifest["data"]["rows"]
    lines = [
        *card_header(cfg),
        f"- source: `{cfg.data.path}`",
        f"- fingerprint: `{manifest['fingerprint']}`",
        f"- rows: train {rows['train']}, val {rows['val']}, test {rows['test']}",
        f"- target: `{manifest['features']['target']}` ({manifest['task']['task']})",
        "- inputs: "
        + ", ".join(f"{f['name']} ({f['type']})" for f in manifest["features"]["inputs"]),
        "",
        "## Model",
        f"- architecture: `{cfg.model.type}`",
        f"- trained {manifest['training']['epochs_run']} epochs "
        f"(best {manifest['training']['best_epoch']}) in {manifest['training']['seconds']:.1f} s",
        "",
        f"## Metrics ({cfg.evaluate.split} split)",
    ]
    for key, value in metrics.items():
        if isinstance(value, float):
            lines.append(f"- {key}: {value:.4f}")
    return "\n".join(lines) + "\n"
