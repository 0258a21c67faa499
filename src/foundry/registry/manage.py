"""Changing the registry from outside a run: delete, export and import one version.

    delete_version(registry, "adult:3", served=..., force=False)   → DeleteResult
    export_version(registry, "adult:3", "adult-3.tar.gz")           → ExportResult
    import_archive(registry, "adult-3.tar.gz", as_name=None)        → the new ModelRecord

`foundry models delete/export/import` and the admin routes (`/admin/models/...`) are thin
wrappers over these. Files go through `Registry.register` / `Registry.delete` only, so
wherever the store keeps package files, these do too.

An export is one gzip'd tar:

    export.json          what was exported (ref, tags, description, parent) and `files`:
                         the sha256 and size of every entry below
    package/...          the package's files as the registry holds them

Import reads it entry by entry: anything but regular files under `package/` (a link, a
device, an absolute path, a `..`) is refused before it is written, every file is hashed
as it is extracted and compared with export.json, and the package is then read as any
package is (its own foundry.json checksums). The checksums catch a corrupted or edited
file; they are not a signature (someone who rewrites both export.json and a file is not
caught), so import only archives from people you trust.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from foundry.errors import ModelError
from foundry.registry.integrity import package_files, sha256_file
from foundry.registry.package import read_package
from foundry.registry.refs import PACKAGE_FILES, parse_ref, validate_name
from foundry.registry.store import ModelRecord, Registry

EXPORT_MANIFEST = "export.json"
EXPORT_FORMAT = "foundry-model-export"
EXPORT_FORMAT_VERSION = 1
_PACKAGE_DIR = "package"
_GENERATED = (*PACKAGE_FILES, "card.json")
"""Files `Registry.register` writes itself; every other package file is passed on."""
_READ_SIZE = 1 << 20


@dataclass(frozen=True)
class DeleteResult:
    record: ModelRecord
    """The version that was deleted."""
    aliases: tuple[str, ...]
    """Aliases that named it (removed with it)."""
    children: tuple[str, ...]
    """Versions derived from it (kept; deleted only with force)."""
    served_by: int
    """Live serving processes that held it (non-zero only with force)."""


@dataclass(frozen=True)
class ExportResult:
    ref: str
    path: Path
    files: int
    bytes: int


def delete_version(
    registry: Registry, ref: str, *, served: Mapping[str, int], force: bool = False
) -> DeleteResult:
    """Delete the version `ref` names ("adult:3": a version number, never an alias).

    `served`: {pinned ref: live serving processes}, `foundry.serve.leases.served_refs`.
    Refuses a version that is served or that other versions derive from (compressed
    variants, fine-tunes) unless `force`; with force they keep a parent that no longer
    resolves (lineage stops there). Aliases naming it go with it."""
    name, version = parse_ref(ref)
    if not isinstance(version, int):
        raise ModelError(
            f"refusing to delete {ref!r}: name the version to delete",
            hint=f"e.g. '{name}:3'; `foundry models show {name}` lists them",
        )
    record = registry.resolve(ref)
    children = tuple(registry.children(record.ref))
    holders = int(served.get(record.ref, 0))
    if not force and holders:
        raise ModelError(
            f"refusing to delete {record.ref}: {holders} running serving process"
            f"{'es' if holders > 1 else ''} serve it",
            hint="stop them or serve another version first, or pass --force",
        )
    if not force and children:
        raise ModelError(
            f"refusing to delete {record.ref}: {', '.join(children)} "
            f"{'derive' if len(children) > 1 else 'derives'} from it",
            hint="delete those first, or pass --force (they stay, their parent gone)",
        )
    aliases = tuple(a for a, v in registry.aliases(name).items() if v == version)
    registry.delete(record.ref)
    return DeleteResult(record, aliases, children, holders)


def export_version(registry: Registry, ref: str, out: str | Path) -> ExportResult:
    """Write the version `ref` resolves to as one .tar.gz at `out` (see the module
    docstring), after checking its files against the registry's record."""
    record = registry.resolve(ref)
    registry.verify(record.ref)  # never export a package that was changed
    directory = registry.package_dir(record)
    names = [*package_files(directory), "foundry.json"]
    files: dict[str, dict[str, Any]] = {}
    for name in names:
        path = directory / name
        files[f"{_PACKAGE_DIR}/{name}"] = {
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
        }
    header = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "ref": record.ref,
        "name": record.name,
        "version": record.version,
        "parent": record.parent,
        "tags": list(record.tags),
        "description": record.description,
        "exported_at": datetime.now(timezone.utc).isoformat(),
        "files": files,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            data = (json.dumps(header, indent=2) + "\n").encode()
            info = tarfile.TarInfo(EXPORT_MANIFEST)
            info.size, info.mtime, info.mode = len(data), int(record.created_at.timestamp()), 0o644
            tar.addfile(info, io.BytesIO(data))  # first: import reads it before the files
            for name in names:
                tar.add(directory / name, arcname=f"{_PACKAGE_DIR}/{name}", recursive=False)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportResult(record.ref, out, len(files), sum(f["bytes"] for f in files.values()))


