"""Reading a training table from disk: CSV, Parquet, JSONL or an image folder.

Every failure a user can cause (missing file, empty file, ragged CSV, unknown extension,
image folder without classes) is a `DataError` whose message names the file. A table may
also be an object (`s3://bucket/key.parquet`, `read_url`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

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

PROGRESS_MIN_BYTES = 20_000_000
"""Files at least this big (CSV, JSONL) show a bytes progress bar while read (see
`foundry.progress` for when bars are on); smaller ones read in well under a second."""
_BLOCK = 1 << 20  # JSONL is read in 1 MiB blocks, counted as they come


def read_table(
    path: Path | str,
    format: str = "auto",
    delimiter: str | None = None,
    *,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Read `path` into a DataFrame.

    `format` is one of "auto", "csv", "parquet", "jsonl", "image_folder"; "auto" decides
    from the extension, and a directory is an image folder. An image folder
    `class_name/*.png` becomes columns `image` (absolute path) and `label` (folder name).

    A CSV or JSONL file of `PROGRESS_MIN_BYTES` or more shows a bytes progress bar on
    stderr (`progress`: None decides by `foundry.progress.progress_enabled`, False
    never). The parser is the same one-shot call either way, fed as it reads: the frame
    (values, dtypes) does not depend on whether a bar was shown. An ``s3://`` URL is read
    by `read_url`.
    """
    from foundry.objectstore import is_url

    if is_url(path):
        return read_url(str(path), format, delimiter)
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
    if fmt == "parquet":
        df = _read_parquet(path)
    else:
        size = path.stat().st_size
        with _reading_bar(path, size, progress) as bar:
            df = _read_csv(path, delimiter, bar) if fmt == "csv" else _read_jsonl(path, bar)
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


def sniff_delimiter(path: Path | str) -> str:
    """Guess a CSV delimiter from the file's first 64 KiB; ',' when unsure. `path` may
    be an ``s3://`` URL (one ranged read of those bytes)."""
    from foundry.objectstore import describe_failure, filesystem, is_url

    if PurePosixPath(str(path)).suffix.lower() == ".tsv":
        return "\t"
    if is_url(path):
        try:
            head = filesystem(error=DataError).cat_file(str(path), start=0, end=_SNIFF_BYTES)
        except Exception as e:  # botocore / aiohttp: credentials, endpoint, network
            raise DataError(f"cannot read {path}: {describe_failure(e)}") from e
        return _sniff(head.decode("utf-8", errors="replace"))
    with Path(path).open("r", encoding="utf-8", errors="replace", newline="") as f:
        return _sniff(f.read(_SNIFF_BYTES))


def _sniff(sample: str) -> str:
    # Cut at the last full line so a truncated row does not confuse the sniffer.
    if len(sample) == _SNIFF_BYTES and "\n" in sample:
        sample = sample[: sample.rfind("\n")]
    try:
        return csv.Sniffer().sniff(sample, delimiters=_SNIFF_DELIMITERS).delimiter
    except csv.Error:
        return ","  # one column, or nothing consistent: the common default


@contextmanager
def _reading_bar(path: Path, size: int, progress: bool | None) -> Iterator[Any]:
    """A bytes bar over reading `path`, or None below `PROGRESS_MIN_BYTES` / when off."""
    from foundry.progress import progress_bar, progress_enabled

    if size < PROGRESS_MIN_BYTES or not progress_enabled(progress):
        yield None
        return
    with progress_bar(f"reading {path.name}", total=size, unit="bytes", enabled=progress) as bar:
        yield bar if bar.enabled else None


class _CountingReader(io.RawIOBase):
    """A binary file that moves a progress bar by the bytes the parser pulls from it:
    pandas' parsers read as they parse (pyarrow in 1 MiB blocks, the C engine in 256 KiB),
    so the bar follows the parse."""

    def __init__(self, file: Any, bar: Any) -> None:
        self._file, self._bar = file, bar

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._file.readinto(buffer)
        self._bar.advance(n or 0)
        return n

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._bar.advance(len(data))
        return data


@contextmanager
def _source(path: Path, bar: Any) -> Iterator[Any]:
    """What pandas reads: the path itself, or with a bar a counting reader over it."""
    if bar is None:
        yield path
        return
    bar.update(0)  # a second attempt starts the count again
    with path.open("rb") as file:
        yield _CountingReader(file, bar)


