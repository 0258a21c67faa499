"""`foundry init interactions.csv --task recommend`: find the user, item, weight and time
columns and write a recommender config (`model: {type: mf}` with the `recommend`
section filled in).

Columns are picked by name first (`user_id`, `movieId`, `rating`, `timestamp`: the
names public ratings and event logs use), then by shape: the time column is the one
that parses as dates or is a large increasing number, the weight a number with few
distinct values, user and item the two id-like columns left, the one with fewer
distinct values (more rows each) as the user.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from foundry.console import Reporter
from foundry.errors import ConfigError

__all__ = ["INIT_MODEL", "infer_interaction_columns", "init_recommend_config"]

_NAMES = {
    "user": r"user|customer|client|member|account|visitor|viewer|listener|reader|buyer|"
    r"person|uid|session|package|source",
    "item": r"item|product|movie|film|song|track|artist|book|article|video|sku|page|"
    r"asset|iid|course|recipe|game|show|dependency|depend|target|doc",
    "weight": r"rating|score|weight|count|plays|quantity|qty|clicks|views|stars|value|"
    r"amount|strength|preference",
    "time": r"time|timestamp|datetime|date|ts|when|created|updated|epoch|day",
}
_WORDS = re.compile(r"[a-z]+")
INIT_MODEL: dict[str, Any] = {
    "type": "mf",
    "factors": 64,
    "iterations": 15,
    # chosen at fit on an inner split of the training data: the best values differ by
    # data (alpha 40 on the sparse Debian graph, 1 on dense 1-5 star ratings)
    "regularization": "auto",
    "alpha": "auto",
}
"""The model section `foundry init --task recommend` writes (benchmarks/recommend.py
scores it beside the tuned models)."""


def _matches(column: str, role: str) -> bool:
    words = _WORDS.findall(re.sub(r"([a-z])([A-Z])", r"\1 \2", str(column)).lower())
    pattern = re.compile(rf"^(?:{_NAMES[role]})$")
    return any(pattern.match(w) for w in words) or pattern.match(str(column).lower()) is not None


def infer_interaction_columns(df: pd.DataFrame) -> dict[str, str | None]:
    """{"user", "item", "weight", "time"} → column (weight and time may be None)."""
    if df.shape[1] < 2:
        raise ConfigError(
            f"an interactions table needs a user and an item column; this one has "
            f"{df.shape[1]} column(s) ({', '.join(map(str, df.columns))})"
        )
    left = [str(c) for c in df.columns]
    found: dict[str, str | None] = {"user": None, "item": None, "weight": None, "time": None}
    for role in ("time", "weight", "user", "item"):
        for column in left:
            if _matches(column, role) and _fits(df[column], role):
                found[role] = column
                left.remove(column)
                break
    if found["time"] is None:
        for column in left:
            if _looks_like_time(df[column]):
                found["time"] = column
                left.remove(column)
                break
    ids = [c for c in left if _fits(df[c], "user")]
    for role in ("user", "item"):
        if found[role] is None:
            if not ids:
                raise ConfigError(
                    f"cannot tell which column is the {role}: name it with "
                    f"recommend.{role} in the config (columns: "
                    f"{', '.join(map(str, df.columns))})"
                )
            found[role] = ids.pop(0)
            left.remove(found[role])
    if found["weight"] is None:
        numbers = [c for c in left if _fits(df[c], "weight")]
        found["weight"] = numbers[0] if len(numbers) == 1 else None
    if not _matches(found["user"], "user") and not _matches(found["item"], "item"):
        # neither named: the side with more rows per id is the user
        user, item = found["user"], found["item"]
        if df[user].nunique() > df[item].nunique():
            found["user"], found["item"] = item, user
    return found


def _fits(column: pd.Series, role: str) -> bool:
    values = column.dropna()
    if values.empty:
        return False
    if role == "time":
        return _looks_like_time(column) or pd.api.types.is_numeric_dtype(values)
    if role == "weight":
        return pd.api.types.is_numeric_dtype(values) and bool((values >= 0).all())
    # an id: text or whole numbers, repeated (each user has several rows)
    whole = (
        pd.api.types.is_integer_dtype(values)
        or pd.api.types.is_object_dtype(values)
        or pd.api.types.is_string_dtype(values)
    )
    return whole and values.nunique() < len(values)


def _looks_like_time(column: pd.Series) -> bool:
    values = column.dropna()
    if values.empty:
        return False
    if pd.api.types.is_datetime64_any_dtype(values):
        return True
    if pd.api.types.is_numeric_dtype(values):
        # Unix seconds (or milliseconds) since 2000: 9.5e8 and up
        return bool(values.min() > 9.5e8)
    sample = values.astype(str).head(200)
    parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() > 0.95)


def init_recommend_config(
    data: str | Path,
    *,
    output: str | Path = "config.yaml",
    name: str | None = None,
    force: bool = False,
    say: Reporter | None = None,
    item_features: str | Path | None = None,
    user_features: str | Path | None = None,
) -> Path:
    """Write a recommender config for the interactions table at `data`; with an item or
    user feature table (each keyed by the inferred item / user column), a two_tower
    config that reads them (the model type that does)."""
    from foundry.data import read_table

    say = say or Reporter()
    data_path, out_path = Path(data), Path(output)
    if out_path.exists() and not force:
        raise ConfigError(f"{out_path} already exists; pass --force to overwrite it")
    df = read_table(data_path)
    columns = infer_interaction_columns(df)
    say.info(
        "init: user '{user}', item '{item}', weight '{weight}', time '{time}'".format(**columns)
    )
    if name is None:
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", data_path.stem).strip("-.") or "model"
    rel = os.path.relpath(data_path.resolve(), out_path.resolve().parent)
    recommend: dict[str, Any] = {k: v for k, v in columns.items()}
    recommend["split"] = "temporal" if columns["time"] else "random"
    recommend.update({"test": 0.2, "val": 0.0, "k": 10})
    model: dict[str, Any] = dict(INIT_MODEL)
    tables = {"item_features": item_features, "user_features": user_features}
    for key, table in tables.items():
        if table is None:
            continue
        id_column = columns["user" if key == "user_features" else "item"]
        found = read_table(Path(table)).columns
        if id_column not in found:
            raise ConfigError(
                f"{table} (--{key.replace('_', '-')}) has no column '{id_column}', the "
                f"{key.split('_')[0]} column of {data}; its columns: "
                f"{', '.join(map(str, found))}",
                hint=f"name the {key.split('_')[0]} column '{id_column}' in both tables",
            )
        recommend[key] = os.path.relpath(Path(table).resolve(), out_path.resolve().parent)
        model = {"type": "two_tower"}
        say.info(f"init: recommend.{key} '{table}' (read by model.type two_tower)")
    config = {
        "name": name,
        "data": {"path": rel},
        "recommend": recommend,
        "model": model,
    }
    header = (
        f"# Written by `foundry init {data} --task recommend`.\n"
        "# Every key is documented in docs/CONFIG.md (`foundry config-docs`);\n"
        "# model.type: popularity trains the baseline alone.\n"
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return out_path
