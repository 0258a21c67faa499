"""What a package may touch and whether it is what was registered.

    seal(directory, manifest)            writes foundry.json with every other file's sha256
    verify_files(directory, manifest)    on load: ModelError naming a changed/missing file
    sha256_file(path)                    hex digest, cached per (path, size, mtime, inode)
    inside(path, roots)                  the resolved path if it lies in one of `roots`
    Confinement(roots)                   `inside` plus what was refused, for pages

A package is one folder. Its manifest (`foundry.json`) lists every other file with its
size and sha256 under `files`; the registry keeps the sha256 of `foundry.json` itself in
its index row, so a changed manifest (which could otherwise list new checksums) is caught
too. A same-size corruption of `model.safetensors` loads without complaint in safetensors
(the header still parses), so only the hash catches it.

Paths a manifest records (`training.run_dir`, `config.output_dir`, `hf.directory`, the
ONNX file) are followed only after `inside` says they resolve, symlinks followed, into the
folders allowed for them: the package itself for its own files, the registry home and the
run folders foundry recorded in the index at registration for training curves and compress
reports. A hostile or copied-in manifest can then name /etc/passwd but nothing reads it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from foundry.crypto import plain_sha256
from foundry.errors import ModelError

FILES_KEY = "files"
"""Manifest key holding {relative path: {"sha256": hex, "bytes": size}} of every package
file but foundry.json."""
MANIFEST = "foundry.json"

log = logging.getLogger("foundry.registry")

# Hashing a 500 MB package costs ~0.3 s per load; a process that loads the same package
# again (serving reloads, the dashboard, compress then report) skips the files whose size,
# mtime, ctime and inode are unchanged. Any write through the file system changes mtime or
# ctime, so a cached digest is never one of different content written since.
_digests: dict[tuple[str, int, int, int, int], str] = {}
_digests_lock = threading.Lock()
_noted_legacy: set[str] = set()


def sha256_file(path: str | Path) -> str:
    """sha256 of the file at `path`, hex; cached within the process (see above)."""
    return _sha256_real(os.path.realpath(path))


def _sha256_real(path: str) -> str:
    """`sha256_file` of a path already resolved (realpath)."""
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    with _digests_lock:
        cached = _digests.get(key)
    if cached is not None:
        return cached
    # Over the plaintext: an encrypted file's checksum holds across key rotations.
    hexdigest = plain_sha256(path)
    with _digests_lock:
        _digests[key] = hexdigest
    return hexdigest


def remember_digest(path: str | Path, hexdigest: str) -> None:
    """Record the digest of the plaintext just read from `path` (an encrypted file that a
    reader decrypted whole anyway), so that verifying it does not decrypt it again."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    with _digests_lock:
        _digests[(real, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)] = hexdigest


def moved(old: str | Path, new: str | Path) -> None:
    """Folder `old` was renamed to `new`: keep the digests cached for the files in it. A
    rename changes neither the size, mtime, ctime nor inode of the files inside, so the
    next stat of a file still matches unless it was written since (a downloaded package
    is verified in a hidden folder, then renamed into the cache; not hashed twice)."""
    old_root = os.path.join(os.path.realpath(old), "")
    new_root = os.path.join(os.path.realpath(new), "")
    with _digests_lock:
        for key in [k for k in _digests if k[0].startswith(old_root)]:
            renamed = (new_root + key[0][len(old_root):], *key[1:])
            _digests[renamed] = _digests.pop(key)


def clear_cache() -> None:
    """Forget cached digests (benchmarks time the uncached path)."""
    with _digests_lock:
        _digests.clear()


def package_files(directory: Path) -> list[str]:
    """Relative paths ('/'-separated, sorted) of every file in the package but foundry.json."""
    directory = Path(directory)
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                  if p.is_file() and p.relative_to(directory).as_posix() != MANIFEST)


