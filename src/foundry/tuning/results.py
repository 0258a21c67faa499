"""What a study leaves behind: the trials table (CSV, JSON, Markdown) and the best config.

<output_dir>/tune-<study>/
  study.db            the Optuna study (SQLite; absent with a tune.storage URL)
  trials.csv          one row per trial: trial, state, value, seconds, <params...>
  trials.json         the same rows plus the study's name, metric and direction
  trials.md           the same table in Markdown (also printed)
  best.yaml           the config with the best params applied, no tune section
  trials/trial-0007/  each trial's run: config.json, metrics.jsonl, metrics.json,
                      package/ (weights + manifest, unregistered) or PRUNED
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import optuna
import yaml

from foundry.config.schema import ParamSpec
from foundry.tuning.space import config_values

__all__ = ["trial_rows", "write_config", "write_tables"]

_PATH_KEYS = (("data", "path"), ("data", "val_path"), ("data", "test_path"), ("compress", "data"))
"""Config values that are paths relative to the config file's folder."""


def trial_rows(
    trials: list[optuna.trial.FrozenTrial], params: dict[str, ParamSpec]
) -> list[dict[str, Any]]:
    """One plain row per trial, ordered by trial number."""
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        seconds = t.duration.total_seconds() if t.duration is not None else None
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "value": t.value,
                "seconds": round(seconds, 3) if seconds is not None else None,
                "params": config_values(params, t.params),
                "best_epoch": t.user_attrs.get("best_epoch"),
                "run_dir": t.user_attrs.get("run_dir"),
                "error": t.user_attrs.get("error"),
            }
        )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def markdown_table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """| trial | state | value | seconds | <param> ... |"""
    head = ["trial", "state", "value", "seconds", *keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        params = [r["params"].get(k) for k in keys]
        cells = [r["trial"], r["state"], r["value"], r["seconds"], *params]
        lines.append("| " + " | ".join(_cell(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(
    out_dir: Path, rows: list[dict[str, Any]], keys: list[str], study: dict[str, Any]
) -> None:
    """Write trials.csv / trials.json / trials.md into `out_dir`."""
    from foundry.registry.package import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "trials.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", "state", "value", "seconds", *keys, "run_dir"])
        for r in rows:
            cells = [r["trial"], r["state"], r["value"], r["seconds"]]
            writer.writerow(
                [
                    *(_cell(c) for c in cells),
                    *(_cell(r["params"].get(k)) for k in keys),
                    r["run_dir"] or "",
                ]
            )
    write_json(out_dir / "trials.json", {**study, "trials": rows})
    title = f"# Study `{study['study_name']}`: {study['direction']} {study['metric']}\n\n"
    (out_dir / "trials.md").write_text(title + markdown_table(rows, keys))


def write_config(path: Path, raw: dict[str, Any], base_dir: Path, header: str) -> Path:
    """Write `raw` (the best params applied, no tune section) as YAML at `path`, with
    relative data paths and `output_dir` rewritten so they still point where the
    original config's did."""
    out = json.loads(json.dumps(raw))  # a plain copy (tuples → lists) for yaml.safe_dump
    here = path.parent.resolve()

    def rebase(value: str) -> str:
        p = Path(value).expanduser()
        return value if p.is_absolute() else os.path.relpath(base_dir / p, here)

    for section, key in _PATH_KEYS:
        node = out.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            node[key] = rebase(node[key])
    out["output_dir"] = rebase(str(out.get("output_dir") or "runs"))
    path.parent.mkdir(parents=True, exist_ok=True)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(comment + yaml.safe_dump(out, sort_keys=False))
    return path
