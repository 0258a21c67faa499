"""`foundry init DATA --target COL`: a starting config with inferred feature types and the
model that fits the data (gbm for tables, ngram for text, cnn for images, hf with
--pretrained), each choice said on the console in a line."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
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
    search: str | None = None,
    feature_tables: dict[str, Any] | None = None,
) -> Path:
    """Inspect `data`, infer every column's type and write a config that trains as is.

    The model is `model` when given, else chosen by the inputs: any image → cnn, any
    text → ngram, else gbm; the neural families (mlp, text, cnn) get epochs, batch size
    and patience from the number of training rows (`_neural_schedule`). `pretrained` (a
    Hugging Face hub id or a local model directory) writes a fine-tuning config instead:
    `model: {type: hf}` on the data's one text column. Columns holding personal data,
    opaque identifiers and target leaks are left out of the inputs; `say` prints why
    (and the config says it in comments), and which model was chosen and why. `search`
    (a duration: `5m`) writes a model search instead, `model: {type: auto, budget:
    <search>}`, and no training schedule. `task="recommend"`
    writes a recommender config for an interactions table instead
    (foundry.recommend.init: no target; `feature_tables`: its `item_features` /
    `user_features` tables)."""
    from foundry.data import read_table

    if task not in (None, "recommend"):
        raise ConfigError(f"--task {task} is not a task foundry init knows; the one there "
                          "is: recommend (leave --task out for a table with a target)")
    if task == "recommend":
        from foundry.recommend.init import init_recommend_config

        return init_recommend_config(
            data, output=output, name=name, force=force, say=say, **(feature_tables or {})
        )
    if feature_tables:
        raise ConfigError("--item-features / --user-features are for --task recommend")
    if target is None:
        raise ConfigError("--target is required: the column to predict (or --task "
                          "recommend for an interactions table)")

    data_path, out_path = Path(data), Path(output)
    if out_path.exists() and not force:
        raise ConfigError(f"{out_path} already exists; pass --force to overwrite it")
    df = read_table(data_path)
    say = say or Reporter()
    resolved, left_out = _inputs(df, target, say)
    if pretrained is not None and model not in (None, "hf"):
        raise ConfigError(
            f"--pretrained fine-tunes a Hugging Face model; it cannot go with --model {model}"
        )
    if model == "hf" and pretrained is None:
        raise ConfigError(
            "--model hf needs --pretrained: a Hugging Face hub id or a local model directory "
            "(e.g. --pretrained sentence-transformers/all-MiniLM-L6-v2)"
        )
    if search is not None and (model is not None or pretrained is not None):
        raise ConfigError(
            "--search tries the model types itself; leave out --model and --pretrained"
        )
    known = _model_types()
    if model is not None and model not in known:
        raise ConfigError(
            f"--model {model} is not a model type; choose one of {', '.join(known)}",
            hint="or leave --model out to pick by the data",
        )
    if search is not None:
        model, why = "auto", f"a search over the models that fit these inputs within {search}"
    else:
        model, why = _choose_model(resolved, model, pretrained)
    say.info(f"init: model {model}: {why}")
    if name is None:
        stem = data_path.stem if data_path.is_file() else data_path.name
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", stem).strip("-.") or "model"
    rel = os.path.relpath(data_path.resolve(), out_path.resolve().parent)
    split = {"train": 0.8, "val": 0.1, "test": 0.1}
    config: dict[str, Any] = {
        "name": name,
        "data": {"path": rel, "split": split},
        "features": {
            "target": resolved.target,
            "target_type": resolved.target_type,
            "inputs": [{"name": f.name, "type": f.type} for f in resolved.inputs],
        },
        "model": {"type": model},
    }
    if model in NEURAL_ROWS_PER_S:
        train_rows = max(1, int(len(df) * split["train"]))
        schedule = _neural_schedule(model, train_rows, _image_pixels(df, resolved))
        say.info(f"init: train: {schedule.why}")
        if schedule.minutes > 2 * TIME_BUDGET_S / 60:
            say.warn(
                f"init: even {schedule.epochs} epochs take ~{schedule.minutes:.0f} min on 2 CPU "
                f"cores for {train_rows:,} rows; a sample of the rows, or model gbm / ngram "
                "where the inputs allow, trains in minutes"
            )
        config["train"] = {
            "epochs": schedule.epochs,
            "batch_size": schedule.batch_size,
            "optimizer": {"type": "adam", "lr": 0.001},
            "early_stopping": {"metric": "val_loss", "patience": schedule.patience},
        }
    if search is not None:
        config["model"] = {"type": "auto", "budget": _duration(search)}
    if model == "hf":
        assert pretrained is not None
        config.update(_finetune_sections(resolved, pretrained, out_path, data_path))
    header = (
        f"# Written by `foundry init {data} --target {target}"
        + (f" --pretrained {pretrained}" if pretrained else "")
        + (f" --search {search}" if search else "")
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


def _duration(search: str) -> str:
    """`--search` as written, once `model.budget` has accepted it."""
    from pydantic import ValidationError

    from foundry.config.schema import AutoConfig

    try:
        AutoConfig(budget=search)
    except ValidationError as exc:
        why = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--search {search!r} (model.budget): {why}") from None
    return search


def _inputs(df: Any, target: str, say: Reporter) -> tuple[Any, list[tuple[str, str, str]]]:
    """The inferred features without the columns that must not be inputs: personal data
    and identifiers (what `data.pii` with its defaults drops in training: names, birth
    dates, addresses, ids; and opaque ids by `foundry.data.infer.identifier_reason`:
    UUIDs, hashes, numbered, near-random, row numbers) and target leaks
    (`foundry.data.leakage`). Near-unique strings with structure (package names, paths,
    URLs) stay, as text. Each is said on the
    console and returned as (column, why, how to change it) for the config's comments."""
    from foundry.config.schema import FeaturesConfig, PIIConfig
    from foundry.data import infer_features
    from foundry.data.infer import ResolvedFeatures, identifier_reason
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
    # opaque ids the scrubber does not look at (integer row counters); its own near-unique
    # rule is this one, so a package-name or path column is kept by both, as text
    opaque = {}
    for column in df.columns:
        if column != target and (reason := identifier_reason(df[column])):
            opaque[column] = reason
            left.append((str(column), f"identifier ({reason})",
                         "list it in features.inputs to use it anyway"))  # fmt: skip
    df = df.drop(columns=list(opaque))
    resolved = infer_features(df, FeaturesConfig(target=target))
    leaks = find_leakage(
        df,
        target,
        target_type=resolved.target_type,
        content=[f.name for f in resolved.inputs if f.type in ("text", "image")],
    )
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


