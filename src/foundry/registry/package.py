"""Model packages: one directory that loads with no pickle and no network.

    <package>/
      model.safetensors   weights (safetensors: tensors only, no code)
      foundry.json        manifest: resolved config, preprocessing state, input schema,
                          task, library versions, data fingerprint, name/version/parent
                          and `files`: every other file's size and sha256 (integrity.py)
      metrics.json        evaluation metrics
      card.md             model card (markdown)
      card.json           the same card as data (`foundry.evaluation.card`)
      ...                 model-specific files (`files=`): a tokenizer.json, a Hugging Face
                          model or LoRA adapter directory; JSON / safetensors only

A package is written into a hidden temporary directory beside its final path and renamed
into place in one step, so a crash or a failed write never leaves a half package. Reading
one checks every file against the checksums in its manifest (`foundry.registry.integrity`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

import foundry.crypto as crypto
from foundry.errors import ModelError
from foundry.registry.integrity import (
    FILES_KEY,
    remember_digest,
    seal,
    verify_files,
    verify_manifest,
)
from foundry.registry.refs import PACKAGE_FILES

TMP_PREFIX = ".tmp-"
"""Temporary package directories start with this; they are never valid packages."""


@dataclass(frozen=True)
class Package:
    """A model package read from disk."""

    path: Path
    weights: dict[str, torch.Tensor]
    """State dict on CPU, exactly as written."""
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    card: str
    card_json: dict[str, Any] | None = None
    """card.json (packages written before model cards had one lack it)."""
    checksums: dict[str, Any] | None = None
    """foundry.json's `files` (every other file's sha256 and size), verified when read;
    None for a package written before packages carried them. Not in `manifest`: a
    manifest passed on to `register` gets the new package's own."""


PackageFiles = dict[str, "str | bytes | Path"]
"""Extra package files by relative path (`tokenizer.json`, `hf/config.json`): text, bytes,
or an existing file or directory to copy."""
_EXTRA_SUFFIXES = (
    ".json",
    ".safetensors",
    ".txt",
    ".model",
    ".jinja",
    ".md",
    # An ONNX file is a protobuf graph of standard operators plus tensors: no code runs
    # when it is read (compressed variants ship one).
    ".onnx",
    # FAISS's own index serialization (flat arrays read by its C++ reader, no code):
    # a large catalogue's approximate item index (foundry/recommend/index.py).
    ".faiss",
)
"""What extra files may be: data formats that cannot carry code (no pickles)."""


