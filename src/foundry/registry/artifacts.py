"""Package folders in S3-compatible object storage, shared by every home that uses it.

    FOUNDRY_ARTIFACTS=s3://bucket/prefix
    s3://bucket/prefix/models/<name>/<version>-<id>/   one package: the files of package.py

With FOUNDRY_ARTIFACTS set, the registry (store.py) uploads a new package before its index
row commits, so no row points at objects that are not there, and deletes the row before
the objects. Each home keeps the packages it has used under the same relative path
(`<home>/models/<name>/<version>-<id>/`): its local cache, filled by registering there or
by a first load. A first load downloads into a hidden folder, checks foundry.json against
the sha256 the index recorded and every other file against foundry.json
(`foundry.registry.integrity`), and only then renames the folder into place: a corrupt or
changed object is an error naming its URL, and never enters a cache. Loads after that
read local files, checked as every load is.

Why `<version>-<id>` and not `<version>`: two homes that share the database but not a disk
may both try version 4 of a name at once. The database lets one row in, but the loser's
upload to the same keys would overwrite the winner's files. A fresh id per attempt keeps
uploads apart, and a version number given again after a delete never meets an old cache
folder. A crash between upload and commit leaves objects no row names: invisible, like a
half-registered folder in a home.

Endpoint and credentials: `foundry.objectstore` (AWS_* variables, FOUNDRY_S3_ENDPOINT_URL).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from foundry.errors import ModelError
from foundry.objectstore import describe_failure, filesystem, split_url
from foundry.registry.integrity import (
    FILES_KEY,
    MANIFEST,
    moved,
    verify_files,
    verify_manifest,
)
from foundry.registry.package import TMP_PREFIX, read_json

ARTIFACTS_ENV = "FOUNDRY_ARTIFACTS"
_STORE_HINT = (
    f"check {ARTIFACTS_ENV} (every home sharing the index database must name the same "
    "bucket and prefix) and that the bucket exists"
)

log = logging.getLogger("foundry.registry")


def artifact_store(url: str | None = None) -> ArtifactStore | None:
    """The store `url` names (default: FOUNDRY_ARTIFACTS); None when neither is set, and
    packages live only in the home."""
    url = url if url is not None else os.environ.get(ARTIFACTS_ENV, "")
    return ArtifactStore(url) if url else None


class ArtifactStore:
    """Package folders under one ``s3://bucket/prefix``, at the paths they have under a
    home (``models/<name>/<version>-<id>``). Safe to share between threads."""

    def __init__(self, url: str) -> None:
        bucket, prefix = split_url(url, error=ModelError, what=ARTIFACTS_ENV)
        self._root = f"{bucket}/{prefix}" if prefix else bucket
        self.url = f"s3://{self._root}"

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    def object_url(self, rel: str) -> str:
        """The URL of `rel` ('/'-separated, relative to the prefix)."""
        return f"{self.url}/{rel}"

    @staticmethod
    def new_path(name: str, version: int) -> str:
        """A package path no other attempt uses (see the module docstring)."""
        return f"models/{name}/{version}-{uuid.uuid4().hex[:12]}"

    def upload(self, directory: Path, rel: str) -> None:
        """Every file of the package folder `directory` to `rel`. On failure, whatever was
        written is removed and ModelError names the URL and the likely cause."""
        local = sorted(p for p in Path(directory).rglob("*") if p.is_file())
        remote = [f"{self._root}/{rel}/{p.relative_to(directory).as_posix()}" for p in local]
        try:
            # One call: s3fs sends the files concurrently (and large ones in parts).
            self._fs().put([str(p) for p in local], remote)
        except Exception as exc:  # botocore and aiohttp raise many kinds; all mean "not stored"
            self.remove(rel)
            raise ModelError(
                f"cannot write the model package to {self.object_url(rel)}: "
                f"{describe_failure(exc)}",
                hint=_STORE_HINT,
            ) from exc

    def fetch(self, rel: str, destination: Path, *, manifest_sha256: str | None, ref: str) -> None:
        """Download the package at `rel` into `destination` (a folder not there yet),
        checked as the module docstring says. If another process of this home fetched it
        first, its copy stays and this one is dropped."""
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        tmp = destination.parent / f"{TMP_PREFIX}fetch-{uuid.uuid4().hex}"
        tmp.mkdir()
        origin = self.object_url(rel)
        try:
            self._download(rel, [MANIFEST], tmp, ref=ref)
            verify_manifest(tmp, manifest_sha256, ref=ref, origin=origin)
            manifest = read_json(tmp / MANIFEST)
            names = _listed_files(manifest, ref=ref, origin=origin)
            self._download(rel, names, tmp, ref=ref)
            verify_files(tmp, manifest, ref=ref, origin=origin)
            real_tmp = os.path.realpath(tmp)
            try:
                os.rename(tmp, destination)
                moved(real_tmp, destination)
            except OSError as exc:
                if not (destination / MANIFEST).is_file():
                    raise ModelError(
                        f"cannot put the downloaded package of {ref} at {destination}: {exc}"
                    ) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def remove(self, rel: str) -> None:
        """Delete the objects under `rel` (nothing there is fine). A failure is logged
        with the URL, not raised: it leaves objects no index row names, which nothing
        reads, and the caller's outcome (a refused registration, a delete) stands."""
        prefix = f"{self._root}/{rel}/"  # the '/' keeps models/a/3-x from matching 3-xy
        try:
            fs = self._fs()
            keys = fs.find(prefix)
            if keys:
                fs.rm(keys)
        except Exception as exc:
            log.warning("could not remove %s (remove it by hand): %s", self.object_url(rel), exc)

    def _download(self, rel: str, names: list[str], into: Path, *, ref: str) -> None:
        for name in names:
            (into / name).parent.mkdir(parents=True, exist_ok=True)
        remote = [f"{self._root}/{rel}/{name}" for name in names]
        try:
            self._fs().get(remote, [str(into / name) for name in names])
        except FileNotFoundError as exc:
            missing = [n for n in names if not (into / n).is_file()]
            shown = self.object_url(f"{rel}/{missing[0] if missing else names[0]}")
            raise ModelError(
                f"model {ref}: package file {shown} is not in the artifact store",
                hint="it was deleted from the bucket, or " + _STORE_HINT,
            ) from exc
        except Exception as exc:
            raise ModelError(
                f"model {ref}: cannot download {self.object_url(rel)}: {describe_failure(exc)}",
                hint=_STORE_HINT,
            ) from exc

    def _fs(self) -> Any:
        return filesystem(error=ModelError)


def _listed_files(manifest: dict[str, Any], *, ref: str, origin: str) -> list[str]:
    """The files foundry.json lists, each checked to be a plain relative path before
    anything is written under that name."""
    listed = manifest.get(FILES_KEY)
    if not isinstance(listed, dict):
        raise ModelError(
            f"model {ref}: {origin}/{MANIFEST} lists no file checksums",
            hint="only packages registered with checksums can be shared",
        )
    for name in listed:
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or ".." in parts or "\\" in name:
            raise ModelError(
                f"model {ref}: {origin}/{MANIFEST} lists {name!r}, which is outside the package"
            )
    return list(listed)