def _model_types() -> list[str]:
    """Every `model.type` the schema takes, in its order (a family registered in the
    schema is choosable with --model without a list kept here)."""
    from typing import get_args

    from foundry.config.schema import ModelConfig

    union = get_args(ModelConfig)[0]  # Annotated[A | B | ..., Field(discriminator=...)]
    return [get_args(c.model_fields["type"].annotation)[0] for c in get_args(union)]


def _choose_model(resolved: Any, model: str | None, pretrained: str | None) -> tuple[str, str]:
    """The model type for `resolved` and why, in one line. By data, as measured in issue
    15 on held-out tables: LightGBM's defaults beat the default MLP on tables (Adult:
    0.871 vs 0.855 accuracy, in 1.4 s), TF-IDF n-grams + a linear head beat the text CNN
    on text (0.835 vs 0.691, in seconds instead of hours)."""
    types = [f.type for f in resolved.inputs]
    texts = [f.name for f in resolved.inputs if f.type == "text"]
    images = [f.name for f in resolved.inputs if f.type == "image"]
    if pretrained is not None:
        return "hf", f"--pretrained fine-tunes {pretrained} on the text column"
    if model is not None:
        return model, "chosen with --model"
    if images:
        return "cnn", f"'{images[0]}' holds images, which a convolutional network reads"
    if texts:
        named = ", ".join(f"'{t}'" for t in texts)
        return "ngram", (
            f"{named} {'is' if len(texts) == 1 else 'are'} text; TF-IDF word and character "
            "n-grams with a linear head train in seconds on a CPU (--pretrained NAME "
            "fine-tunes a transformer instead)"
        )
    kinds = ", ".join(
        f"{types.count(t)} {t}" for t in ("number", "category", "binary") if t in types
    )
    return "gbm", (
        f"a table of {kinds} input(s); gradient-boosted trees (LightGBM) are the strongest "
        "default on tables"
    )


