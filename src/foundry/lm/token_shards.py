"""Corpora tokenized once into memory-mapped token shards, and training rows read by offset.

The in-memory path (`lm.data.load_lm_data` → `corpus_blocks`) holds every document and
then every token as int64 (8 bytes a token): a 10 GB corpus cannot train. Here a corpus
file is read as a stream of documents, several times, never whole:

    count      documents in the file → the seeded split (`data.split`, by document,
               the same split `load_lm_data` draws)
    tokenizer  (gpt) the BPE learned on the training documents, streamed to it
    shards     every document tokenized, in file order, appended to shard files of
               `SHARD_TOKENS` tokens (uint16 when the vocabulary has <= 65,536 ids,
               else uint32), with each document's start offset

The result lives under `<output_dir>/token_shards/<key>/`, beside the runs, where `key`
hashes the corpus bytes, how they are read (column, PII settings), the split and the
tokenizer: a second run on the same corpus with the same tokenizer reuses it (only the
corpus is hashed again), and a changed corpus or tokenizer builds a new one. A build is
written to a temporary folder and renamed when complete, so a killed build is never
reused. (The GPT tokenizer is cached the same way, as `tokenizer-<key>.json`.)

With an encryption key set (FOUNDRY_ENCRYPTION_KEY, docs/SECURITY.md) the shards, the
document offsets, the split orders and the cached tokenizer are written through
`foundry.crypto` (the shards streamed a chunk at a time), and a shard is read through
`crypto.ChunkReader`: only the chunks holding the requested tokens are decrypted, not the
whole shard. Whether a key is set is part of the folder key, so a folder written in clear
is never taken for an encrypted one or the reverse; meta.json (counts, settings, hashes)
stays in clear.

A split's token stream is its documents in split order, each followed by EOS: the
stream `corpus_blocks` builds from the same documents. `TokenWindows` cuts it into rows
of `block_size` exactly as `corpus_blocks` does and reads each row from the shards when
a batch asks for it, so training on the windows is training on the same rows.

    windows = open_corpus_splits(...)["train"]    # TokenWindows
    windows.input_ids[idx], windows.labels[idx]   # int64 [len(idx), block_size]
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

import foundry.crypto as crypto
from foundry.config.schema import FoundryConfig
from foundry.errors import ConfigError, DataError
from foundry.lm.data import IGNORE, iter_jsonl_records, split_positions
from foundry.lm.tokenizer import TokenizerLike

__all__ = [
    "SHARD_TOKENS",
    "StreamedCorpus",
    "TokenWindows",
    "corpus_documents",
    "streamable_corpus",
]

SHARD_TOKENS = 1 << 27
"""Tokens per shard file (256 MiB as uint16): files a filesystem and a copy handle well."""
SHARD_CHUNK = 1 << 12
"""Plaintext bytes per encrypted chunk of a shard (a key set): 4 KiB, not the 1 MiB of
other files, because a row read by offset decrypts every chunk it touches; random rows
read 12x faster than from 1 MiB chunks, for 16 bytes of tag per 4 KiB (0.4% on disk)
(benchmarks/token_shards.py --encrypted, docs/BENCHMARKS.md)."""
FORMAT = 1
"""Bumped when the shard layout changes: older shard folders are then rebuilt."""
_ENCODE_BATCH = 1024  # documents tokenized per `encode_batch` call (parallel in Rust)
_SCRUB_BATCH = 4096  # documents scrubbed of personal data at once


# ------------------------------------------------------------------ reading a corpus


def streamable_corpus(cfg: FoundryConfig, path: Path) -> bool:
    """Whether `data.path` is a corpus this module reads as a stream: one `.txt` file,
    or a JSONL / Parquet file whose text column holds the documents (not instruction
    data), with no explicit val / test files. Other data goes through `load_lm_data`."""
    data, lm = cfg.data, cfg.lm
    if data.val_path or data.test_path or not path.is_file():
        return False
    suffix = path.suffix.lower()
    if data.format == "auto" and suffix == ".txt":
        return True
    if data.format == "jsonl" or (data.format == "auto" and suffix in (".jsonl", ".ndjson")):
        with path.open(encoding="utf-8", errors="replace") as f:
            first = next((line for line in f if line.strip()), "")
        try:
            keys = set(json.loads(first))
        except (json.JSONDecodeError, TypeError):
            return False  # load_lm_data reports the bad line
    elif data.format == "parquet" or (data.format == "auto" and suffix == ".parquet"):
        import pyarrow.parquet as pq

        keys = set(pq.ParquetFile(path).schema_arrow.names)
    else:
        return False
    instructions = lm.messages_column in keys or {lm.prompt_column, lm.completion_column} <= keys
    return lm.text_column in keys and not instructions


def corpus_documents(path: Path, cfg: FoundryConfig) -> Iterator[str]:
    """The documents of a corpus file, in file order, read a line / row group at a
    time: the same documents `read_lm_file` returns (blank-line separated `.txt`; the
    non-empty text column of JSONL / Parquet)."""
    from foundry.lm.data import _text_field

    suffix, column = path.suffix.lower(), cfg.lm.text_column
    if cfg.data.format == "auto" and suffix == ".txt":
        yield from _text_documents(path)
    elif suffix == ".parquet" or cfg.data.format == "parquet":
        import pyarrow.parquet as pq

        rows = 0
        for batch in pq.ParquetFile(path).iter_batches(columns=[column], batch_size=4096):
            for value in batch.column(0).to_pylist():
                rows += 1
                text = _text_field({column: value}, column, f"{path}, row {rows}", required=False)
                if text and text.strip():
                    yield text
    else:
        for number, record in iter_jsonl_records(path):
            text = _text_field(record, column, f"{path}, line {number}", required=False)
            if text and text.strip():
                yield text


_BLANK = " \t\r\f\v\n"  # what `_BLANK_LINES` in lm.data counts as a blank line


def _text_documents(path: Path) -> Iterator[str]:
    """Blank-line separated documents of a UTF-8 text file, a line at a time."""
    lines: list[str] = []
    try:
        with path.open(encoding="utf-8", newline="") as f:
            for line in f:
                if line.strip(_BLANK):
                    lines.append(line)
                elif lines:
                    doc = "".join(lines).strip()
                    lines = []
                    if doc:
                        yield doc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text: {exc}") from exc
    doc = "".join(lines).strip()
    if doc:
        yield doc


def _scrubbed(docs: Iterator[str], cfg: FoundryConfig, report: list[dict]) -> Iterator[str]:
    """`data.pii` applied a batch of documents at a time (as `lm.data.scrub_examples`
    applies it to all at once); each batch's report is appended to `report`."""
    if not cfg.data.pii.enabled:
        yield from docs
        return
    from foundry.data.scrub import PIIScrubber
    from foundry.lm.data import lm_pii_settings

    settings, scrubber = lm_pii_settings(cfg.data.pii), None
    batch: list[str] = []
    for doc in _with_end(docs):
        if doc is not None:
            batch.append(doc)
        if batch and (doc is None or len(batch) == _SCRUB_BATCH):
            frame = pd.DataFrame({"text": batch}, dtype=object)
            if scrubber is None:  # the text column's rules do not depend on the rows
                scrubber = PIIScrubber.fit(frame, settings, target=None)
            done, part = scrubber.scrub(frame)
            report.append(part)
            yield from done["text"].tolist()
            batch = []


