"""Corpora streamed into memory-mapped token shards: the same documents, split and rows
as the in-memory path; reused while corpus and tokenizer are unchanged, rebuilt after."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from foundry.config import LoadedConfig
from foundry.config.load import validate_config
from foundry.console import Reporter
from foundry.families.gpt.family import GPTFamily
from foundry.families.interface import Run
from foundry.lm import token_shards
from foundry.lm.data import corpus_blocks, load_lm_data, read_lm_file
from foundry.lm.token_shards import TokenShards, corpus_documents, streamable_corpus

WORDS = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "north", "quiet"]


def documents(n: int = 40, seed: int = 0) -> list[str]:
    """Documents of 1 to 40 words, some with an e-mail address (masked by data.pii)."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 40))]
        if i % 7 == 0:
            words.insert(1, f"user{i}@example.com")
        docs.append(" ".join(words).capitalize() + ".")
    return docs


def write_txt(path: Path, docs: list[str]) -> Path:
    # ragged separators: blank lines holding spaces, several blank lines, CRLF line ends
    path.write_text("\n \n".join(docs[:10]) + "\r\n\r\n\n" + "\n\n".join(docs[10:]) + "\n")
    return path


def config(data: Path, tmp_path: Path, vocab_size: int = 300) -> LoadedConfig:
    raw = {
        "name": "shards",
        "data": {"path": str(data), "split": {"train": 0.7, "val": 0.15, "test": 0.15}},
        "model": {"type": "gpt", "n_layers": 1, "d_model": 16, "n_heads": 2,
                  "context_length": 16, "vocab_size": vocab_size},
        "output_dir": str(tmp_path / "runs"),
    }  # fmt: skip
    return LoadedConfig(validate_config(raw), tmp_path)


def prepare(loaded: LoadedConfig, out: Path):
    return GPTFamily().prepare(Run(loaded, out, Reporter(quiet=True)))


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet"])
def test_streamed_documents_equal_the_files_documents(tmp_path: Path, kind: str) -> None:
    docs = documents()
    if kind == "txt":
        path = write_txt(tmp_path / "corpus.txt", docs)
    elif kind == "jsonl":
        path = tmp_path / "corpus.jsonl"
        rows = [{"text": d} for d in docs] + [{"text": "  "}, {"text": None}]  # skipped
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        path = tmp_path / "corpus.parquet"
        pd.DataFrame({"text": [*docs, None], "n": range(len(docs) + 1)}).to_parquet(path)
    loaded = config(path, tmp_path)
    assert streamable_corpus(loaded.config, path)
    streamed = list(corpus_documents(path, loaded.config))
    assert streamed == read_lm_file(path, loaded.config.lm).items
    assert len(streamed) == 40


def test_instruction_data_is_not_streamed(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"prompt": "hi", "completion": "hello", "text": "x"}) + "\n")
    assert not streamable_corpus(config(path, tmp_path).config, path)


def test_windows_are_the_in_memory_rows_and_shards_are_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(token_shards, "SHARD_TOKENS", 97)  # documents cross shard files
    corpus = write_txt(tmp_path / "corpus.txt", documents())
    loaded = config(corpus, tmp_path)
    data = prepare(loaded, tmp_path / "run1")
    assert not data.data.reused
    shards = TokenShards(data.data.folder)
    assert shards.meta["dtype"] == "uint16" and shards.meta["shards"] > 2

    # the in-memory path: whole documents, PII-masked, split, cut into blocks
    memory = load_lm_data(loaded)
    assert data.data.sizes == memory.sizes and data.data.pii == memory.pii
    for name in ("train", "val", "test"):
        expected = corpus_blocks(getattr(memory, name).items, data.tokenizer, 16)
        windows = data.splits[name]
        assert len(windows) == len(expected) and windows.n_targets == expected.n_targets
        everything = torch.arange(len(windows))
        assert torch.equal(windows.input_ids[everything], expected.input_ids)
        assert torch.equal(windows.labels[everything], expected.labels)
        assert torch.equal(windows.target_counts(300), expected.target_counts(300))
    rows = torch.tensor([2, 0])  # any rows, in any order: read by offset
    assert torch.equal(data.splits["train"].input_ids[rows], expected_rows(memory, data, rows))

    # a second run: the tokenizer and the shards are reused, not written again
    written = {p.name: p.stat().st_mtime_ns for p in data.data.folder.iterdir()}
    again = prepare(loaded, tmp_path / "run2")
    assert again.data.reused and again.data.folder == data.data.folder
    assert again.tokenizer.to_json() == data.tokenizer.to_json()
    assert {p.name: p.stat().st_mtime_ns for p in again.data.folder.iterdir()} == written

    # another tokenizer (vocabulary size) or a changed corpus: built anew
    other_tok = prepare(config(corpus, tmp_path, vocab_size=280), tmp_path / "run3")
    assert not other_tok.data.reused and other_tok.data.folder != data.data.folder
    write_txt(corpus, documents(seed=1))
    changed = prepare(loaded, tmp_path / "run4")
    assert not changed.data.reused and changed.data.folder != data.data.folder
    assert changed.splits["train"].n_targets != data.splits["train"].n_targets


