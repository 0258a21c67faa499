"""Encryption at rest (foundry.crypto): a registry written with a key reads back with it,
is refused without it or with another, holds no weight or data byte in clear; rotation
re-wraps headers only; checkpoints and database fields go through the same key."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
import torch

import foundry.crypto as crypto
from foundry.config.schema import PlanConfig
from foundry.crypto import EncryptionError

MARKER = "customer-4711-secret"


@pytest.fixture
def key(monkeypatch):
    value = crypto.new_key()
    monkeypatch.setenv(crypto.ENV_KEY, value)
    return value


def _register():
    from foundry.registry import Registry

    # 1.2 MB of distinctive weights: more than one 1 MiB chunk.
    weights = {"w": torch.arange(300_000, dtype=torch.float32) * 1.000123}
    record = Registry().register(
        "enc", weights=weights, manifest={"note": MARKER}, metrics={"accuracy": 0.9},
        card=f"# card {MARKER}\n", files={"tokenizer.json": f'{{"vocab": "{MARKER}"}}'},
    )
    return record, weights


def test_registry_round_trip_refused_without_the_key_and_nothing_in_clear(key, foundry_home,
                                                                         monkeypatch):
    from foundry.registry import Registry

    record, weights = _register()
    package = Registry().load(record.ref)
    assert torch.equal(package.weights["w"], weights["w"])
    assert MARKER in package.card and package.manifest["note"] == MARKER
    assert crypto.read_text(package.path / "tokenizer.json") == f'{{"vocab": "{MARKER}"}}'

    stored = sorted(p for p in (foundry_home / "models").rglob("*") if p.is_file())
    assert {p.name for p in stored} >= {"model.safetensors", "foundry.json", "metrics.json",
                                         "card.md", "card.json", "tokenizer.json"}
    needles = [MARKER.encode(), weights["w"][1000:1004].numpy().tobytes()]
    for path in [*stored, foundry_home / "foundry.db"]:
        raw = path.read_bytes()
        assert path.name == "foundry.db" or raw.startswith(crypto.MAGIC), path
        assert not any(n in raw for n in needles), f"{path} holds plaintext"

    monkeypatch.delenv(crypto.ENV_KEY)
    with pytest.raises(EncryptionError, match=r"foundry\.json is encrypted and no key is set"):
        Registry().load(record.ref)
    monkeypatch.setenv(crypto.ENV_KEY, crypto.new_key())
    with pytest.raises(EncryptionError, match="encrypted with another key"):
        Registry().load(record.ref)


def test_damage_and_truncation_are_errors_not_garbage(key, tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 9000  # 2.3 MB: three chunks
    crypto.write_bytes(path, data)
    assert crypto.read_bytes(path) == data
    raw = bytearray(path.read_bytes())
    raw[crypto.HEADER_BYTES + 5] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(EncryptionError, match="damaged or truncated"):
        crypto.read_bytes(path)
    crypto.write_bytes(path, data)
    path.write_bytes(path.read_bytes()[: crypto.HEADER_BYTES + crypto.CHUNK + crypto.TAG])
    with pytest.raises(EncryptionError, match="damaged or truncated"):
        crypto.read_bytes(path)  # the first chunk alone was not written as the last


def test_rotation_rewraps_headers_only_and_moves_database_fields(key, foundry_home, tmp_path,
                                                                 monkeypatch):
    from foundry.registry import Registry
    from foundry.serve.cli_admin import keys_rotate_encryption
    from foundry.serve.gate import Gate

    record, weights = _register()
    gate = Gate({"starter": PlanConfig()})
    gate.create_key(name=f"{MARKER}@acme.example", plan="starter")
    with sqlite3.connect(foundry_home / "foundry.db") as db:
        (stored_name,) = db.execute("SELECT name FROM api_keys").fetchone()
    assert stored_name.startswith(crypto.FIELD_PREFIX) and MARKER not in stored_name
    weights_file = Registry().load(record.ref).path / "model.safetensors"
    payload = weights_file.read_bytes()[crypto.HEADER_BYTES:]

    new = crypto.new_key()
    (tmp_path / "new.key").write_text(new + "\n")
    keys_rotate_encryption(new_key_file=tmp_path / "new.key", paths=None)

    assert weights_file.read_bytes()[crypto.HEADER_BYTES:] == payload  # payload untouched
    monkeypatch.setenv(crypto.ENV_KEY, new)  # the new key alone now reads everything
    assert Registry().verify(record.ref)  # checksums over the plaintext still hold
    assert torch.equal(Registry().load(record.ref).weights["w"], weights["w"])
    assert [k.name for k in gate.list_keys()] == [f"{MARKER}@acme.example"]
    monkeypatch.setenv(crypto.ENV_KEY, key)  # the old key alone no longer does
    with pytest.raises(EncryptionError, match="another key"):
        Registry().load(record.ref)


def test_checkpoints_are_encrypted_and_resume(key, tmp_path):
    from foundry.training.checkpoint import load_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    folder = save_checkpoint(tmp_path, model=model, optimizer=optimizer,
                             best_state=model.state_dict(), rng={"torch": torch.get_rng_state()},
                             state={"epoch": 1})
    assert all(p.read_bytes().startswith(crypto.MAGIC) for p in folder.iterdir())
    other = torch.nn.Linear(3, 2)
    loaded = load_checkpoint(tmp_path, model=other, optimizer=torch.optim.Adam(other.parameters()))
    assert loaded.state == {"epoch": 1}
    assert torch.equal(other.weight, model.weight)


def test_a_malformed_key_names_the_variable(monkeypatch):
    monkeypatch.setenv(crypto.ENV_KEY, "not-a-key")
    with pytest.raises(EncryptionError, match="FOUNDRY_ENCRYPTION_KEY: an encryption key must"):
        crypto.keyring()


def test_tables_are_encrypted_and_keys_decrypt_prints_them(key, tmp_path):
    import io

    import pandas as pd
    from typer.testing import CliRunner

    from foundry.cli import app
    from foundry.writers import write_table

    table = pd.DataFrame({"customer": [MARKER, "other"], "score": [0.25, 0.75]})
    path = write_table(table, tmp_path / "predictions.csv")
    assert path.read_bytes().startswith(crypto.MAGIC) and MARKER.encode() not in path.read_bytes()
    result = CliRunner().invoke(app, ["keys", "decrypt", str(path)])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(result.stdout)), table)


def test_plain_directory_is_a_private_copy_deleted_after(key, tmp_path):
    folder = tmp_path / "hf"
    (folder / "sub").mkdir(parents=True)
    crypto.write_text(folder / "config.json", "{}")
    crypto.write_bytes(folder / "sub" / "model.bin", b"weights")
    with crypto.plain_directory(folder) as plain:
        assert plain != folder and (plain.stat().st_mode & 0o077) == 0
        assert (plain / "sub" / "model.bin").read_bytes() == b"weights"
    assert not plain.exists()


def test_serving_a_public_address_without_tls_warns_first(capsys):
    from foundry.errors import ModelError
    from foundry.serve.cli_serve import serve

    with pytest.raises(ModelError):
        serve(["no-such-model"], None, "0.0.0.0", 8000, 1)
    assert "warning: serving on 0.0.0.0 without TLS" in capsys.readouterr().err


@pytest.mark.parametrize("size", [0, 1, 64, 65, 192, 1000])
def test_streamed_writes_are_encrypt_and_read_back_by_offset(key, tmp_path, monkeypatch, size):
    import random

    monkeypatch.setattr(crypto, "CHUNK", 64)  # many chunks from a few bytes
    data = bytes(random.Random(size).randrange(256) for _ in range(size))
    path = tmp_path / "streamed.bin"
    rng = random.Random(0)
    with crypto.EncryptingWriter(path, crypto.keyring().current) as writer:
        at = 0
        while at < size:  # pieces smaller and larger than a chunk
            step = rng.randint(1, 150)
            writer.write(data[at : at + step])
            at += step
    whole = crypto.encrypt(data, crypto.keyring().current)
    assert path.stat().st_size == len(whole)
    assert crypto.read_bytes(path) == data
    assert crypto.plain_sha256(path) == hashlib.sha256(data).hexdigest()

    reader = crypto.ChunkReader(path, cache_bytes=128)
    assert reader.size == size
    for _ in range(30):
        start = rng.randint(0, size)
        length = rng.randint(0, 200)
        assert reader.read(start, length) == data[start : start + length]
    if size > 64:  # dropping the last chunk (at a chunk boundary) fails the tags
        cut = crypto.HEADER_BYTES + 64 + crypto.TAG
        path.write_bytes(path.read_bytes()[:cut])
        with pytest.raises(EncryptionError, match="chunk 0 fails its authentication tag"):
            crypto.ChunkReader(path).read(0, 1)
