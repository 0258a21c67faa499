"""Run directories read back: `foundry runs list` and `foundry runs compare`.

Every training run writes one folder (`foundry.pipeline.run_directory`:
`<output_dir>/<name>-<UTC time>`) holding `config.json` (the resolved config),
`metrics.jsonl` (one line per epoch), `metrics.json` (final) and `COMPLETED` (the registry
reference) once registered. A run is found by its folder, by its folder's name under the
folders searched, or by a model reference (the registry records each version's run).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from foundry.errors import ConfigError, ModelError
from foundry.tracking import flatten, numeric

_KEY_METRICS = ("accuracy", "rmse", "perplexity", "ndcg", "recall", "auc")


@dataclass(frozen=True)
class RunInfo:
    """One run directory as `foundry runs` shows it."""

    path: Path
    name: str
    """The model name in its config."""
    model_type: str
    started: datetime
    """When the run started (its config.json was written), UTC."""
    model_ref: str | None
    """The registry reference it produced; None while unfinished (or a tune trial)."""
    epochs: int
    """Epochs (gbm: rounds) recorded in metrics.jsonl."""
    config: dict[str, str] = field(repr=False)
    """The resolved config, flattened (`train.optimizer.lr`: "0.001")."""
    metrics: dict[str, float] = field(repr=False)
    """The final metrics' numbers, flattened; {} while unfinished."""

    @property
    def status(self) -> str:
        if self.model_ref:
            return "registered"
        return "finished" if (self.path / "COMPLETED").exists() else "unfinished"

    def key_metric(self) -> tuple[str, float] | None:
        for key in _KEY_METRICS:
            if key in self.metrics:
                return key, self.metrics[key]
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.path.name,
            "path": str(self.path),
            "name": self.name,
            "model_type": self.model_type,
            "started": self.started.isoformat(),
            "status": self.status,
            "model": self.model_ref,
            "epochs": self.epochs,
            "config": self.config,
            "metrics": self.metrics,
        }


def is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def read_run(path: str | Path) -> RunInfo:
    """The run in folder `path`; ConfigError naming the file when it is not a run."""
    path = Path(path).expanduser().resolve()
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path} is not a run directory: cannot read {config_file} ({exc})",
            hint="`foundry runs list` shows the runs it finds",
        ) from None
    metrics: dict[str, Any] = {}
    if (path / "metrics.json").is_file():
        try:
            metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        except ValueError:
            metrics = {}
    epochs = 0
    if (path / "metrics.jsonl").is_file():
        with open(path / "metrics.jsonl", encoding="utf-8") as f:
            epochs = sum(1 for line in f if line.strip())
    ref = None
    if (path / "COMPLETED").is_file():
        done = (path / "COMPLETED").read_text(encoding="utf-8").strip()
        ref = None if done.startswith("unregistered") else done or None
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    return RunInfo(
        path=path,
        name=str(config.get("name", path.name)),
        model_type=str(model.get("type", "?")),
        started=datetime.fromtimestamp(config_file.stat().st_mtime, timezone.utc),
        model_ref=ref,
        epochs=epochs,
        config=flatten(config),
        metrics=numeric(metrics) if isinstance(metrics, dict) else {},
    )


def find_runs(folders: Iterable[Path], registry_runs: Iterable[Path] = ()) -> list[RunInfo]:
    """Every run directory directly under `folders`, plus `registry_runs` (the run folders
    the registry recorded), newest first; each folder once."""
    seen: dict[Path, None] = {}
    for folder in folders:
        folder = Path(folder).expanduser()
        if folder.is_dir():
            for child in folder.iterdir():
                if child.is_dir() and is_run_dir(child):
                    seen[child.resolve()] = None
    for path in registry_runs:
        if is_run_dir(Path(path)):
            seen[Path(path).resolve()] = None
    runs = [read_run(p) for p in seen]
    return sorted(runs, key=lambda r: (r.started, r.path.name), reverse=True)


def resolve_run(spec: str, folders: Iterable[Path], registry: Any) -> RunInfo:
    """A run by folder path, by folder name under `folders`, or by a model reference
    whose version the registry recorded a run for."""
    path = Path(spec).expanduser()
    if is_run_dir(path):
        return read_run(path)
    for folder in folders:
        if is_run_dir(Path(folder) / spec):
            return read_run(Path(folder) / spec)
    try:
        record = registry.resolve(spec)
    except ModelError:
        record = None
    if record is not None and record.run_dir is not None and is_run_dir(record.run_dir):
        return read_run(record.run_dir)
    where = ", ".join(str(f) for f in folders)
    raise ConfigError(
        f"no run {spec!r}: not a run directory, not a run under {where}, and not a "
        "registered model with a recorded run",
        hint="give a run folder, its name (`foundry runs list`), or a model like adult:3",
    )


def differing_keys(runs: list[RunInfo]) -> list[str]:
    """Config keys whose value is not the same in every run (missing counts as a value)."""
    keys = sorted({k for r in runs for k in r.config})
    return [k for k in keys if len({r.config.get(k) for r in runs}) > 1]