def expected_rows(memory, data, rows: torch.Tensor) -> torch.Tensor:
    return corpus_blocks(memory.train.items, data.tokenizer, 16).input_ids[rows]


def test_unfinished_build_is_not_reused(tmp_path: Path) -> None:
    corpus = write_txt(tmp_path / "corpus.txt", documents(12))
    loaded = config(corpus, tmp_path)
    data = prepare(loaded, tmp_path / "run1")
    (data.data.folder / "meta.json").unlink()  # as if the build had been killed
    rebuilt = prepare(loaded, tmp_path / "run2")
    assert not rebuilt.data.reused
    assert (
        np.load(rebuilt.data.folder / "documents.npy")[-1]
        == rebuilt.data.folder.joinpath("shard-00000.bin").stat().st_size // 2
    )


def test_encrypted_shards_read_the_same_rows_hold_no_plaintext_and_rotate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, foundry_home: Path
) -> None:
    import foundry.crypto as crypto
    from foundry.crypto import EncryptionError
    from foundry.registry import Registry
    from foundry.serve.cli_admin import keys_rotate_encryption

    monkeypatch.setattr(token_shards, "SHARD_TOKENS", 500)  # several shard files
    monkeypatch.setattr(token_shards, "SHARD_CHUNK", 64)  # rows cross chunks
    corpus = write_txt(tmp_path / "corpus.txt", documents())
    loaded = config(corpus, tmp_path)
    plain = prepare(loaded, tmp_path / "run1")
    plain_files = {*plain.data.folder.parent.glob("tokenizer-*.json")}

    first = crypto.new_key()
    monkeypatch.setenv(crypto.ENV_KEY, first)
    sealed = prepare(loaded, tmp_path / "run2")  # a key now: not the plain folder
    folder = sealed.data.folder
    assert not sealed.data.reused and folder != plain.data.folder
    memory = load_lm_data(loaded)
    for name in ("train", "val", "test"):
        expected = corpus_blocks(getattr(memory, name).items, sealed.tokenizer, 16)
        everything = torch.arange(len(expected))
        assert torch.equal(sealed.splits[name].input_ids[everything], expected.input_ids)
        assert torch.equal(sealed.splits[name].labels[everything], expected.labels)
    shards = TokenShards(folder)
    assert isinstance(shards.shards[0], token_shards._SealedShard) and shards.meta["shards"] > 2

    # every file but meta.json is ciphertext; no 16 bytes of the plain shards appear
    cache = folder.parent
    stored = [p for p in [*folder.iterdir(), *cache.glob("tokenizer-*.json")]
              if p.name != "meta.json" and p not in plain_files]  # fmt: skip
    assert len(stored) >= 5 + shards.meta["shards"] and all(crypto.is_encrypted(p) for p in stored)
    clear = b"".join(p.read_bytes() for p in sorted(plain.data.folder.glob("shard-*.bin")))
    needles = [clear[i : i + 16] for i in range(0, len(clear) - 16, 16)]
    for path in stored:
        raw = path.read_bytes()
        assert not any(n in raw for n in needles), f"{path} holds plaintext tokens"

    # `foundry keys rotate-encryption` re-wraps the shards beside a registered run's
    # folder; the new key alone then reads them (and reuses them)
    Registry().register("shards", weights={"w": torch.zeros(2)}, manifest={}, metrics={},
                        run_dir=tmp_path / "runs" / "shards-1")  # fmt: skip
    new = crypto.MasterKey.parse(crypto.new_key(), source="test")
    (tmp_path / "new.key").write_text(base64.b64encode(new.key).decode())
    keys_rotate_encryption(new_key_file=tmp_path / "new.key", paths=None)
    assert {p.read_bytes()[9:17] for p in stored} == {new.key_id}  # key id in each header
    monkeypatch.setenv(crypto.ENV_KEY, base64.b64encode(new.key).decode())
    again = prepare(loaded, tmp_path / "run3")
    assert again.data.reused and again.data.folder == folder
    rows = torch.tensor([3, 0, 1])
    assert torch.equal(again.splits["train"].input_ids[rows], expected_rows(memory, again, rows))

    monkeypatch.setenv(crypto.ENV_KEY, first)  # the old key no longer opens them
    with pytest.raises(EncryptionError, match=r"shard-00000\.bin was encrypted with another key"):
        TokenShards(folder)

    monkeypatch.setenv(crypto.ENV_KEY, base64.b64encode(new.key).decode())
    damaged = folder / "shard-00001.bin"
    raw = bytearray(damaged.read_bytes())
    raw[crypto.HEADER_BYTES + 100] ^= 1  # a byte of chunk 1
    damaged.write_bytes(bytes(raw))
    shards = TokenShards(folder)
    shards.read(500, 532)  # chunk 0 of the damaged shard still reads
    with pytest.raises(EncryptionError, match=r"shard-00001\.bin is damaged.*chunk 1 fails"):
        shards.read(500, 1000)

    monkeypatch.delenv(crypto.ENV_KEY)  # no key: the plain folder again, reused
    back = prepare(loaded, tmp_path / "run4")
    assert back.data.reused and back.data.folder == plain.data.folder
