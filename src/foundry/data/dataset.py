"""The table data a config names: read, scrubbed of personal data, typed and split.

    splits, resolved = load_splits(loaded, say)    # Splits(train, val, test, pii, scrubber)

Every family that reads a table (the neural networks, Hugging Face classifiers, and the
stages that read the data again: compress, report, cost) starts here, so each sees the
same rows in the same splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pandas as pd

from foundry.config import LoadedConfig
from foundry.config.schema import FoundryConfig, SplitConfig
from foundry.console import Reporter
from foundry.errors import ConfigError, DataError

__all__ = ["Splits", "load_splits", "scrub_pii"]


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    pii: dict[str, Any] | None = None
    """What `data.pii` found where (None when scanning is off)."""
    scrubber: Any = None
    """The fitted `PIIScrubber`; its state goes into the package for prediction."""
    stream: Any = None
    """Streamed data (`data.streaming`): the `data.stream.StreamedTable` of the training
    rows; `train` / `val` / `test` are then uniform samples of at most
    `data.stream.sample_rows` rows each (see docs/DATA.md)."""

    @property
    def rows(self) -> dict[str, int]:
        """Rows per split: of the whole table when streamed, else of the frames."""
        if self.stream is not None:
            return dict(self.stream.rows)
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def evaluation(self, name: str) -> tuple[pd.DataFrame, str]:
        """The split `evaluate.split` names and its name; when it is empty, the first
        non-empty of val and train (what training evaluated on, and so the compress
        stage and the report too)."""
        frame = {"test": self.test, "val": self.val, "train": self.train}[name]
        if len(frame) == 0:
            frame, name = (self.val, "val") if len(self.val) else (self.train, "train")
        return frame, name


def load_splits(loaded: LoadedConfig, say: Reporter) -> tuple[Splits, Any]:
    """Read the data file(s), infer feature types, and split: explicit val/test files win
    over fractions. Classification targets are split stratified."""
    from foundry.data import infer_features, read_table, split_frame
    from foundry.data.preprocess import check_numbers

    data, target = loaded.config.data, loaded.config.features.target
    table = sharded_table(loaded)
    if table is not None and streams(loaded.config, table, say):
        from foundry.data.stream import stream_splits

        return stream_splits(loaded, table, say)
    if table is not None and len(table.files) > 1:  # shards that fit: one frame
        df = pd.concat(
            [read_table(f, table.format, data.delimiter) for f in table.files], ignore_index=True
        )
    elif table is not None:  # one shard (maybe the only one under a directory or prefix)
        df = read_table(table.files[0], table.format, data.delimiter)
    else:
        df = read_table(loaded.data_source(data.path), data.format, data.delimiter)
    val = (
        read_table(loaded.data_source(data.val_path), data.format, data.delimiter)
        if data.val_path
        else None
    )
    test = (
        read_table(loaded.data_source(data.test_path), data.format, data.delimiter)
        if data.test_path
        else None
    )
    split = data.split
    # Fractions of the splits that come from explicit files fold back into train.
    fractions = {
        "train": split.train
        + (split.val if val is not None else 0)
        + (split.test if test is not None else 0),
        "val": 0.0 if val is not None else split.val,
        "test": 0.0 if test is not None else split.test,
    }
    say.info(f"data: {data.path} ({len(df)} rows, {len(df.columns)} columns)")
    df, val, test, pii, scrubber = scrub_pii(loaded.config, df, val, test, say)
    # Types only (no statistics are fitted here), so looking at every row leaks nothing.
    resolved = infer_features(df, loaded.config.features)
    # before the split shuffles the rows, so a bad value is named by its row in the file
    for frame, path in ((df, data.path), (val, data.val_path), (test, data.test_path)):
        if frame is not None:
            check_numbers(frame, resolved, str(path))
    stratify_on = target if resolved.target_type != "number" else None
    train_df, val_df, test_df = split_frame(
        df, SplitConfig(**{**split.model_dump(), **fractions}), stratify_on
    )
    for name, frame in (("val_path", val), ("test_path", test)):
        if frame is not None and list(frame.columns) != list(df.columns):
            missing = sorted(set(df.columns) - set(frame.columns))
            if missing:
                raise DataError(f"data.{name}: columns {missing} of data.path are missing there")
    splits = Splits(
        train=train_df,
        val=val if val is not None else val_df,
        test=test if test is not None else test_df,
        pii=pii,
        scrubber=scrubber,
    )
    return splits, resolved


IN_MEMORY_FACTOR = 4
"""In-memory training holds the frame, its three splits and their encoded tensors at
once: about this many times the table's decoded size (what `streaming: auto` weighs)."""


