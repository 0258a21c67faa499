"""Package files: exact round trip, no pickle, atomic writes, readable errors."""

from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch

import foundry.registry.package as package_mod
from foundry.errors import ModelError
from foundry.registry import read_package, write_package

FILES = {"model.safetensors", "foundry.json", "metrics.json", "card.md"}


def _weights() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "layer.weight": torch.randn(4, 3, generator=g),
        "layer.bias": torch.randn(4, generator=g).to(torch.bfloat16),
        "counts": torch.arange(5, dtype=torch.int64),
        "transposed": torch.randn(3, 2, generator=g).t(),  # not contiguous
    }


def _write(directory, weights=None, **kw):
    args = {
        "manifest": {"task": {"task": "binary"}},
        "metrics": {"accuracy": 0.5},
        "card": "# model\n",
    }
    args.update(kw)
    write_package(directory, weights=weights if weights is not None else _weights(), **args)


def test_round_trip_is_exact(tmp_path):
    weights = _weights()
    _write(tmp_path / "pkg", weights, manifest={"a": [1, 2], "path": tmp_path}, card="# card é\n")
    pkg = read_package(tmp_path / "pkg")
    assert {p.name for p in (tmp_path / "pkg").iterdir()} == FILES
    assert pkg.weights.keys() == weights.keys()
    for key, tensor in weights.items():
        assert pkg.weights[key].dtype == tensor.dtype
        assert torch.equal(pkg.weights[key], tensor)
    assert pkg.manifest == {"a": [1, 2], "path": str(tmp_path)}
    assert pkg.metrics == {"accuracy": 0.5}
    assert pkg.card == "# card é\n"
    assert json.loads((tmp_path / "pkg" / "foundry.json").read_text())["a"] == [1, 2]


def test_tied_weights_are_stored(tmp_path):
    shared = torch.randn(3, 3)
    _write(tmp_path / "pkg", {"embed": shared, "head": shared})
    pkg = read_package(tmp_path / "pkg")
    assert torch.equal(pkg.weights["embed"], shared) and torch.equal(pkg.weights["head"], shared)


def test_no_pickle_anywhere(tmp_path, monkeypatch):
    _write(tmp_path / "pkg")
    raw = (tmp_path / "pkg" / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])  # a JSON header then raw tensor bytes
    assert set(header) - {"__metadata__"} == set(_weights())
    assert b"\x80\x02" not in raw[:2] and b"torch._utils" not in raw

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    read_package(tmp_path / "pkg")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def broken_save(path, tensors, fsync):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(package_mod.crypto, "write_tensors", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path / "pkg")
    assert list(tmp_path.iterdir()) == []


def test_bad_weights_and_unserialisable_manifest_leave_nothing(tmp_path):
    with pytest.raises(ModelError, match="model.safetensors"):
        _write(tmp_path / "pkg", {"w": [1, 2, 3]})
    with pytest.raises(ModelError, match="foundry.json"):
        _write(tmp_path / "pkg", manifest={"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite(tmp_path):
    _write(tmp_path / "pkg")
    with pytest.raises(ModelError, match="already exists"):
        _write(tmp_path / "pkg")


@pytest.mark.parametrize("name", sorted(FILES))
def test_missing_file_is_named(tmp_path, name):
    _write(tmp_path / "pkg")
    (tmp_path / "pkg" / name).unlink()
    with pytest.raises(ModelError, match=name.replace(".", r"\.")):
        read_package(tmp_path / "pkg")


@pytest.mark.parametrize("name", ["model.safetensors", "foundry.json", "metrics.json"])
def test_corrupt_file_is_named(tmp_path, name):
    _write(tmp_path / "pkg")
    (tmp_path / "pkg" / name).write_bytes(b"\x00garbage{")
    with pytest.raises(ModelError, match=name.replace(".", r"\.")):
        read_package(tmp_path / "pkg")


def test_not_a_directory(tmp_path):
    with pytest.raises(ModelError, match="not a directory"):
        read_package(tmp_path / "nothing")


def test_extra_files_and_directories_are_stored_and_code_is_refused(tmp_path):
    hf = tmp_path / "hf-src"
    (hf / "sub").mkdir(parents=True)
    (hf / "config.json").write_text('{"model_type": "gpt2"}')
    (hf / "sub" / "adapter_model.safetensors").write_bytes(b"\x00" * 8)
    _write(tmp_path / "pkg", files={"tokenizer.json": '{"v": 1}', "blob.json": b"{}",
                                    "hf": hf})
    pkg = tmp_path / "pkg"
    assert (pkg / "tokenizer.json").read_text() == '{"v": 1}'
    assert (pkg / "hf" / "config.json").read_text() == '{"model_type": "gpt2"}'
    assert (pkg / "hf" / "sub" / "adapter_model.safetensors").read_bytes() == b"\x00" * 8
    read_package(pkg)  # still a valid package
    for bad in ({"model.bin": b"x"}, {"../escape.json": "{}"}, {"foundry.json": "{}"},
                {"code.py": "print()"}):
        with pytest.raises(ModelError, match="package file"):
            _write(tmp_path / f"bad-{len(list(tmp_path.iterdir()))}", files=bad)
    (hf / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match="no pickles"):
        _write(tmp_path / "pkg-pickle", files={"hf": hf})
    assert not (tmp_path / "pkg-pickle").exists()