def checksums(directory: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"sha256", "bytes"}} of every package file but foundry.json."""
    return {name: {"sha256": sha256_file(directory / name),
                   "bytes": (directory / name).stat().st_size}
            for name in package_files(directory)}


def seal(directory: Path, manifest: dict[str, Any]) -> str:
    """Write `directory/foundry.json`: `manifest` with the checksums of every other file
    (computed now, any `files` the caller passed replaced). Returns foundry.json's sha256,
    which the registry keeps in its index."""
    from foundry.registry.package import write_json

    directory = Path(directory)
    write_json(directory / MANIFEST, {**manifest, FILES_KEY: checksums(directory)})
    return sha256_file(directory / MANIFEST)


def verify_manifest(directory: Path, expected: str | None, *, ref: str,
                    origin: str | None = None) -> None:
    """Refuse a foundry.json whose sha256 is not the one the index recorded (None: a
    version registered before the index kept one; nothing to compare). `origin`: where
    the files were downloaded from (an s3:// URL), named in the error instead of
    `directory` (`foundry.registry.artifacts`)."""
    if expected is None:
        return
    actual = sha256_file(Path(directory) / MANIFEST)
    if actual != expected:
        raise ModelError(
            f"model {ref}: {_shown(directory, MANIFEST, origin)} was changed after registration "
            f"(sha256 {actual[:12]}…, the registry recorded {expected[:12]}…); refusing "
            "to load it",
            hint="restore the package from a backup, or train and register it again",
        )


def verify_files(directory: Path, manifest: dict[str, Any], *, ref: str,
                 origin: str | None = None) -> bool:
    """Check every file the manifest lists (size, then sha256) and that no file was added.
    Returns False for a package written before packages carried checksums (logged once
    per package); raises ModelError naming the first file that differs (under `origin`,
    the URL it was downloaded from, when given)."""
    directory = Path(directory)
    listed = manifest.get(FILES_KEY)
    if listed is None:
        if str(directory) not in _noted_legacy:
            _noted_legacy.add(str(directory))
            log.warning("model %s at %s was registered before packages carried file "
                        "checksums: loaded without verifying its files", ref, directory)
        return False
    hint = "restore the package from a backup, or train and register it again"
    if not isinstance(listed, dict):
        raise ModelError(f"model {ref}: {directory / MANIFEST} has a malformed "
                         f"'{FILES_KEY}' section", hint=hint)
    root = os.path.join(os.path.realpath(directory), "")  # with a trailing separator
    for name, entry in listed.items():
        path = directory / name
        real = os.path.realpath(path)  # `inside`, once per file: symlinks followed
        if not real.startswith(root):
            raise ModelError(f"model {ref}: {directory / MANIFEST} lists {name!r}, which is "
                             "outside the package", hint=hint)
        if not os.path.isfile(real):
            raise ModelError(f"model {ref}: package file {_shown(directory, name, origin)} "
                             "is missing", hint=hint)
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if (size is not None and os.path.getsize(real) != size) or _sha256_real(real) != expected:
            raise ModelError(
                f"model {ref}: package file {_shown(directory, name, origin)} is corrupt "
                "or was changed after "
                "registration (its sha256 differs from the one in foundry.json)",
                hint=hint,
            )
    added = [name for name in package_files(directory) if name not in listed]
    if added:
        raise ModelError(
            f"model {ref}: package {directory} holds files registration did not write: "
            f"{', '.join(added[:5])}{' …' if len(added) > 5 else ''}",
            hint="remove them (a package is never changed after registration), or "
            "restore the package from a backup",
        )
    return True


def _shown(directory: Path, name: str, origin: str | None) -> str:
    """How an error names package file `name`: its URL when downloaded, else its path."""
    return f"{origin}/{name}" if origin else str(Path(directory) / name)


def inside(path: str | Path, roots: Iterable[str | Path]) -> Path | None:
    """`path` resolved (symlinks followed, '..' removed) if it lies in one of `roots`
    (also resolved), else None. The one containment check every manifest path goes
    through."""
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return None
    for root in roots:
        try:
            if resolved.is_relative_to(Path(root).expanduser().resolve()):
                return resolved
        except (OSError, RuntimeError, ValueError):
            continue
    return None


class Confinement:
    """The folders a package's recorded paths may lead to, and what was refused.

    `allow` returns the resolved path or None, remembering a sentence for each refusal
    (the dashboard and the report show them instead of failing the page); `require`
    raises ModelError instead (loading: a model must not half-load)."""

    def __init__(self, roots: Iterable[str | Path]) -> None:
        self.roots = tuple(Path(r) for r in roots)
        self.refused: list[str] = []

    def allow(self, path: str | Path, *, what: str) -> Path | None:
        resolved = inside(path, self.roots)
        if resolved is None:
            message = (f"{what} {path} is outside the registry and the run folders foundry "
                       "recorded: not read")
            if message not in self.refused:
                self.refused.append(message)
                log.warning("%s", message)
        return resolved

    def require(self, path: str | Path, *, what: str) -> Path:
        resolved = inside(path, self.roots)
        if resolved is None:
            raise ModelError(
                f"{what} {path} is outside {', '.join(map(str, self.roots))}; refusing to "
                "read it",
                hint="a package reads only its own files: this foundry.json was not "
                "written by foundry, or was edited",
            )
        return resolved