def import_archive(
    registry: Registry, archive: str | Path, *, as_name: str | None = None
) -> ModelRecord:
    """Register the version an export archive holds, under its own name and version
    number, or under `as_name` (same version number). ModelError naming the entry for a
    tampered, incomplete or unsafe archive, and for a name:version that already exists."""
    archive = Path(archive)
    with tempfile.TemporaryDirectory(prefix="foundry-import-") as tmp:
        header = _extract(archive, Path(tmp))
        name = validate_name(as_name) if as_name else str(header.get("name"))
        version = header.get("version")
        if not isinstance(version, int) or version < 1:
            raise ModelError(f"{archive}: {EXPORT_MANIFEST} has no valid version")
        validate_name(name)
        try:
            existing = registry.resolve(f"{name}:{version}")
        except ModelError:
            existing = None
        if existing is not None:
            raise ModelError(
                f"{name}:{version} already exists in the registry at {registry.home}; "
                f"not importing {archive}",
                hint="import it under another name with --as NAME",
            )
        root = Path(tmp) / _PACKAGE_DIR
        package = read_package(root, ref=f"{archive}:{_PACKAGE_DIR}")
        parent = header.get("parent")
        try:  # linked when the parent is here too; always recorded in `imported`
            linked = registry.resolve(parent).ref if parent else None
        except ModelError:
            linked = None
        manifest = {
            k: v for k, v in package.manifest.items() if k not in ("name", "version", "parent")
        }
        manifest["imported"] = {
            "from": header.get("ref"),
            "parent": parent,
            "at": datetime.now(timezone.utc).isoformat(),
        }
        extras = {n: root / n for n in package_files(root) if n not in _GENERATED}
        return registry.register(
            name,
            version=version,
            weights=package.weights,
            manifest=manifest,
            metrics=package.metrics,
            card=package.card,
            parent=linked,
            tags=[str(t) for t in header.get("tags") or ()],
            description=str(header.get("description") or ""),
            files=extras or None,
        )


def _extract(archive: Path, into: Path) -> dict[str, Any]:
    """Extract `archive` into `into`, checking every entry (module docstring); returns
    export.json."""
    if not archive.is_file():
        raise ModelError(f"no export archive at {archive}")
    header: dict[str, Any] | None = None
    seen: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                entry = _safe_name(archive, member)
                if member.isdir():
                    continue
                if entry == EXPORT_MANIFEST:
                    header = _read_header(archive, tar, member)
                    continue
                if header is None:
                    raise ModelError(
                        f"{archive}: {EXPORT_MANIFEST} must come first; "
                        "this is not an archive `foundry models export` wrote"
                    )
                expected = header["files"].get(entry)
                if expected is None:
                    raise ModelError(
                        f"{archive}: entry {entry!r} is not listed in "
                        f"{EXPORT_MANIFEST}: refusing the archive"
                    )
                target = into / entry
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file (checked by _safe_name)
                digest = hashlib.sha256()
                with open(target, "wb") as f:
                    while chunk := source.read(_READ_SIZE):
                        digest.update(chunk)
                        f.write(chunk)
                if digest.hexdigest() != expected.get("sha256") or member.size != expected.get(
                    "bytes"
                ):
                    raise ModelError(
                        f"{archive}: {entry} does not match its sha256 in {EXPORT_MANIFEST}: "
                        "the archive was changed or corrupted after export",
                        hint="export the model again from its registry",
                    )
                seen[entry] = expected
    except (tarfile.TarError, EOFError, OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{archive}: not a readable .tar.gz export: {exc}") from exc
    if header is None:
        raise ModelError(
            f"{archive}: no {EXPORT_MANIFEST}; not an archive `foundry models export` wrote"
        )
    missing = sorted(set(header["files"]) - set(seen))
    if missing:
        raise ModelError(
            f"{archive}: {', '.join(missing[:5])} listed in {EXPORT_MANIFEST} "
            "but missing from the archive"
        )
    return header


def _safe_name(archive: Path, member: tarfile.TarInfo) -> str:
    """The entry's normalized name if it is a plain file or folder inside the archive's
    layout; ModelError naming it otherwise (links, devices, absolute paths, '..')."""
    name = member.name
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or not path.parts:
        raise ModelError(
            f"{archive}: entry {name!r} points outside the archive (path traversal): refusing it"
        )
    if not (member.isfile() or member.isdir()):
        raise ModelError(
            f"{archive}: entry {name!r} is a link or special file: refusing "
            "it (an export holds regular files only)"
        )
    entry = path.as_posix()
    if entry != EXPORT_MANIFEST and path.parts[0] != _PACKAGE_DIR:
        raise ModelError(
            f"{archive}: unexpected entry {name!r} (an export holds "
            f"{EXPORT_MANIFEST} and {_PACKAGE_DIR}/ only)"
        )
    return entry


def _read_header(archive: Path, tar: tarfile.TarFile, member: tarfile.TarInfo) -> dict:
    source = tar.extractfile(member)
    header = json.loads(source.read(1 << 22)) if source is not None else None
    if (
        not isinstance(header, dict)
        or header.get("format") != EXPORT_FORMAT
        or not isinstance(header.get("files"), dict)
    ):
        raise ModelError(f"{archive}: {EXPORT_MANIFEST} is not a foundry export manifest")
    if header.get("format_version") != EXPORT_FORMAT_VERSION:
        raise ModelError(
            f"{archive}: export format version {header.get('format_version')} "
            f"is not supported (this foundry reads {EXPORT_FORMAT_VERSION})",
            hint="upgrade foundry",
        )
    return header
