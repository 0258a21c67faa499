"""`foundry init DATA --target COL`: a starting config with inferred feature types."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from foundry.console import Reporter
from foundry.errors import ConfigError


def init_config(
    data: str | Path,
    target: str | None,
    *,
    task: str | None = None,
    output: str | Path = "config.yaml",
    name: str | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    force: bool = False,
    say: Reporter | None = None,
) -> Path:
    """Inspect `data`, infer every column's type and write a config that trains as is.

    `pretrained` (a Hugging Face hub id or a local model directory) writes a fine-tuning
    config instead: `model: {type: hf}` on the data's one text column. Columns holding
    personal data and target leaks are left out of the inputs; `say` prints why (and
    the config says it in comments). `task="recommend"` writes a recommender config
    for an interactions table instead (foundry.recommend.init: no target)."""
    from foundry.data import read_table

    if task not in (None, "recommend"):
        raise ConfigError(f"--task {task} is not a task foundry init knows; the one there "
                          "is: recommend (leave --task out for a table with a target)")
    if task == "recommend":
        from foundry.recommend.init import init_recommend_config

        return init_recommend_config(data, output=output, name=name, force=force, say=say)
    if target is None:
        raise ConfigError("--target is required: the column to predict (or --task "
                          "recommend for an interactions table)")

    data_path, out_path = Path(data), Path(output)
    if out_path.exists() and not force:
        raise ConfigError(f"{out_path} already exists; pass --force to overwrite it")
    df = read_table(data_path)
    resolved, left_out = _inputs(df, target, say or Reporter())
    types = {f.type for f in resolved.inputs}
    if pretrained is not None and model not in (None, "hf"):
        raise ConfigError(
            f"--pretrained fine-tunes a Hugging Face model; it cannot go with --model {model}"
        )
    if model == "hf" and pretrained is None:
        raise ConfigError(
            "--model hf needs --pretrained: a Hugging Face hub id or a local model directory "
            "(e.g. --pretrained sentence-transformers/all-MiniLM-L6-v2)"
        )
    if pretrained is not None:
        model = "hf"
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
    if model == "hf":
        assert pretrained is not None
        config.update(_finetune_sections(resolved, pretrained, out_path, data_path))
    header = (
        f"# Written by `foundry init {data} --target {target}"
        + (f" --pretrained {pretrained}" if pretrained else "")
        + "`.\n"
        "# Every key is documented in docs/CONFIG.md (`foundry config-docs`).\n"
    )
    # the reasons sit right under the inputs they were taken from, as YAML comments
    head = {k: v for k, v in config.items() if k in ("name", "data", "features")}
    rest = {k: v for k, v in config.items() if k not in head}
    body = yaml.safe_dump(head, sort_keys=False) + _comment(left_out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(header + body + yaml.safe_dump(rest, sort_keys=False))
    return out_path


def _inputs(df: Any, target: str, say: Reporter) -> tuple[Any, list[tuple[str, str, str]]]:
    """The inferred features without the columns that must not be inputs: personal data
    and identifiers (what `data.pii` with its defaults drops in training: names, birth
    dates, addresses, ids) and target leaks (`foundry.data.leakage`). Each is said on the
    console and returned as (column, why, how to change it) for the config's comments."""
    from foundry.config.schema import FeaturesConfig, PIIConfig
    from foundry.data import infer_features
    from foundry.data.infer import ResolvedFeatures
    from foundry.data.leakage import find_leakage
    from foundry.data.personal import KINDS
    from foundry.data.scrub import PIIScrubber

    if target not in df.columns:
        infer_features(df, FeaturesConfig(target=target))  # the error naming every column
    left: list[tuple[str, str, str]] = []
    pii = PIIScrubber.fit(df, PIIConfig(), target=target)
    personal = {d["column"]: d["reason"] for d in pii.identifier_columns}
    for column, reason in personal.items():
        label = reason.split(":")[0]  # "birth date: column name 'dob'"
        personal_kind = label in KINDS.values() and label != KINDS["record_id"]
        what = "personal data" if personal_kind else "identifier"
        left.append((column, f"{what} ({reason})",
                     "data.pii.identifiers: drop removes it in training; to use it anyway, "
                     "list it in data.pii.keep_columns and in features.inputs"))  # fmt: skip
    df = df.drop(columns=list(personal))
    resolved = infer_features(df, FeaturesConfig(target=target))
    leaks = find_leakage(df, target, target_type=resolved.target_type,
                         content=[f.name for f in resolved.inputs if f.type in ("text", "image")])
    for leak in leaks:
        left.append((leak["column"], f"possible target leakage ({leak['reason']})",
                     "add it back only if its value is known before the outcome, and list it "
                     "in features.leakage.allow"))  # fmt: skip
    leaked = {d["column"] for d in leaks}
    inputs = [f for f in resolved.inputs if f.name not in leaked]
    for column, why, how in left:
        say.warn(f"init: '{column}' left out of features.inputs: {why}; {how}")
    if not inputs:
        raise ConfigError(
            "no input column is left once personal data and target leaks are left out: "
            + "; ".join(f"'{c}': {why}" for c, why, _ in left),
            hint="write features.inputs yourself (see the reasons above)",
        )
    kept = ResolvedFeatures(inputs=inputs, target=resolved.target,
                            target_type=resolved.target_type)  # fmt: skip
    return kept, left


def _comment(left_out: list[tuple[str, str, str]]) -> str:
    if not left_out:
        return ""
    lines = ["# Left out of features.inputs by `foundry init`:"]
    for column, why, how in left_out:
        lines.append(f"#   {column}: {why}.")
        lines.append(f"#     To change: {how}.")
    return "\n".join(lines) + "\n"


def _finetune_sections(
    resolved: Any, pretrained: str, out_path: Path, data_path: Path
) -> dict[str, Any]:
    """features / model / train of a config that fine-tunes `pretrained` on one text
    column, with the fine-tuning recipe written out (`foundry.lm.hf_finetune`)."""
    texts = [f.name for f in resolved.inputs if f.type == "text"]
    if len(texts) != 1:
        candidates = texts or [f.name for f in resolved.inputs]
        if len(candidates) != 1:
            raise ConfigError(
                f"{data_path}: a Hugging Face text model reads one text column; the data has "
                f"{len(texts)} text column(s) among its inputs "
                f"({', '.join(f.name for f in resolved.inputs)})",
                hint="keep only the text column and the target in the file, or write "
                "features.inputs yourself",
            )
        texts = candidates
    source = Path(pretrained)
    name_or_path = (
        os.path.relpath(source.resolve(), out_path.resolve().parent)
        if source.exists()
        else pretrained  # a hub id
    )
    epochs = 3
    return {
        "features": {
            "target": resolved.target,
            "target_type": resolved.target_type,
            "inputs": [{"name": texts[0], "type": "text"}],
        },
        "model": {"type": "hf", "name_or_path": name_or_path, "max_length": 128},
        # BERT's recipe: AdamW at a small rate, linear warm-up over 10% then decay, a few
        # epochs; foundry's from-scratch defaults would wreck the pretrained weights
        "train": {
            "epochs": epochs,
            "batch_size": 16,
            "optimizer": {"type": "adamw", "lr": 5e-05, "weight_decay": 0.01},
            "scheduler": {"type": "linear", "warmup_epochs": 0.1 * epochs},
        },
    }
