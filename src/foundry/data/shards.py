"""A table on disk or in object storage as shards and pieces, read a block of rows at a
time (streaming).

    table = open_shards(path, "auto", delimiter=None)   # a file, a directory or a glob
    table = open_shards("s3://bucket/prefix/", ...)      # or objects: a key, prefix or glob
    table.pieces                 # [Piece]: a Parquet row group, or a whole CSV / JSONL shard
    for frame in table.read(piece, columns, block_rows): ...   # pandas frames, bounded size
    for batch in table.read_arrow(piece, columns, block_rows): ...  # Arrow (Parquet / CSV)
    table.decoded_bytes          # estimated size of the whole table decoded (for `auto`)

A *piece* is the unit of work handed to one DataLoader worker on one rank: a Parquet
row group (so one big Parquet file still spreads over every worker), or a whole CSV /
JSONL shard (a text file cannot be entered in the middle, so such data should come as
several shards). Pieces are listed from metadata alone: nothing is decoded here.

**Object storage** (``s3://``, through `foundry.objectstore`'s filesystem: the endpoint
and credentials the artifact store uses): a prefix lists every .parquet / .csv / .jsonl
object under it, a glob (``s3://b/data/*.parquet``; ``**`` crosses '/') the objects it
matches, sizes from the listing. No shard is downloaded whole: a Parquet piece fetches its
footer and then its row group's column chunks as ranged GETs (coalesced by pyarrow's
`pre_buffer`), and a CSV / JSONL shard is read front to back in `_TEXT_BLOCK` requests.
The table holds URLs only, so DataLoader workers (forked or spawned) and torchrun ranks
each open the objects themselves (s3fs is not fork-safe, `foundry.objectstore`).
"""

from __future__ import annotations

import glob
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import pyarrow as pa

from foundry.data.load import FORMAT_BY_SUFFIX, sniff_delimiter
from foundry.errors import DataError
from foundry.objectstore import is_url

__all__ = ["Piece", "ShardedTable", "available_memory", "open_shards"]

_SIZE_PROBE_ROWS = 256  # rows decoded to estimate a Parquet table's size in memory
_TEXT_EXPANSION = 2.0
"""CSV / JSONL: decoded pandas size per byte of file, roughly (numbers shrink, strings
grow into Python objects); only `streaming: auto` reads it."""
_TEXT_BLOCK = 8 << 20
"""Bytes per read of a CSV / JSONL object (s3fs' default, 50 MiB, per open shard per
DataLoader worker is more memory than a block of rows needs)."""
_LISTED = "a .parquet, .csv or .jsonl shard"

Shard = Path | str
"""A local file, or an object's ``s3://bucket/key`` URL."""


@dataclass(frozen=True)
class Piece:
    shard: int
    """Index into `ShardedTable.files`."""
    row_group: int | None
    """Parquet row group; None: the whole CSV / JSONL shard."""
    rows: int | None
    """Rows in the piece when the metadata says (Parquet); None for text shards."""