def _with_end(docs: Iterator[str]) -> Iterator[str | None]:
    yield from docs
    yield None


# -------------------------------------------------------------------- the shards


@dataclass(frozen=True)
class StreamedCorpus:
    """What `prepare_corpus` built or reused: stands where `LMData` does for a corpus."""

    kind: str
    sizes: dict[str, int]
    """Documents per split."""
    folder: Path
    """The token shard folder."""
    reused: bool
    pii: dict[str, Any] | None = None

    def summary(self, path: object) -> str:
        s = self.sizes
        return (f"data: {path} (corpus, streamed; documents train/val/test = "
                f"{s['train']}/{s['val']}/{s['test']})")  # fmt: skip


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _reading(cfg: FoundryConfig, corpus_sha: str) -> dict[str, Any]:
    """Everything that decides which documents a split holds, as text."""
    return {
        "corpus": corpus_sha,
        "format": cfg.data.format,
        "text_column": cfg.lm.text_column,
        "pii": cfg.data.pii.model_dump(mode="json"),
        # `hash` output depends on the salt, which is never stored: only its digest is
        "salt": hashlib.sha256(os.environ.get(cfg.data.pii.salt_env, "").encode()).hexdigest(),
        "split": cfg.data.split.model_dump(mode="json"),
    }


