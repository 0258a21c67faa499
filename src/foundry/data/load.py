"""Reading a training table from disk: CSV, Parquet, JSONL or an image folder.

Every failure a user can cause (missing file, empty file, ragged CSV, unknown extension,
image folder without classes) is a `DataError` whose message names the file.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

from foundry.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
"""File endings read as images (compared lower-case)."""

FORMAT_BY_SUFFIX = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
FORMATS = ("csv", "parquet", "jsonl", "image_folder")

# Delimiters the sniffer may pick; restricting it avoids "delimiters" like 'e' on
# single-column files.
_SNIFF_DELIMITERS = ",;\t|"
_SNIFF_BYTES = 64 * 1024


def read_table(
    path: Path | str, format: str = "auto", delimiter: str | None = None
) -> pd.DataFrame:
    """Read `path` into a DataFrame.

    `format` is one of "auto", "csv", "parquet", "jsonl", "image_folder"; "auto" decides
    from the extension, and a directory is an image folder. An image folder
    `class_name/*.png` becomes columns `image` (absolute path) and `label` (folder name).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    fmt = _resolve_format(path, format)
    if fmt == "image_folder":
        return read_image_folder(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory, but format '{fmt}' needs a file")
    if path.stat().st_size == 0:
        raise DataError(f"data file is empty (0 bytes): {path}")
    if fmt == "csv":
        df = _read_csv(path, delimiter)
    elif fmt == "parquet":
        df = _read_parquet(path)
    else:
        df = _read_jsonl(path)
    if len(df) == 0:
        raise DataError(f"data file has no rows: {path}")
    return df


def _resolve_format(path: Path, format: str) -> str:
    if format not in ("auto", *FORMATS):
        raise DataError(
            f"unknown data format '{format}' for {path}; use one of: auto, " + ", ".join(FORMATS)
        )
    if format != "auto":
        return format
    if path.is_dir():
        return "image_folder"
    fmt = FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        allowed = ", ".join(FORMAT_BY_SUFFIX)
        raise DataError(
            f"unsupported file extension '{path.suffix}' for {path}; allowed: {allowed}, "
            "or a directory of class_name/*.png images (or set data.format)"
        )
    return fmt


def sniff_delimiter(path: Path) -> str:
    """Guess a CSV delimiter from the file's first 64 KiB; ',' when unsure."""
    if path.suffix.lower() == ".tsv":
        return "\t"
    with path.open("r", encoding="utf-8", errors="replace", newline="") as f:
        sample = f.read(_SNIFF_BYTES)
    # Cut at the last full line so a truncated row does not confuse the sniffer.
    if len(sample) == _SNIFF_BYTES and "\n" in sample:
        sample = sample[: sample.rfind("\n")]
    try:
        return csv.Sniffer().sniff(sample, delimiters=_SNIFF_DELIMITERS).delimiter
    except csv.Error:
        return ","  # one column, or nothing consistent: the common default


def _read_csv(path: Path, delimiter: str | None) -> pd.DataFrame:
    sep = delimiter if delimiter is not None else sniff_delimiter(path)
    try:
        # pyarrow parses multi-threaded and several times faster than the C engine.
        return pd.read_csv(path, sep=sep, engine="pyarrow")
    except pd.errors.EmptyDataError as e:
        raise DataError(f"data file is empty (no header or rows): {path}") from e
    except (ValueError, OSError):
        # pyarrow refuses some valid files the C engine reads (quoted newlines, odd
        # encodings); the C engine also gives line numbers in its error messages.
        pass
    try:
        return pd.read_csv(path, sep=sep, engine="c", encoding_errors="replace")
    except pd.errors.EmptyDataError as e:
        raise DataError(f"data file is empty (no header or rows): {path}") from e
    except (ValueError, OSError) as e:
        raise DataError(f"malformed CSV {path}: {_one_line(e)}") from e


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (ValueError, OSError) as e:  # pyarrow.ArrowInvalid is a ValueError
        raise DataError(f"cannot read Parquet file {path}: {_one_line(e)}") from e


def _read_jsonl(path: Path) -> pd.DataFrame:
    try:
        return pd.read_json(path, lines=True)
    except (ValueError, json.JSONDecodeError) as e:
        raise DataError(f"malformed JSONL {path}: {_one_line(e)}") from e


def read_image_folder(path: Path) -> pd.DataFrame:
    """`path/class_name/*.png` → DataFrame[image: absolute path str, label: class name].

    Rows are sorted by (label, file name) so the same folder always gives the same frame.
    """
    root = path.resolve()
    if not root.is_dir():
        raise DataError(f"image folder not found or not a directory: {path}")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"image folder {path} has no class subfolders; expected class_name/*.png")
    images: list[str] = []
    labels: list[str] = []
    for class_dir in classes:
        files = sorted(
            p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        images.extend(str(p) for p in files)
        labels.extend([class_dir.name] * len(files))
    if not images:
        raise DataError(
            f"image folder {path} has no images ({', '.join(IMAGE_EXTENSIONS)}) in its "
            "class subfolders"
        )
    return pd.DataFrame({"image": images, "label": labels})


def _one_line(e: BaseException) -> str:
    """Error text squeezed onto one line (the CLI prints messages on one line)."""
    return " ".join(str(e).split()) or type(e).__name__
