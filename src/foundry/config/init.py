"""`foundry init DATA --target COL`: a starting config with inferred feature types."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from foundry.errors import ConfigError


def init_config(
    data: str | Path,
    target: str,
    *,
    output: str | Path = "config.yaml",
    name: str | None = None,
    model: str | None = None,
    force: bool = False,
) -> Path:
    """Inspect `data`, infer every column's type and write a config that trains as is."""
    from foundry.config.schema import FeaturesConfig
    from foundry.data import infer_features, read_table

    data_path, out_path = Path(data), Path(output)
    if out_path.exists() and not force:
        raise ConfigError(f"{out_path} already exists; pass --force to overwrite it")
    df = read_table(data_path)
    resolved = infer_features(df, FeaturesConfig(target=target))
    types = {f.type for f in resolved.inputs}
    if model is None:
        model = "cnn" if "image" in types else "text" if "text" in types else "mlp"
    if name is None:
        stem = data_path.stem if data_path.is_file() else data_path.name
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", stem).strip("-.") or "model"
    rel = os.path.relpath(data_path.resolve(), out_path.resolve().parent)
    config = {
        "name": name,
        "data": {"path": rel, "split": {"train": 0.8, "val": 0.1, "test": 0.1}},
        "features": {
            "target": resolved.target,
            "target_type": resolved.target_type,
            "inputs": [{"name": f.name, "type": f.type} for f in resolved.inputs],
        },
        "model": {"type": model},
        # Measured by benchmarks/init_quality.py: 30 epochs undertrained small tables (the
        # best epoch was the last one); 100 with patience 10 still stops early on big ones.
        "train": {
            "epochs": 100,
            "batch_size": 128,
            "optimizer": {"type": "adam", "lr": 0.001},
            "early_stopping": {"metric": "val_loss", "patience": 10},
        },
    }
    header = (
        f"# Written by `foundry init {data} --target {target}`.\n"
        "# Every key is documented in docs/CONFIG.md (`foundry config-docs`).\n"
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return out_path