@dataclass(frozen=True)
class ShardedTable:
    files: list[Shard]
    format: str
    """"parquet", "csv" or "jsonl" (one format for all shards)."""
    pieces: list[Piece]
    delimiter: str | None
    decoded_bytes: int
    """Estimated size of the whole table in memory (Parquet: its rows x the decoded
    size of its first 256 rows, at least the uncompressed size its metadata records;
    CSV / JSONL: file size x `_TEXT_EXPANSION`)."""
    sizes: list[int] = field(default_factory=list)
    """Bytes of each of `files` (an object's size, known from the listing, saves a
    request per open)."""

    @property
    def folder(self) -> str:
        """Where the shards are, for messages: the first shard's folder or prefix."""
        first = self.files[0]
        return str(first.parent) if isinstance(first, Path) else first.rsplit("/", 1)[0]

    @property
    def rows(self) -> int | None:
        """Rows in the table when every piece's count is known (Parquet), else None."""
        counts = [p.rows for p in self.pieces]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]

    def read(
        self, piece: Piece, columns: list[str] | None, block_rows: int
    ) -> Iterator[pd.DataFrame]:
        """The piece's rows as frames of at most `block_rows` rows, in file order;
        `columns`: only these (None: all)."""
        if self.arrow_readable:
            for batch in self.read_arrow(piece, columns, block_rows):
                yield batch.to_pandas()
            return
        path = self.files[piece.shard]
        size = self.sizes[piece.shard] if self.sizes else None
        try:
            with _opened(path, size, text=True) as source:
                yield from _read_jsonl(source, columns, block_rows)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {path}: {e}") from e

    def read_arrow(
        self,
        piece: Piece,
        columns: list[str] | None,
        block_rows: int,
        *,
        dictionaries: list[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """`read` without pandas, for Parquet and CSV (`arrow_readable`): the piece's
        rows as Arrow record batches of at most `block_rows` rows. `dictionaries`:
        string columns to read from Parquet as Arrow dictionaries (what is stored, for
        columns of few distinct values: half the decoding, and the values can be
        looked up once per block instead of once per row)."""
        path = self.files[piece.shard]
        if not self.arrow_readable:
            raise DataError(f"{self.format} shards are read through pandas ({path})")
        size = self.sizes[piece.shard] if self.sizes else None
        try:
            with _opened(path, size, text=self.format != "parquet") as source:
                if self.format == "parquet":
                    yield from _read_parquet(
                        source, piece.row_group, columns, block_rows, dictionaries
                    )
                else:
                    yield from _read_csv(source, self.delimiter, columns, block_rows)
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(f"cannot read {path}: {e}") from e

    @property
    def arrow_readable(self) -> bool:
        """Whether `read_arrow` reads this table (JSONL goes through pandas' reader)."""
        return self.format != "jsonl"

    def head(self, rows: int, columns: list[str] | None = None) -> pd.DataFrame:
        """The first `rows` rows of the table (in piece order), for inferring types."""
        frames, seen = [], 0
        for piece in self.pieces:
            for frame in self.read(piece, columns, min(rows, 65_536)):
                frames.append(frame)
                seen += len(frame)
                if seen >= rows:
                    return pd.concat(frames, ignore_index=True).iloc[:rows]
        if not frames:
            raise DataError(f"data has no rows: {self.files[0]}")
        return pd.concat(frames, ignore_index=True)


def open_shards(path: str | Path, format: str, delimiter: str | None) -> ShardedTable:
    """`path` (a file, a directory of shards or a glob such as `data/part-*.parquet`;
    or the same in object storage: ``s3://bucket/key``, ``s3://bucket/prefix/``,
    ``s3://bucket/prefix/*.parquet``) as a `ShardedTable`. Shards are sorted by name, so
    the order (and with it every seeded shuffle) does not depend on the file system."""
    listed = _object_shards(str(path)) if is_url(path) else _local_shards(Path(path))
    files, sizes = [f for f, _ in listed], [n for _, n in listed]
    fmt = format if format != "auto" else _format_of(files[0])
    if fmt not in ("parquet", "csv", "jsonl"):
        raise DataError(
            f"data.format '{fmt}' cannot be streamed: {path}",
            hint="stream Parquet, CSV or JSONL shards, or set data.streaming: false",
        )
    mixed = sorted({_format_of(f) for f in files} - {fmt}) if format == "auto" else []
    if mixed:
        raise DataError(f"{path} mixes {fmt} shards with {', '.join(mixed)} ones; use one format")
    pieces: list[Piece] = []
    decoded = 0
    for i, (file, size) in enumerate(listed):
        if fmt == "parquet":
            meta = _parquet_metadata(file, size)
            for g in range(meta.num_row_groups):
                group = meta.row_group(g)
                pieces.append(Piece(i, g, group.num_rows))
                decoded += group.total_byte_size
        else:
            pieces.append(Piece(i, None, None))
            decoded += int(size * _TEXT_EXPANSION)
    sep = delimiter
    if fmt == "csv" and sep is None:
        sep = sniff_delimiter(files[0])
    table = ShardedTable(files, fmt, pieces, sep, decoded, sizes)
    if fmt == "parquet" and table.rows:
        # The metadata's sizes are of the encoded pages: a dictionary-encoded string
        # column decodes to many times that. Its first rows, decoded, say how much.
        head = next(table.read(pieces[0], None, _SIZE_PROBE_ROWS), None)
        if head is not None and len(head):
            per_row = head.memory_usage(deep=True, index=False).sum() / len(head)
            table = replace(table, decoded_bytes=max(decoded, int(per_row * table.rows)))
    return table


def available_memory() -> int:
    """Bytes this process may still use: the machine's available memory, lowered by a
    cgroup (container) limit or an address-space / data rlimit when one is set."""
    import resource

    import psutil

    process = psutil.Process()
    used = process.memory_info()
    limits = [psutil.virtual_memory().available]
    for kind, in_use in ((resource.RLIMIT_AS, used.vms), (resource.RLIMIT_DATA, used.rss)):
        soft, _ = resource.getrlimit(kind)
        if soft != resource.RLIM_INFINITY:
            limits.append(max(soft - in_use, 0))
    cgroup = Path("/sys/fs/cgroup/memory.max")  # cgroup v2; "max" when unlimited
    try:
        text = cgroup.read_text().strip()
        if text != "max":
            current = int(Path("/sys/fs/cgroup/memory.current").read_text())
            limits.append(max(int(text) - current, 0))
    except (OSError, ValueError):
        pass
    return min(limits)


# ---------------------------------------------------------------------------- helpers


def _local_shards(path: Path) -> list[tuple[Path, int]]:
    """The shard files `path` names, sorted, with their sizes in bytes."""
    text = str(path)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        where = f"no file matches the glob {text}"
    elif path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMAT_BY_SUFFIX
        )
        where = f"directory {path} holds no .parquet, .csv or .jsonl shard"
    elif path.exists():
        files, where = [path], ""
    else:
        raise DataError(f"data file not found: {path}")
    if not files:
        raise DataError(where, hint="check data.path")
    return _non_empty([(f, f.stat().st_size) for f in files])


def _object_shards(url: str) -> list[tuple[str, int]]:
    """The objects `url` names (a key, a prefix or a glob), sorted by key, with their
    sizes from the listing. DataError naming the URL when the bucket, prefix or
    credentials are wrong."""
    from foundry.objectstore import describe_failure, filesystem, split_url

    bucket, key = split_url(url, error=DataError, what="data.path")
    fs = filesystem(error=DataError)
    check = (
        "check data.path (list it with `aws s3 ls`), and FOUNDRY_S3_ENDPOINT_URL / "
        "AWS_ENDPOINT_URL when the data is not on AWS"
    )
    where = f"no object or prefix {url}, or no {_LISTED} under it"
    try:
        try:
            if any(ch in key for ch in "*?["):
                where = f"no object matches the glob {url}"
                found = fs.glob(url, detail=True)
            else:
                info = fs.info(url) if key else {"type": "directory"}
                if info["type"] == "file":
                    found = {info["name"]: info}
                else:  # a prefix: every shard below it (S3 has keys, not directories)
                    found = {
                        name: entry
                        for name, entry in fs.find(url, detail=True).items()
                        if PurePosixPath(name).suffix.lower() in FORMAT_BY_SUFFIX
                    }
        except FileNotFoundError:  # no such key or prefix, or no such bucket
            found = {}
        shards = sorted(
            (f"s3://{name}", int(entry["size"]))
            for name, entry in found.items()
            if entry.get("type", "file") == "file"
        )
        if not shards and not fs.exists(bucket):
            raise DataError(
                f"data.path {url}: bucket '{bucket}' does not exist (or these credentials "
                "cannot see it)",
                hint=check,
            )
    except DataError:
        raise
    except Exception as e:  # botocore / aiohttp: credentials, endpoint, network
        raise DataError(f"cannot list data.path {url}: {describe_failure(e)}", hint=check) from e
    if not shards:
        raise DataError(f"data.path {where}", hint=check)
    return _non_empty(shards)


def _non_empty(listed: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
    empty = [f for f, size in listed if size == 0]
    if empty:
        raise DataError(f"data file is empty (0 bytes): {empty[0]}")
    return listed


@contextmanager
def _opened(file: Shard, size: int | None, *, text: bool) -> Iterator[Any]:
    """What the readers read: a local path as it is; an object as a binary file whose
    reads are ranged GETs (Parquet: exactly the ranges pyarrow asks for; CSV / JSONL:
    sequential reads of `_TEXT_BLOCK` bytes ahead). A failure of object storage while
    the block runs (credentials, endpoint, network) is a DataError naming the URL;
    OSError and ValueError (a malformed file) are left to the caller, which names it."""
    if not isinstance(file, str):
        yield file
        return
    from foundry.objectstore import describe_failure, filesystem

    fs = filesystem(error=DataError)  # this process's own (fsspec keeps one per process)
    if text:
        options: dict[str, Any] = {"block_size": _TEXT_BLOCK, "cache_type": "readahead"}
    else:
        options = {"cache_type": "none"}  # pyarrow asks for whole column chunks
    try:
        with fs.open(file, "rb", size=size, **options) as handle:
            yield handle
    except FileNotFoundError as e:
        raise DataError(f"data file not found: {file}") from e
    except (DataError, OSError, ValueError):
        raise
    except Exception as e:  # botocore / aiohttp raise many kinds
        raise DataError(f"cannot read {file}: {describe_failure(e)}") from e


def _format_of(file: Shard) -> str:
    suffix = PurePosixPath(str(file)).suffix
    fmt = FORMAT_BY_SUFFIX.get(suffix.lower())
    if fmt is None:
        raise DataError(
            f"unsupported file extension '{suffix}' for {file}; allowed: "
            + ", ".join(FORMAT_BY_SUFFIX)
            + " (or set data.format)"
        )
    return fmt


def _parquet_metadata(file: Shard, size: int):  # -> pyarrow.parquet.FileMetaData
    import pyarrow.parquet as pq

    try:
        with _opened(file, size, text=False) as source:
            return pq.ParquetFile(source).metadata
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {file} as Parquet: {e}") from e


def _read_parquet(
    source: Any,
    row_group: int | None,
    columns: list[str] | None,
    block_rows: int,
    dictionaries: list[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    # (columns that do not hold strings are read as they are)
    read = [c for c in dictionaries or [] if columns is None or c in columns]
    # an object: a row group's column chunks in one coalesced ranged GET (pre_buffer),
    # rather than one request per column; a local file is read as it always was
    file = pq.ParquetFile(
        source, pre_buffer=not isinstance(source, Path), read_dictionary=read or None
    )
    groups = None if row_group is None else [row_group]
    yield from file.iter_batches(batch_size=block_rows, row_groups=groups, columns=columns)


def _read_csv(
    path: Any, delimiter: str | None, columns: list[str] | None, block_rows: int
) -> Iterator[pa.RecordBatch]:
    import pyarrow.csv as pacsv

    # Arrow reads in byte blocks; ~100 bytes a row turns block_rows into a block size.
    read = pacsv.ReadOptions(block_size=max(block_rows * 100, 1 << 20))
    parse = pacsv.ParseOptions(delimiter=delimiter or ",")
    convert = pacsv.ConvertOptions(include_columns=columns)
    with pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert) as r:
        yield from r


def _read_jsonl(path: Any, columns: list[str] | None, block_rows: int) -> Iterator[pd.DataFrame]:
    if not isinstance(path, Path):  # an object: pandas reads lines from a text stream
        path = io.TextIOWrapper(path, encoding="utf-8")
    with pd.read_json(path, lines=True, chunksize=block_rows) as reader:
        for frame in reader:
            yield frame if columns is None else frame[columns]