NEURAL_ROWS_PER_S = {"mlp": 1_500, "text": 75, "cnn": 60}
"""Training rows per second of each neural family's default model on 2 CPU cores, as
rows per CPU-second of a whole 3-epoch `foundry.train` (`python benchmarks/init_rules.py
throughput`: mlp 1,513 on 16,000 rows of 12 columns, text 74 on 1,600 sentences of 12
words, cnn 61 on 480 RGB images of 32x32): an idle 2-core machine is at least that fast.
cnn scales by pixels (`CNN_PIXELS`). Families not listed (gbm, ngram, hf) get no epochs
from init: trees and linear models stop by themselves, hf has its fine-tuning recipe."""
CNN_PIXELS = 32 * 32
TIME_BUDGET_S = 600
"""A default run of a neural family trains for at most about this long on 2 cores."""
MAX_EPOCHS = 100
"""Measured by benchmarks/init_quality.py: 30 epochs undertrained small tables (the best
epoch was the last one); 100 with patience 10 still stops early on big ones."""
MIN_EPOCHS = 2
"""Fewer epochs than this rarely converge; a table too big for the budget even at 2
epochs gets a warning with the estimated time instead."""


@dataclass(frozen=True)
class _Schedule:
    epochs: int
    batch_size: int
    patience: int
    minutes: float
    """Estimated training time on 2 CPU cores if no epoch stops early."""
    why: str


def _neural_schedule(model: str, train_rows: int, pixels: int | None) -> _Schedule:
    """Epochs, batch size and patience from the data size, so that no default run takes
    hours on 2 cores. The rule, said in `why` too:

        rows_per_s = NEURAL_ROWS_PER_S[model]  (cnn: x CNN_PIXELS / pixels per image)
        epochs     = clamp(TIME_BUDGET_S x rows_per_s / train_rows, MIN_EPOCHS, MAX_EPOCHS)
        batch_size = clamp(largest power of 2 <= train_rows / 50, 16, 128)
        patience   = clamp(epochs // 5, 2, 10)

    Batches shrink on small tables so that an epoch still makes ~50 optimizer steps;
    patience is a fifth of the epochs (10 of 100, the measured default)."""
    rate = NEURAL_ROWS_PER_S[model]
    if model == "cnn" and pixels:
        rate = max(1, rate * CNN_PIXELS // pixels)
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, TIME_BUDGET_S * rate // train_rows))
    batch = 16
    while batch < 128 and batch * 2 * 50 <= train_rows:
        batch *= 2
    patience = min(10, max(2, epochs // 5))
    minutes = epochs * train_rows / rate / 60
    why = (
        f"{epochs} epochs x batch {batch} (early stopping patience {patience}) for "
        f"{train_rows:,} training rows: at most ~{max(1, round(minutes))} min on 2 CPU cores "
        f"(epochs = {TIME_BUDGET_S // 60} min x ~{rate:,} rows/s / rows, between "
        f"{MIN_EPOCHS} and {MAX_EPOCHS}; batch ~ rows / 50, 16 to 128)"
    )
    return _Schedule(epochs, batch, patience, minutes, why)


def _image_pixels(df: Any, resolved: Any) -> int | None:
    """Pixels of the first image (what the preprocessing resizes every image to), or None."""
    images = [f.name for f in resolved.inputs if f.type == "image"]
    if not images:
        return None
    from PIL import Image

    first = df[images[0]].dropna()
    if first.empty:
        return None
    try:
        with Image.open(first.iloc[0]) as img:
            return img.width * img.height
    except OSError:
        return None  # training names the unreadable file; the estimate takes 32x32


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