def prepare_corpus(
    path: Path,
    cfg: FoundryConfig,
    cache: Path,
    make_tokenizer: Callable[[Callable[[], Iterator[str]]], TokenizerLike],
    tokenizer_json: Callable[[TokenizerLike], str],
    *,
    tokenizer_key: dict[str, Any] | None = None,
    load_tokenizer: Callable[[str], TokenizerLike] | None = None,
) -> tuple[StreamedCorpus, TokenizerLike]:
    """Token shards of the corpus `path` under `cache` (built, or reused when the corpus
    bytes, reading settings, split and tokenizer match), and the tokenizer.

    `make_tokenizer(train_texts)` returns the tokenizer; `train_texts()` streams the
    training documents (scrubbed) to a tokenizer that learns from them. With
    `tokenizer_key` (what else decides it, e.g. the vocabulary size) and
    `load_tokenizer(json)` the tokenizer is cached under `cache` too.
    """
    from foundry.data.fingerprint import file_fingerprint

    if path.stat().st_size == 0:
        raise DataError(f"data file is empty (0 bytes): {path}")
    reading = _reading(cfg, file_fingerprint([path]))
    counted: dict[str, Any] = {}

    def split() -> dict[str, np.ndarray]:
        if not counted:  # one streaming pass, only when something has to be built
            n = sum(1 for _ in corpus_documents(path, cfg))
            if n == 0:
                raise DataError(f"{path}: no text in the data (every document is empty)")
            counted.update(split_positions(n, cfg.data.split, path, "corpus"))
        return counted

    def train_texts() -> Iterator[str]:
        in_train = np.zeros(sum(len(v) for v in split().values()), dtype=bool)
        in_train[split()["train"]] = True
        docs = _scrubbed(corpus_documents(path, cfg), cfg, [])
        return (doc for i, doc in enumerate(docs) if in_train[i])

    # With a key set, the cached files are encrypted: a different name than in clear, so
    # neither kind is taken for the other (the plain names are those of before).
    sealed = ["encrypted"] if crypto.enabled() else []
    tokenizer = None
    tok_file = None
    if tokenizer_key is not None and load_tokenizer is not None:
        tok_file = cache / f"tokenizer-{_key(reading, tokenizer_key, *sealed)[:20]}.json"
        if tok_file.is_file():
            tokenizer = load_tokenizer(crypto.read_text(tok_file))
    if tokenizer is None:
        tokenizer = make_tokenizer(train_texts)
        if tok_file is not None:
            _write_atomic(tok_file, tokenizer_json(tokenizer))
    tok_sha = hashlib.sha256(tokenizer_json(tokenizer).encode()).hexdigest()
    folder = cache / _key(FORMAT, reading, tok_sha, *sealed)[:20]
    reused = (folder / "meta.json").is_file()
    if not reused:
        _build(folder, path, cfg, tokenizer, split(), reading, tok_sha)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    corpus = StreamedCorpus("corpus", meta["documents"], folder, reused, meta.get("pii"))
    return corpus, tokenizer


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)  # only now: bad data leaves no folder
    crypto.write_text(tmp, text, fsync=False)  # encrypted when a key is set
    os.replace(tmp, path)


def _open_shard(path: Path) -> Any:
    """A shard file to append tokens to: encrypted a chunk at a time when a key is set."""
    ring = crypto.keyring()
    if ring is None:
        return path.open("wb")
    return crypto.EncryptingWriter(path, ring.current, chunk=SHARD_CHUNK)


def _save_npy(path: Path, values: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, values)
    crypto.write_bytes(path, buffer.getvalue(), fsync=False)


def _load_npy(path: Path) -> np.ndarray:
    """An offsets / split file: memory-mapped in clear, else decrypted into memory (8
    bytes a document: small beside the tokens)."""
    if not crypto.is_encrypted(path):
        return np.load(path, mmap_mode="r")
    return np.load(io.BytesIO(crypto.read_bytes(path)))