def sharded_table(loaded: LoadedConfig) -> Any:
    """`data.path` as a `data.shards.ShardedTable` (a Parquet / CSV / JSONL file, a
    directory or a glob of them, on disk or as ``s3://`` objects), or None for what only
    reads in memory (an image folder; `data.streaming: false` with a single file)."""
    from foundry.data.load import FORMAT_BY_SUFFIX
    from foundry.data.shards import open_shards
    from foundry.objectstore import is_url

    data = loaded.config.data
    if is_url(data.path):
        # one object with streaming off, or an image folder: read_table reads it whole
        # (and names what is wrong); a prefix or glob lists its shards
        suffix = PurePosixPath(data.path).suffix.lower()
        single = suffix in FORMAT_BY_SUFFIX and not any(ch in data.path for ch in "*?[")
        if data.format == "image_folder" or (data.streaming is False and single):
            return None
        return open_shards(data.path, data.format, data.delimiter)
    path = loaded.resolve(data.path)
    assert path is not None
    text = str(path)
    globbed = any(ch in text for ch in "*?[")
    if data.format == "image_folder" or (not globbed and not path.exists()):
        return None  # read_table names a missing file
    if path.is_dir() and data.format == "auto" and not _has_shards(path):
        return None  # an image folder (class_name/*.png)
    if data.streaming is False and not globbed and not path.is_dir():
        return None
    return open_shards(path, data.format, data.delimiter)


def _has_shards(path: Any) -> bool:
    from foundry.data.load import FORMAT_BY_SUFFIX

    return any(p.suffix.lower() in FORMAT_BY_SUFFIX for p in path.rglob("*") if p.is_file())


def streams(cfg: FoundryConfig, table: Any, say: Reporter) -> bool:
    """Whether to stream `table`: `data.streaming` when forced, else (`auto`) when
    `IN_MEMORY_FACTOR` x its decoded size passes `stream.memory_fraction` of the memory
    this process may still use."""
    from foundry.data.shards import available_memory

    setting = cfg.data.streaming
    if setting != "auto":
        return bool(setting)
    need, free = IN_MEMORY_FACTOR * table.decoded_bytes, available_memory()
    if need <= cfg.data.stream.memory_fraction * free:
        return False
    say.info(
        f"data.streaming auto: the table needs ~{need / 2**30:.2f} GiB in memory, over "
        f"{cfg.data.stream.memory_fraction:g} of the {free / 2**30:.2f} GiB available: streaming"
    )
    return True


def scrub_pii(
    cfg: FoundryConfig,
    df: pd.DataFrame,
    val: pd.DataFrame | None,
    test: pd.DataFrame | None,
    say: Reporter,
) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None, dict | None, Any]:
    """`data.pii`: find personal data in the raw tables before anything is fitted on them,
    mask / hash / drop it, and report where it was. The scrubber is fitted on the
    training file and applied unchanged to explicit val / test files."""
    from foundry.data.scrub import PIIScrubber, format_report, merge_reports

    config = cfg.data.pii
    if not config.enabled:
        return df, val, test, None, None
    target = cfg.features.target
    keep = list(cfg.evaluate.fairness.sensitive_features)
    scrubber = PIIScrubber.fit(df, config, target=target, keep=keep)
    listed = {f.name for f in cfg.features.inputs or []}
    for ident in scrubber.identifier_columns:
        if ident["action"] == "drop" and ident["column"] in listed:
            raise ConfigError(
                f"features.inputs lists '{ident['column']}', an identifier column "
                f"({ident['reason']}) that data.pii.identifiers: drop removes",
                hint="remove it from features.inputs; to use it anyway, list it in "
                "data.pii.keep_columns (or set data.pii.identifiers to 'hash' or 'report')",
            )
    df, report = scrubber.scrub(df)
    reports = [report]
    if val is not None:
        val, val_report = scrubber.scrub(val)
        reports.append(val_report)
    if test is not None:
        test, test_report = scrubber.scrub(test)
        reports.append(test_report)
    merged = merge_reports(reports)
    found = bool(merged.get("total") or merged.get("identifier_columns"))
    for line in format_report(merged):
        (say.warn if found else say.info)(line)
    return df, val, test, merged, scrubber


def check_leakage(
    cfg: FoundryConfig, splits: Splits, resolved: Any, say: Reporter
) -> dict[str, Any] | None:
    """`features.leakage`: every column of the (scrubbed) training and validation rows
    checked for target leakage; a leak that is still an input is a loud warning unless
    `allow` lists it. Returns the manifest's `leakage` section (None when off)."""
    from foundry.data.leakage import find_leakage

    settings = cfg.features.leakage
    if not settings.enabled:
        return None
    frame = pd.concat([splits.train, splits.val], ignore_index=True)
    inputs = set(resolved.input_names)
    columns = []
    for leak in find_leakage(
        frame, resolved.target, target_type=resolved.target_type,
        content=[f.name for f in resolved.inputs if f.type in ("text", "image")],
        threshold=settings.threshold, seed=cfg.data.split.seed,
    ):  # fmt: skip
        used, allowed = leak["column"] in inputs, leak["column"] in settings.allow
        columns.append({**leak, "input": used, "allowed": allowed})
        if used and not allowed:
            say.warn(
                f"LEAKAGE: input '{leak['column']}' gives the target away: {leak['reason']}. "
                "Metrics will look far better than the model can do on new cases. Remove "
                "it from features.inputs (or add it to features.exclude); if its value is "
                "known before the outcome, list it in features.leakage.allow"
            )
        else:
            why = "allowed by features.leakage.allow" if allowed else "not an input"
            say.info(f"leakage: column '{leak['column']}' ({why}): {leak['reason']}")
    return {"threshold": settings.threshold, "columns": columns}