def write_package(
    directory: Path,
    *,
    weights: dict[str, torch.Tensor],
    manifest: dict[str, Any],
    metrics: dict[str, Any],
    card: str,
    files: PackageFiles | None = None,
) -> None:
    """Write a package at ``directory``, which must not exist yet (or be empty)."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ModelError(f"cannot write a model package to {directory}: it already exists")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = stage_package(
        directory.parent, weights=weights, manifest=manifest, metrics=metrics, card=card,
        files=files,
    )
    try:
        os.replace(tmp, directory)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"cannot move the model package into {directory}: {exc}") from exc


def stage_package(
    parent: Path,
    *,
    weights: dict[str, torch.Tensor],
    manifest: dict[str, Any],
    metrics: dict[str, Any],
    card: str | None,
    files: PackageFiles | None = None,
) -> Path:
    """Write a complete package into a new temporary directory under ``parent`` and return
    it; the caller renames it into place. Nothing is left behind if writing fails."""
    tmp = Path(parent) / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        _save_weights(tmp / "model.safetensors", weights)
        write_json(tmp / "metrics.json", metrics)
        if card is not None:  # else the registry writes it once the version is known
            _write_text(tmp / "card.md", card)
        for name, content in (files or {}).items():
            _write_extra(tmp, name, content)
        seal(tmp, manifest)  # last: it lists the checksums of every file above
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def read_package(
    directory: str | Path, *, manifest_sha256: str | None = None, ref: str | None = None
) -> Package:
    """Read a package; a missing, corrupt or changed file raises ModelError naming that
    file. `manifest_sha256`: the registry's record of foundry.json (None for a package
    read by path, or registered before the index kept one). `ref` names the model in
    errors (default: the directory)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"no model package at {directory}: not a directory")
    for name in PACKAGE_FILES:
        if not (directory / name).is_file():
            raise ModelError(f"model package {directory} is missing {name}")
    ref = ref or str(directory)
    verify_manifest(directory, manifest_sha256, ref=ref)
    manifest = read_json(directory / "foundry.json")
    weights_path = directory / "model.safetensors"
    plain: crypto.Buffer | None = None
    if crypto.is_encrypted(weights_path):
        # Decrypted once, whole: its digest is recorded so verifying does not decrypt again.
        digest = hashlib.sha256()
        plain = crypto.read_buffer(weights_path, digest)
        remember_digest(weights_path, digest.hexdigest())
    # Before the weights are parsed: a changed file must not load, even if it parses.
    verify_files(directory, manifest, ref=ref)
    try:
        # A plaintext file is memory-mapped by safetensors; decrypted weights are views of
        # the one buffer they were decrypted into.
        weights = (crypto.tensors_from_buffer(plain, source=str(weights_path))
                   if plain is not None else load_file(weights_path, device="cpu"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{weights_path}: not a readable safetensors file: {exc}") from exc
    metrics = read_json(directory / "metrics.json")
    try:
        card = crypto.read_text(directory / "card.md")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{directory / 'card.md'}: cannot read the model card: {exc}") from exc
    card_json = read_json(directory / "card.json") if (directory / "card.json").is_file() else None
    checksums = manifest.pop(FILES_KEY, None)
    return Package(
        path=directory,
        weights=weights,
        manifest=manifest,
        metrics=metrics,
        card=card,
        card_json=card_json,
        checksums=checksums,
    )


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON; numpy values and paths are converted."""
    if not isinstance(data, dict):
        raise ModelError(f"{path.name}: expected a dict, got {type(data).__name__}")
    try:
        text = json.dumps(data, indent=2, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path.name}: cannot be written as JSON: {exc}") from exc
    _write_text(path, text + "\n")


def _save_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for key, value in weights.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ModelError(
                f"model.safetensors: weights must map str to Tensor, got {key!r}: "
                f"{type(value).__name__}"
            )
        tensor = value.detach().cpu().contiguous()
        # safetensors refuses tensors that share memory (tied weights): store a copy.
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen_storages and tensor.numel() > 0:
            tensor = tensor.clone()
        seen_storages.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    crypto.write_tensors(path, tensors, fsync=True)


def _write_extra(root: Path, name: str, content: str | bytes | Path) -> None:
    """One extra file (or a copied directory) at `root/name`, checked to stay inside the
    package and to be a data format, never code or a pickle."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or rel.name in PACKAGE_FILES and len(rel.parts) == 1:
        raise ModelError(f"package file {name!r}: must be a new relative path inside the package")
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, Path):
        if content.is_dir():
            for item in sorted(content.rglob("*")):
                if item.is_file():
                    _write_extra(root, (rel / item.relative_to(content)).as_posix(), item)
            return
        _check_suffix(name)
        if crypto.keyring() is None and not crypto.is_encrypted(content):
            shutil.copyfile(content, target)  # streamed: Hugging Face weights can be GBs
            with open(target, "rb") as f:
                os.fsync(f.fileno())
            return
        # An encrypted source is re-encrypted under a fresh data key (or stored plain
        # when no key is set now).
        crypto.write_bytes(target, crypto.read_bytes(content))
        return
    _check_suffix(name)
    if isinstance(content, bytes):
        crypto.write_bytes(target, content)
    else:
        _write_text(target, content)


def _check_suffix(name: str) -> None:
    if not name.endswith(_EXTRA_SUFFIXES):
        raise ModelError(
            f"package file {name!r}: only {', '.join(_EXTRA_SUFFIXES)} files are stored "
            "(no pickles or code in a model package)"
        )


def _write_text(path: Path, text: str) -> None:
    crypto.write_text(path, text)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(crypto.read_text(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays, 0-d tensors
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