def _build(
    folder: Path,
    path: Path,
    cfg: FoundryConfig,
    tokenizer: TokenizerLike,
    split: dict[str, np.ndarray],
    reading: dict[str, Any],
    tok_sha: str,
) -> None:
    """Tokenize every document of `path` in file order into shards under `folder`."""
    from foundry.data.scrub import merge_reports

    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    starts = array("q", [0])  # document i: tokens [starts[i], starts[i + 1])
    shard, shard_file, written = 0, _open_shard(tmp / "shard-00000.bin"), 0
    encode_batch = getattr(tokenizer, "encode_batch", None)
    reports: list[dict] = []

    def write(ids: np.ndarray) -> None:
        nonlocal shard, shard_file, written
        while len(ids):
            room = SHARD_TOKENS - written
            if room == 0:
                shard_file.close()
                shard, written = shard + 1, 0
                shard_file = _open_shard(tmp / f"shard-{shard:05d}.bin")
                continue
            shard_file.write(ids[:room].tobytes())
            written += min(room, len(ids))
            ids = ids[room:]

    batch: list[str] = []
    for doc in _with_end(_scrubbed(corpus_documents(path, cfg), cfg, reports)):
        if doc is not None:
            batch.append(doc)
        if batch and (doc is None or len(batch) == _ENCODE_BATCH):
            encoded = encode_batch(batch) if encode_batch else map(tokenizer.encode, batch)
            for ids in encoded:
                write(np.asarray(ids, dtype=dtype))
                starts.append(starts[-1] + len(ids))
            batch = []
    shard_file.close()
    _save_npy(tmp / "documents.npy", np.frombuffer(starts, dtype=np.int64))
    for name, positions in split.items():
        _save_npy(tmp / f"split-{name}.npy", np.asarray(positions, dtype=np.int64))
    meta = {
        "format": FORMAT,
        "dtype": np.dtype(dtype).name,
        "tokens": int(starts[-1]),
        "shards": shard + 1,
        "shard_tokens": SHARD_TOKENS,
        "documents": {name: len(positions) for name, positions in split.items()},
        "eos_id": tokenizer.eos_id,
        "pad_id": tokenizer.pad_id,
        "tokenizer_sha256": tok_sha,
        "encrypted": crypto.enabled(),
        "reading": reading,
        "pii": merge_reports(reports) if reports else None,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    if folder.is_dir() and not (folder / "meta.json").is_file():
        shutil.rmtree(folder)  # what a killed build (or a hand) left: never complete
    try:
        os.rename(tmp, folder)
    except OSError:  # another process finished the same build first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)


# -------------------------------------------------------------------- the windows


class _SealedShard:
    """An encrypted shard, sliced like the memory map of a plain one: the tokens of a
    slice are read through `crypto.ChunkReader` (only the chunks covering them are
    decrypted, the last few kept)."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        # 64 KiB a shard: the chunks of the last rows read (a document's next row is
        # likely there); a random row of a large corpus hits no cache of any size
        self.reader, self.dtype = crypto.ChunkReader(path, cache_bytes=1 << 16), dtype

    def __getitem__(self, part: slice) -> np.ndarray:
        size = self.dtype.itemsize
        raw = self.reader.read(part.start * size, (part.stop - part.start) * size)
        return np.frombuffer(raw, dtype=self.dtype)


class TokenShards:
    """The tokens of a shard folder, read by [start, stop) offset: memory-mapped, or
    through `_SealedShard` when the files are encrypted."""

    def __init__(self, folder: Path) -> None:
        self.meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if self.meta.get("format") != FORMAT:
            raise DataError(f"{folder}: token shards of format {self.meta.get('format')}; "
                            f"delete the folder to rebuild it")  # fmt: skip
        dtype, n = np.dtype(self.meta["dtype"]), self.meta["tokens"]
        self.shard_tokens = self.meta["shard_tokens"]
        self.shards = []
        for i in range(self.meta["shards"]):
            size = min(self.shard_tokens, n - i * self.shard_tokens)
            f = folder / f"shard-{i:05d}.bin"
            # np.memmap cannot map 0 bytes: an empty corpus has one empty shard
            if size == 0:
                self.shards.append(np.zeros(0, dtype=dtype))
            elif crypto.is_encrypted(f):
                self.shards.append(_SealedShard(f, dtype))
            else:
                self.shards.append(np.memmap(f, dtype=dtype, mode="r"))
        self.starts = _load_npy(folder / "documents.npy")
        self.folder = folder

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the whole corpus (file order) as int64."""
        parts = []
        while start < stop:
            shard, offset = divmod(start, self.shard_tokens)
            take = min(stop - start, self.shard_tokens - offset)
            parts.append(self.shards[shard][offset : offset + take])
            start += take
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def windows(self, split: str, block_size: int) -> TokenWindows:
        order = np.asarray(_load_npy(self.folder / f"split-{split}.npy"))
        return TokenWindows(self, order, block_size)


class TokenWindows:
    """A split's rows of `block_size` tokens, read from the shards when indexed: the
    same `input_ids` / `labels` (int64 [N, block_size]) `corpus_blocks` builds from the
    split's documents, for `fit_lm` and `evaluate_tokens` to index like tensors."""

    def __init__(self, shards: TokenShards, order: np.ndarray, block_size: int) -> None:
        self.shards, self.order, self.block_size = shards, order, block_size
        starts = shards.starts
        lengths = starts[order + 1] - starts[order] + 1  # + the EOS after each document
        # cum[j]: where the split's j-th document starts in the split's stream
        self.cum = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.n = int(self.cum[-1])  # stream length
        self.n_rows = math.ceil((self.n - 1) / block_size) if self.n >= 2 else 0
        self.eos, self.pad = shards.meta["eos_id"], shards.meta["pad_id"]
        self._last: tuple[bytes, tuple[Tensor, Tensor]] | None = None
        self.input_ids = _Rows(self, 0, torch.device("cpu"))
        self.labels = _Rows(self, 1, torch.device("cpu"))

    def __len__(self) -> int:
        return self.n_rows

    @property
    def n_targets(self) -> int:
        """Every stream position after the first is a target exactly once."""
        return max(self.n - 1, 0)

    def stream(self, start: int, stop: int) -> np.ndarray:
        """Positions [start, stop) of the split's stream (documents + EOS) as int64."""
        stop = min(stop, self.n)
        out = np.empty(max(stop - start, 0), dtype=np.int64)
        j = int(np.searchsorted(self.cum, start, side="right")) - 1
        pos = start
        while pos < stop:
            doc = int(self.order[j])
            first, last = int(self.shards.starts[doc]), int(self.shards.starts[doc + 1])
            begin = pos - int(self.cum[j])  # offset inside this document (+ EOS)
            end = min(stop - int(self.cum[j]), last - first + 1)
            tokens = self.shards.read(first + begin, first + min(end, last - first))
            out[pos - start : pos - start + len(tokens)] = tokens
            if end == last - first + 1:  # the EOS after the document is inside
                out[pos - start + len(tokens)] = self.eos
            pos = int(self.cum[j]) + end
            j += 1
        return out

    def rows(self, idx: Tensor | slice | list[int]) -> tuple[Tensor, Tensor]:
        """(input_ids, labels) int64 [len(idx), block_size] of rows `idx`."""
        if isinstance(idx, slice):
            rows = np.arange(self.n_rows)[idx]
        elif isinstance(idx, Tensor):
            rows = idx.cpu().numpy()
        else:
            rows = np.asarray(idx, dtype=np.int64)
        # fit_lm asks for a batch's input_ids and then its labels: read the rows once
        key = rows.tobytes()
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        self._last = (key, self._read(rows))
        return self._last[1]

    def _read(self, rows: np.ndarray) -> tuple[Tensor, Tensor]:
        b = self.block_size
        ids = np.full((len(rows), b), self.pad, dtype=np.int64)
        labels = np.full((len(rows), b), IGNORE, dtype=np.int64)
        for r, k in enumerate(rows):
            seg = self.stream(int(k) * b, int(k) * b + b + 1)  # block k reads B + 1 tokens
            ids[r, : min(len(seg), b)] = seg[:b]
            labels[r, : max(len(seg) - 1, 0)] = seg[1:]
        return torch.from_numpy(ids), torch.from_numpy(labels)

    def target_counts(self, vocab_size: int) -> Tensor:
        """float64 [vocab_size]: how often each token is a target, read a chunk at a time."""
        counts = torch.zeros(vocab_size, dtype=torch.float64)
        chunk = 1 << 22
        for start in range(1, self.n, chunk):
            ids = torch.from_numpy(self.stream(start, min(start + chunk, self.n)))
            counts += torch.bincount(ids, minlength=vocab_size).double()
        return counts


class _Rows:
    """`windows.input_ids` / `.labels`: index like an int64 [N, block_size] tensor."""

    def __init__(self, windows: TokenWindows, part: int, device: torch.device) -> None:
        self.windows, self.part, self.device = windows, part, device

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.windows), self.windows.block_size)

    def to(self, device: torch.device | str) -> _Rows:
        return _Rows(self.windows, self.part, torch.device(device))

    def __getitem__(self, idx: Tensor | slice | list[int]) -> Tensor:
        return self.windows.rows(idx)[self.part].to(self.device)


def open_corpus_splits(corpus: StreamedCorpus, block_size: int) -> dict[str, TokenWindows]:
    """split name → `TokenWindows` of `block_size` over the shards of `corpus`."""
    if block_size < 1:
        raise ConfigError(f"lm.block_size must be >= 1, got {block_size}")
    shards = TokenShards(corpus.folder)
    return {name: shards.windows(name, block_size) for name in ("train", "val", "test")}
