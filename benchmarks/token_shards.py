"""Language-model corpora: token shards (streamed) vs the in-memory path, peak memory.

    PYTHONPATH=src python benchmarks/token_shards.py                 # 20 and 80 MB corpora
    PYTHONPATH=src python benchmarks/token_shards.py --sizes-mb 50,200

Writes a `.txt` corpus of the given size (documents of 20-400 words drawn from a 5,000
word vocabulary, blank-line separated), trains one byte-level BPE (vocabulary 8,000) on
the first 2,000 documents, and then, each in a fresh subprocess:

    memory   `load_lm_data` + `encode_examples`: every document, then every token as int64
    shards   `lm.token_shards.prepare_corpus`: counted, split and tokenized a batch of
             documents at a time into uint16 shards (`data.pii` off in both, so the
             figure is the tokenizing path's)
    reuse    the same call again: the shards are found by the corpus hash and reused

Reported: peak RSS (`ru_maxrss`), seconds, and for shards the rows of 256 tokens read per
second by offset (random batches of 32). The target: shard memory flat in corpus size.

    PYTHONPATH=src python benchmarks/token_shards.py --encrypted --sizes-mb 8

Encryption at rest (issue 20): the same corpus built into shards twice, in clear and with
FOUNDRY_ENCRYPTION_KEY set, then rows read from both in one process, alternating rounds
of 1 s each after a warm-up: random batches of 32 rows (each row in another chunk) and
the split's rows in order. `--chunks-kb` lists the chunk sizes the encrypted shards are
built with, one build each (the header records it; `lm.token_shards.SHARD_CHUNK`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BLOCK = 256
VOCAB = 8000


def write_corpus(path: Path, megabytes: int) -> None:
    if path.exists():
        return
    rng = random.Random(0)
    words = ["".join(rng.choice("etaoinshrdlucmfw") for _ in range(rng.randint(2, 9)))
             for _ in range(5000)]  # fmt: skip
    target = megabytes << 20
    with path.open("w", encoding="utf-8") as f:
        written = 0
        while written < target:
            doc = " ".join(rng.choices(words, k=rng.randint(20, 400))) + ".\n\n"
            written += f.write(doc)


def config(path: Path, workdir: Path) -> Any:
    from foundry.config.load import validate_config

    return validate_config({
        "name": "shards",
        "data": {"path": str(path), "pii": {"enabled": False}},
        "model": {"type": "gpt", "vocab_size": VOCAB},
        "output_dir": str(workdir / "runs"),
    })  # fmt: skip


def child(mode: str, corpus: str, tokenizer_file: str, workdir: str) -> dict[str, Any]:
    import torch

    from foundry.config import LoadedConfig
    from foundry.lm.tokenizer import BPETokenizer

    path, work = Path(corpus), Path(workdir)
    cfg = config(path, work)
    tokenizer = BPETokenizer.from_json(Path(tokenizer_file).read_text())
    started = time.perf_counter()
    out: dict[str, Any] = {"mode": mode, "corpus_mb": path.stat().st_size / 2**20}
    if mode == "memory":
        from foundry.lm.data import encode_examples, load_lm_data

        data = load_lm_data(LoadedConfig(cfg, work))
        rows = encode_examples(data.train, tokenizer, block_size=BLOCK)
        out["rows"] = len(rows)
    else:
        from foundry.lm.token_shards import open_corpus_splits, prepare_corpus

        corpus, _ = prepare_corpus(path, cfg, work / "runs" / "token_shards",
                                   lambda _texts: tokenizer, BPETokenizer.to_json)  # fmt: skip
        out["reused"] = corpus.reused
        windows = open_corpus_splits(corpus, BLOCK)["train"]
        out["rows"] = len(windows)
        out["seconds"] = time.perf_counter() - started
        gen = torch.Generator().manual_seed(0)
        read_start, n_read = time.perf_counter(), 0
        while time.perf_counter() - read_start < 2.0:
            idx = torch.randint(len(windows), (32,), generator=gen)
            windows.input_ids[idx], windows.labels[idx]
            n_read += 32
        out["rows_per_s"] = n_read / (time.perf_counter() - read_start)
    out.setdefault("seconds", time.perf_counter() - started)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def encrypted(corpus: Path, tokenizer_file: Path, work: Path, chunks_kb: list[int],
              rounds: int) -> None:  # fmt: skip
    """Rows/s read from plain vs encrypted shards of `corpus` (one build per chunk size),
    alternating."""
    import os

    import torch

    import foundry.crypto as crypto
    from foundry.lm import token_shards
    from foundry.lm.token_shards import open_corpus_splits, prepare_corpus
    from foundry.lm.tokenizer import BPETokenizer

    shutil.rmtree(work, ignore_errors=True)  # a new key each run: build afresh
    cfg = config(corpus, work)
    tokenizer = BPETokenizer.from_json(tokenizer_file.read_text())
    windows = {}
    for kb in [0, *chunks_kb]:
        mode = f"encrypted, {kb} KiB chunks" if kb else "plain"
        if kb:
            os.environ.setdefault(crypto.ENV_KEY, crypto.new_key())
            token_shards.SHARD_CHUNK = kb << 10
        started = time.perf_counter()
        built, _ = prepare_corpus(corpus, cfg, work / f"token_shards-{kb}",
                                  lambda _texts: tokenizer, BPETokenizer.to_json)  # fmt: skip
        print(f"{mode:<26} shards built in {time.perf_counter() - started:5.1f}s, "
              f"{sum(p.stat().st_size for p in built.folder.glob('shard-*')):,} bytes",
              flush=True)  # fmt: skip
        windows[mode] = open_corpus_splits(built, BLOCK)["train"]
    n = len(windows["plain"])
    check = torch.randint(n, (64,), generator=torch.Generator().manual_seed(1))
    for w in windows.values():
        assert torch.equal(w.input_ids[check], windows["plain"].input_ids[check])

    def rate(w: Any, order: str, seconds: float, gen: torch.Generator) -> float:
        read, start, at = 0, time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            if order == "random":
                idx = torch.randint(n, (32,), generator=gen)
            else:  # the split's rows in order: its documents are in split (shuffled) order
                idx = torch.arange(at, at + 32) % n
                at += 32
            w.input_ids[idx], w.labels[idx]
            read += 32
        return read / (time.perf_counter() - start)

    for order in ("random", "in order"):
        gen = torch.Generator().manual_seed(0)
        for w in windows.values():  # warm-up: page cache, first chunks
            rate(w, order, 0.3, gen)
        got: dict[str, list[float]] = {mode: [] for mode in windows}
        for _ in range(rounds):
            for mode, w in windows.items():
                got[mode].append(rate(w, order, 1.0, gen))
        median = {mode: sorted(v)[len(v) // 2] for mode, v in got.items()}
        for mode, value in median.items():
            print(f"rows read /s, {order:<8} (median of {rounds}, 32 x {BLOCK} a batch): "
                  f"{mode:<26} {value:9,.0f}  {value / median['plain']:.2f} x plain",
                  flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-mb", default="20,80")
    parser.add_argument("--workdir", default="/tmp/foundry-token-shards")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument(
        "--encrypted",
        action="store_true",
        help="rows/s from encrypted vs plain shards (first size only)",
    )
    parser.add_argument("--chunks-kb", default="1024,16,4",
                        help="with --encrypted: the chunk sizes to compare")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes_mb.split(",")]
    for mb in sizes:
        write_corpus(work / f"corpus-{mb}mb.txt", mb)
    tokenizer_file = work / "tokenizer.json"
    if not tokenizer_file.exists():
        from foundry.lm.token_shards import _text_documents
        from foundry.lm.tokenizer import BPETokenizer

        docs = itertools.islice(_text_documents(work / f"corpus-{min(sizes)}mb.txt"), 2000)
        tokenizer_file.write_text(BPETokenizer.train(docs, VOCAB).to_json())
    if args.encrypted:
        corpus = work / f"corpus-{sizes[0]}mb.txt"
        chunks = [int(kb) for kb in args.chunks_kb.split(",")]
        encrypted(corpus, tokenizer_file, work / "encrypted", chunks, args.rounds)
        return
    for mb in sizes:
        corpus = work / f"corpus-{mb}mb.txt"
        for mode in ("memory", "shards", "reuse"):
            if mode == "shards":  # built from scratch, not found from an earlier run
                shutil.rmtree(work / "runs" / "token_shards", ignore_errors=True)
            cmd = [sys.executable, __file__, "--child", mode, str(corpus), str(tokenizer_file),
                   str(work)]  # fmt: skip
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise SystemExit(r.stderr[-3000:])
            res = json.loads(r.stdout.strip().splitlines()[-1])
            extra = f"  {res['rows_per_s']:9,.0f} rows/s read" if "rows_per_s" in res else ""
            print(f"{mb:>5} MB  {mode:<6}  peak RSS {res['peak_rss_mb']:7,.0f} MB  "
                  f"{res['seconds']:6.1f}s  {res['rows']:,} rows{extra}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