def _read_csv(path: Path, delimiter: str | None, bar: Any = None) -> pd.DataFrame:
    sep = delimiter if delimiter is not None else sniff_delimiter(path)
    try:
        # pyarrow parses multi-threaded and several times faster than the C engine.
        with _source(path, bar) as source:
            return pd.read_csv(source, sep=sep, engine="pyarrow")
    except pd.errors.EmptyDataError as e:
        raise DataError(f"data file is empty (no header or rows): {path}") from e
    except (ValueError, OSError):
        # pyarrow refuses some valid files the C engine reads (quoted newlines, odd
        # encodings); the C engine also gives line numbers in its error messages.
        pass
    try:
        with _source(path, bar) as source:
            return pd.read_csv(source, sep=sep, engine="c", encoding_errors="replace")
    except pd.errors.EmptyDataError as e:
        raise DataError(f"data file is empty (no header or rows): {path}") from e
    except (ValueError, OSError) as e:
        raise DataError(f"malformed CSV {path}: {_one_line(e)}") from e


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (ValueError, OSError) as e:  # pyarrow.ArrowInvalid is a ValueError
        raise DataError(f"cannot read Parquet file {path}: {_one_line(e)}") from e


def _read_jsonl(path: Path, bar: Any = None) -> pd.DataFrame:
    try:
        if bar is None:
            return pd.read_json(path, lines=True)
        # pandas reads a JSONL file whole before parsing it, so the bar counts the
        # reading; the text then goes to the same parser call.
        blocks = []
        with path.open("rb") as file:
            while block := file.read(_BLOCK):
                blocks.append(block)
                bar.advance(len(block))
        bar.describe(f"parsing {path.name}")
        return pd.read_json(io.StringIO(b"".join(blocks).decode("utf-8")), lines=True)
    except (ValueError, json.JSONDecodeError) as e:
        raise DataError(f"malformed JSONL {path}: {_one_line(e)}") from e


def read_url(url: str, format: str = "auto", delimiter: str | None = None) -> pd.DataFrame:
    """A CSV, Parquet or JSONL table stored as one object (``s3://bucket/key``), read
    whole through fsspec (endpoint and credentials: `foundry.objectstore`). Image
    folders stay local."""
    from foundry.objectstore import describe_failure, filesystem

    suffix = PurePosixPath(url).suffix.lower()
    fmt = format if format != "auto" else FORMAT_BY_SUFFIX.get(suffix)
    if fmt not in ("csv", "parquet", "jsonl"):
        raise DataError(
            f"cannot read {url}: an s3:// data path must be a .csv, .parquet or .jsonl "
            "file (or set data.format); image folders must be local"
        )
    try:
        data = filesystem(error=DataError).cat_file(url)
    except FileNotFoundError as e:
        raise DataError(f"data file not found: {url}") from e
    except Exception as e:  # botocore / aiohttp: credentials, endpoint, network
        raise DataError(f"cannot read {url}: {describe_failure(e)}") from e
    if not data:
        raise DataError(f"data file is empty (0 bytes): {url}")
    try:
        if fmt == "parquet":
            df = pd.read_parquet(io.BytesIO(data))
        elif fmt == "jsonl":
            df = pd.read_json(io.BytesIO(data), lines=True)
        else:
            sample = data[:_SNIFF_BYTES].decode("utf-8", errors="replace")
            sep = delimiter or ("\t" if suffix == ".tsv" else _sniff(sample))
            try:  # the engines `_read_csv` uses, in the same order: the same frame
                df = pd.read_csv(io.BytesIO(data), sep=sep, engine="pyarrow")
            except (ValueError, OSError):
                df = pd.read_csv(io.BytesIO(data), sep=sep, encoding_errors="replace")
    except (ValueError, OSError) as e:  # also pandas' EmptyDataError and ArrowInvalid
        raise DataError(f"malformed {fmt} file {url}: {_one_line(e)}") from e
    if len(df) == 0:
        raise DataError(f"data file has no rows: {url}")
    return df


def read_image_folder(path: Path) -> pd.DataFrame:
    """`path/class_name/*.png` → DataFrame[image: absolute path str, label: class name].

    Rows are sorted by (label, file name) so the same folder always gives the same frame.
    """
    root = path.resolve()
    if not root.is_dir():
        raise DataError(f"image folder not found or not a directory: {path}")
    # os.scandir and name strings, not Path objects: 100k Paths listed and sorted took
    # 4.3 s and left ~35 MB of freed objects in the process; names sort the same way
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and e.name[0] != ".")
    if not classes:
        raise DataError(f"image folder {path} has no class subfolders; expected class_name/*.png")
    images: list[str] = []
    labels: list[str] = []
    for label in classes:
        class_dir = os.path.join(root, label)
        files = sorted(
            e.name
            for e in os.scandir(class_dir)
            if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        )
        images.extend(os.path.join(class_dir, f) for f in files)
        labels.extend([label] * len(files))
    if not images:
        raise DataError(
            f"image folder {path} has no images ({', '.join(IMAGE_EXTENSIONS)}) in its "
            "class subfolders"
        )
    return pd.DataFrame({"image": images, "label": labels})


def _one_line(e: BaseException) -> str:
    """Error text squeezed onto one line (the CLI prints messages on one line)."""
    return " ".join(str(e).split()) or type(e).__name__
