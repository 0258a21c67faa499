"""The model store: package directories under ``<home>/models/`` plus an index database.

    <home>/                      FOUNDRY_HOME, or ./.foundry
      foundry.db                 index (SQLite by default; FOUNDRY_DATABASE_URL or url=
                                 for another database such as PostgreSQL)
      models/<name>/<version>/   one package per version (see package.py)

The package directory is the source of truth for a model's content; the database row
is what makes it visible (``resolve``, ``list_models``). A version is allocated by
renaming a fully written package into ``<name>/<version>`` (the rename fails if another
writer took that number first) and then inserting the row, whose unique (name, version)
constraint catches writers that share the database but not the directory. Either
conflict means: try the next number. A crash between the rename and the insert leaves an
invisible directory whose number is skipped, never a half package or a row without one.

With FOUNDRY_ARTIFACTS=s3://bucket/prefix the packages live in object storage, shared by
every home on the same database, and each home's `models/` folder is its local cache
(`foundry.registry.artifacts`): a package is uploaded under a path of its own before its
row is inserted, and a home loading a version it does not hold downloads and verifies it
first.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Engine,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import foundry.crypto as crypto
from foundry.db import database_url, open_engine, safe_url, sqlite_file
from foundry.db import default_home as default_home  # re-exported: foundry.registry API
from foundry.errors import ModelError
from foundry.registry.artifacts import ARTIFACTS_ENV, ArtifactStore, artifact_store
from foundry.registry.integrity import Confinement, seal, verify_files, verify_manifest
from foundry.registry.package import (
    TMP_PREFIX,
    Package,
    PackageFiles,
    read_json,
    read_package,
    stage_package,
    write_json,
)
from foundry.registry.refs import (
    format_ref,
    is_package_dir,
    parse_ref,
    validate_name,
    validate_tag,
)

# Each attempt loses a race to another writer that then holds a version, so with fewer
# than this many concurrent writers on one name an attempt is bound to succeed.
_MAX_ATTEMPTS = 100


class _Base(DeclarativeBase):
    pass


class _ModelVersionRow(_Base):
    """One registered model version. Portable SQL only (SQLite and PostgreSQL)."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_versions_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    path: Mapped[str] = mapped_column(String(512), nullable=False)
    """Package directory relative to home, with '/' separators."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    parent: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """Reference "name:version" of the model this one was derived from."""
    task: Mapped[str | None] = mapped_column(String(32), nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    fingerprint: Mapped[str | None] = mapped_column(String(128), nullable=True)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    tags: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """sha256 of the package's foundry.json (NULL: registered before it was kept)."""
    run_dir: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    """Absolute path of the run folder foundry created for this version, if any."""


class _ModelAliasRow(_Base):
    """`name:alias` → one version (`foundry models alias`). One row per alias, so moving
    it is one UPDATE: a reader sees the old version or the new one, never none or two."""

    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("name", "alias", name="uq_model_aliases_name_alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    alias: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


@dataclass(frozen=True)
class ModelRecord:
    """A registered model version as the index describes it."""

    name: str
    version: int
    path: Path
    """Absolute path of the package directory."""
    created_at: datetime
    """Registration time, timezone-aware UTC."""
    parent: str | None
    task: str | None
    metrics: dict[str, Any]
    fingerprint: str | None
    description: str
    tags: tuple[str, ...]
    size_bytes: int
    version_count: int | None = None
    """Number of versions of this name; set by ``list_models`` only."""
    manifest_sha256: str | None = None
    """sha256 of foundry.json at registration (None: registered before it was kept)."""
    run_dir: Path | None = None
    """The run folder foundry created for this version (training or compress run)."""

    @property
    def ref(self) -> str:
        return format_ref(self.name, self.version)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view for the CLI and HTTP API."""
        return {
            "ref": self.ref,
            "name": self.name,
            "version": self.version,
            "path": str(self.path),
            "created_at": self.created_at.isoformat(),
            "parent": self.parent,
            "task": self.task,
            "metrics": self.metrics,
            "fingerprint": self.fingerprint,
            "description": self.description,
            "tags": list(self.tags),
            "size_bytes": self.size_bytes,
            "version_count": self.version_count,
        }


class Registry:
    """Register, find and load model packages.

    home: store root (default ``default_home()``, resolved now). url: SQLAlchemy database
    URL (default ``FOUNDRY_DATABASE_URL``, else ``sqlite:///<home>/foundry.db``). The
    database's tables are created (or migrated, `foundry.migrations`) on first use.
    artifacts: ``s3://bucket/prefix`` where packages are shared (default
    ``FOUNDRY_ARTIFACTS``; unset: packages live in the home only). Safe to share between
    threads; several processes may use the same home and database at once, and several
    homes the same database and artifact store.
    """

    def __init__(
        self,
        home: Path | str | None = None,
        url: str | None = None,
        *,
        artifacts: str | None = None,
    ) -> None:
        self.home = Path(home).expanduser().resolve() if home is not None else default_home()
        self.url = database_url(self.home, url)
        self.artifacts: ArtifactStore | None = artifact_store(artifacts)
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()

    def __repr__(self) -> str:
        shared = f", artifacts={self.artifacts.url!r}" if self.artifacts is not None else ""
        return f"Registry(home={str(self.home)!r}, url={self._safe_url()!r}{shared})"

    # -- writing ----------------------------------------------------------------------

    def register(
        self,
        name: str,
        *,
        weights: dict[str, torch.Tensor],
        manifest: dict[str, Any],
        metrics: dict[str, Any],
        card: str | None = None,
        parent: str | None = None,
        tags: Iterable[str] = (),
        description: str = "",
        files: PackageFiles | None = None,
        run_dir: Path | str | None = None,
        version: int | None = None,
    ) -> ModelRecord:
        """Store a new version of ``name`` (1 for a new name, else latest + 1; `version`:
        exactly that number, ModelError if it is taken — `foundry models import`).

        ``parent`` is a reference to the model this one derives from (a compressed or
        fine-tuned variant); it must exist and is stored pinned ("name:latest" becomes
        "name:3"). ``name``, ``version`` and ``parent`` are added to the stored manifest.
        ``files``: extra package files (tokenizer, Hugging Face model or adapter
        directory), see `foundry.registry.package.PackageFiles`. ``run_dir``: the run
        folder foundry created for this version; the report and dashboard read its
        training curves and compress report, and no folder outside the home that the
        index does not record (`foundry.registry.integrity`).

        Every package gets ``card.json`` (`foundry.evaluation.card.build_card` of its
        manifest and metrics); ``card`` is its markdown, rendered from that when None.
        """
        validate_name(name)
        parent_ref = self.resolve(parent).ref if parent is not None else None
        tag_list = [tags] if isinstance(tags, str) else [str(t) for t in tags]
        metrics = jsonable(metrics)
        if not isinstance(metrics, dict):
            raise ModelError(f"metrics must be a dict, got {type(metrics).__name__}")
        if not isinstance(manifest, dict):
            raise ModelError(f"manifest must be a dict, got {type(manifest).__name__}")
        engine = self._get_engine()
        model_dir = self.home / "models" / name
        model_dir.mkdir(parents=True, exist_ok=True)
        # Weights are written once; only foundry.json changes between attempts.
        tmp = stage_package(
            model_dir,
            weights=weights,
            manifest={**manifest, "name": name, "version": None, "parent": parent_ref},
            metrics=metrics,
            card=card,
            files=files,
        )

        def seal_as(version: int) -> str:
            stored = {**manifest, "name": name, "version": version, "parent": parent_ref}
            _write_card(tmp, stored, metrics, card)
            # Last: foundry.json lists the checksums of every file above, and the index
            # keeps foundry.json's own (unchanged files are hashed once).
            return seal(tmp, stored)

        def new_row(version: int, path: str, size: int, manifest_sha256: str) -> _ModelVersionRow:
            return _ModelVersionRow(
                name=name,
                version=version,
                path=path,
                created_at=datetime.now(timezone.utc),
                parent=parent_ref,
                task=_task_name(manifest.get("task")),
                metrics=metrics,
                fingerprint=_optional_str(manifest.get("fingerprint")),
                description=description,
                tags=tag_list,
                size_bytes=size,
                manifest_sha256=manifest_sha256,
                run_dir=str(Path(run_dir).resolve()) if run_dir is not None else None,
            )

        def taken(version: int) -> ModelError:
            return ModelError(
                f"{name}:{version} already exists in the registry at {self.home}",
                hint="import it under another name (--as)",
            )

        wanted = version  # `foundry models import`: this number or none

        def next_version(following: int) -> int:
            """`following` (latest + 1), or the version asked for if it is free."""
            if wanted is None:
                return following
            if self._version_taken(name, wanted):
                raise taken(wanted)
            return wanted

        try:
            if self.artifacts is not None:
                return self._register_shared(
                    name, tmp, self.artifacts, seal_as, new_row, next_version
                )
            for _ in range(_MAX_ATTEMPTS):
                version = next_version(
                    max(self._max_version(name), _max_dir_version(model_dir)) + 1
                )
                if wanted is not None and (model_dir / str(wanted)).exists():
                    raise taken(wanted)
                manifest_sha256 = seal_as(version)
                final = model_dir / str(version)
                size = _dir_size(tmp)
                try:
                    # Atomic, and fails if `final` already holds another writer's package.
                    os.rename(tmp, final)
                except OSError as exc:
                    if final.exists():
                        continue
                    raise ModelError(f"cannot move the model package to {final}: {exc}") from exc
                try:
                    row = new_row(
                        version, final.relative_to(self.home).as_posix(), size, manifest_sha256
                    )
                    # expire_on_commit=False: the row's values are read after the commit.
                    with Session(engine, expire_on_commit=False) as session, session.begin():
                        session.add(row)
                except IntegrityError as exc:
                    if self._version_taken(name, version):
                        # Another writer sharing the database (not this directory) holds
                        # this version: take the package back and try the next number.
                        os.rename(final, tmp)
                        continue
                    shutil.rmtree(final, ignore_errors=True)
                    raise self._not_recorded(name, version, exc) from exc
                except BaseException as exc:
                    shutil.rmtree(final, ignore_errors=True)
                    if isinstance(exc, SQLAlchemyError):
                        raise self._not_recorded(name, version, exc) from exc
                    raise
                return self._record(row)
            raise ModelError(
                f"could not allocate a version of '{name}' after {_MAX_ATTEMPTS} attempts",
                hint="too many concurrent registrations of the same name",
            )
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _register_shared(
        self,
        name: str,
        tmp: Path,
        store: ArtifactStore,
        seal_as: Callable[[int], str],
        new_row: Callable[[int, str, int, str], _ModelVersionRow],
        next_version: Callable[[int], int],
    ) -> ModelRecord:
        """`register` with an artifact store: upload the sealed package `tmp` under a path
        of its own, then insert the row; a version taken meanwhile by another writer
        (the unique constraint) removes the upload and tries the next number. The
        package stays in this home as its cached copy."""
        for _ in range(_MAX_ATTEMPTS):
            version = next_version(self._max_version(name) + 1)
            manifest_sha256 = seal_as(version)
            rel = store.new_path(name, version)
            size = _dir_size(tmp)
            store.upload(tmp, rel)  # first: no row ever points at objects not there
            try:
                row = new_row(version, rel, size, manifest_sha256)
                with (
                    Session(self._get_engine(), expire_on_commit=False) as session,
                    session.begin(),
                ):
                    session.add(row)
            except IntegrityError as exc:
                store.remove(rel)
                if self._version_taken(name, version):
                    continue
                raise self._not_recorded(name, version, exc) from exc
            except BaseException as exc:
                # A commit can fail after the server applied it (a dropped connection):
                # the objects go only once the row is known to be absent.
                if not self._maybe_recorded(name, version, rel):
                    store.remove(rel)
                if isinstance(exc, SQLAlchemyError):
                    raise self._not_recorded(name, version, exc) from exc
                raise
            # This home's cached copy: its first load downloads nothing (if the rename
            # fails, the first load fetches it instead).
            with contextlib.suppress(OSError):
                os.rename(tmp, self.home / rel)
            return self._record(row)
        raise ModelError(
            f"could not allocate a version of '{name}' after {_MAX_ATTEMPTS} attempts",
            hint="too many concurrent registrations of the same name",
        )

    def _maybe_recorded(self, name: str, version: int, path: str) -> bool:
        """Whether the row (name, version, path) may exist: True when the database says
        so or cannot be asked."""
        try:
            with Session(self._get_engine()) as session:
                query = select(_ModelVersionRow.id).where(
                    _ModelVersionRow.name == name,
                    _ModelVersionRow.version == version,
                    _ModelVersionRow.path == path,
                )
                return session.scalar(query) is not None
        except SQLAlchemyError:
            return True

    def delete(self, ref: str) -> ModelRecord:
        """Remove one version (the reference must name it: "adult:3"). Returns its record.

        If the latest version is deleted its number may be given to the next registration.
        """
        name, version = parse_ref(ref)
        if not isinstance(version, int):  # latest, or a tag: both move
            raise ModelError(
                f"refusing to delete {ref!r}: name the version to delete",
                hint=f"e.g. '{name}:<version>'; see `versions('{name}')`",
            )
        record = self.resolve(ref)
        directory = self.package_dir(record)  # never remove a folder outside the store
        with Session(self._get_engine()) as session, session.begin():
            session.execute(
                delete(_ModelVersionRow).where(
                    _ModelVersionRow.name == name, _ModelVersionRow.version == version
                )
            )
            session.execute(  # an alias never points at a deleted version
                delete(_ModelAliasRow).where(
                    _ModelAliasRow.name == name, _ModelAliasRow.version == version
                )
            )
        if self.artifacts is not None:
            # After the row: a version is never listed without its objects. A failure
            # leaves objects no row names (logged with their URL), not a broken model.
            self.artifacts.remove(directory.relative_to(self.home).as_posix())
        # Rename first so the package disappears in one step, then remove it.
        trash = directory.parent / f"{TMP_PREFIX}deleted-{uuid.uuid4().hex}"
        try:
            os.rename(directory, trash)
        except OSError:
            trash = directory
        shutil.rmtree(trash, ignore_errors=True)
        return record

    # -- reading ----------------------------------------------------------------------

    def resolve(self, ref: str) -> ModelRecord:
        """The record a reference points to; ModelError with suggestions if none."""
        name, version = parse_ref(ref)
        if isinstance(version, str) and version != "latest":
            aliased = self._alias_version(name, version)
            if aliased is None:
                return self._resolve_tag(name, version)
            version = aliased
        with self._session() as session:
            query = select(_ModelVersionRow).where(_ModelVersionRow.name == name)
            if version == "latest":
                query = query.order_by(_ModelVersionRow.version.desc()).limit(1)
            else:
                query = query.where(_ModelVersionRow.version == version)
            row = session.scalars(query).first() if session is not None else None
            if row is not None:
                return self._record(row)
            existing = self._versions_of(session, name)
            if not existing:
                raise self._unknown_name(session, name)
            raise ModelError(
                f"model '{name}' has no version {version}",
                hint=f"existing versions: {', '.join(map(str, existing))}; "
                f"latest is '{name}:{existing[-1]}'",
            )

    def _resolve_tag(self, name: str, tag: str) -> ModelRecord:
        with self._session() as session:
            rows = (
                session.scalars(
                    select(_ModelVersionRow)
                    .where(_ModelVersionRow.name == name)
                    .order_by(_ModelVersionRow.version.desc())
                ).all()
                if session is not None
                else []
            )
            if not rows:
                raise self._unknown_name(session, name)
        for row in rows:  # tags are few and a JSON list: filtered here, not in SQL
            if tag in (row.tags or ()):
                return self._record(row)
        tagged = sorted({t for row in rows for t in (row.tags or ())})
        raise ModelError(
            f"no version of model '{name}' is tagged '{tag}'",
            hint=(f"its tags: {', '.join(tagged)}" if tagged else f"'{name}' has no tags")
            + f"; versions: {', '.join(str(r.version) for r in reversed(rows))}",
        )

    def tag(self, ref: str, tag: str) -> ModelRecord:
        """Put `tag` on the version `ref` resolves to, taking it off every other version
        of that name (a tag names one version at a time). Returns the updated record."""
        validate_tag(tag)
        record = self.resolve(ref)
        with Session(self._get_engine(), expire_on_commit=False) as session, session.begin():
            rows = session.scalars(
                select(_ModelVersionRow).where(_ModelVersionRow.name == record.name)
            ).all()
            for row in rows:
                tags = [t for t in (row.tags or ()) if t != tag]
                if row.version == record.version:
                    tags.append(tag)
                if tags != list(row.tags or ()):
                    row.tags = tags  # a new list: SQLAlchemy sees the JSON change
        return self.resolve(f"{record.name}:{record.version}")

    def untag(self, ref: str, tag: str) -> ModelRecord:
        """Take `tag` off the version `ref` resolves to; ModelError if it does not carry
        it. Returns the updated record."""
        record = self.resolve(ref)
        if tag not in record.tags:
            raise ModelError(
                f"{record.ref} is not tagged {tag!r}",
                hint=f"its tags: {', '.join(record.tags) or 'none'}",
            )
        with Session(self._get_engine()) as session, session.begin():
            row = session.scalars(
                select(_ModelVersionRow).where(
                    _ModelVersionRow.name == record.name, _ModelVersionRow.version == record.version
                )
            ).one()
            row.tags = [t for t in (row.tags or ()) if t != tag]
        return self.resolve(record.ref)

    def set_alias(self, name: str, alias: str, version: int) -> ModelRecord:
        """Point `name:alias` at `version` (creating the alias or moving it in one
        UPDATE). Returns the record it now names."""
        validate_tag(alias)
        record = self.resolve(format_ref(name, version))
        for _ in range(2):  # a concurrent first set of the same alias: update it instead
            try:
                with Session(self._get_engine()) as session, session.begin():
                    moved = session.execute(
                        update(_ModelAliasRow)
                        .where(_ModelAliasRow.name == name, _ModelAliasRow.alias == alias)
                        .values(version=version, updated_at=datetime.now(timezone.utc))
                    ).rowcount
                    if not moved:
                        session.add(
                            _ModelAliasRow(
                                name=name,
                                alias=alias,
                                version=version,
                                updated_at=datetime.now(timezone.utc),
                            )
                        )
                return record
            except IntegrityError:
                continue
        raise ModelError(f"could not set the alias {name}:{alias}; try again")

    def remove_alias(self, name: str, alias: str) -> int:
        """Delete `name:alias`; returns the version it named (ModelError if none)."""
        version = self._alias_version(name, alias)
        if version is None:
            raise ModelError(
                f"model '{name}' has no alias {alias!r}",
                hint=f"its aliases: {', '.join(self.aliases(name)) or 'none'}",
            )
        with Session(self._get_engine()) as session, session.begin():
            session.execute(
                delete(_ModelAliasRow).where(
                    _ModelAliasRow.name == name, _ModelAliasRow.alias == alias
                )
            )
        return version

    def aliases(self, name: str) -> dict[str, int]:
        """{alias: version} of `name`, by alias."""
        with self._session() as session:
            if session is None:
                return {}
            rows = session.execute(
                select(_ModelAliasRow.alias, _ModelAliasRow.version)
                .where(_ModelAliasRow.name == name)
                .order_by(_ModelAliasRow.alias)
            )
            return {alias: version for alias, version in rows}

    def children(self, ref: str) -> list[str]:
        """The versions registered with `ref` as their parent (compressed variants,
        fine-tunes), as refs."""
        record = self.resolve(ref)
        with self._session() as session:
            if session is None:
                return []
            rows = session.execute(
                select(_ModelVersionRow.name, _ModelVersionRow.version)
                .where(_ModelVersionRow.parent == record.ref)
                .order_by(_ModelVersionRow.name, _ModelVersionRow.version)
            )
            return [format_ref(n, v) for n, v in rows]

    def _alias_version(self, name: str, alias: str) -> int | None:
        with self._session() as session:
            if session is None:
                return None
            return session.scalar(
                select(_ModelAliasRow.version).where(
                    _ModelAliasRow.name == name, _ModelAliasRow.alias == alias
                )
            )

    def load(self, ref: str | Path) -> Package:
        """Read the package a reference points to, every file checked against the
        checksums recorded at registration. A path to a package directory (a Path, or a
        string containing a path separator) is read directly (checked against its own
        foundry.json: nothing records what it should be)."""
        if isinstance(ref, Path) or (isinstance(ref, str) and ("/" in ref or os.sep in ref)):
            if not is_package_dir(ref):
                raise ModelError(f"{ref} is not a model package directory")
            return read_package(ref)
        record = self.resolve(ref)
        return read_package(
            self.local_dir(record), manifest_sha256=record.manifest_sha256, ref=record.ref
        )

    def verify(self, ref: str) -> bool:
        """Check a version's files against the checksums recorded at registration without
        loading it (`foundry models verify`): ModelError naming the first file that
        differs; False for a version registered before packages carried checksums."""
        record = self.resolve(ref)
        return verify_files(self.local_dir(record), self.read_manifest(record), ref=record.ref)

    def read_manifest(self, record: ModelRecord) -> dict[str, Any]:
        """A version's foundry.json without its weights, checked against the index's
        record of it: ModelError if it was changed after registration."""
        directory = self.local_dir(record)
        verify_manifest(directory, record.manifest_sha256, ref=record.ref)
        return read_json(directory / "foundry.json")

    def package_dir(self, record: ModelRecord) -> Path:
        """The package folder of `record`, checked to lie under ``<home>/models/`` (the
        index's path column is data too)."""
        return Confinement([self.home / "models"]).require(
            record.path, what=f"the package folder of {record.ref} in the registry index,"
        )

    def local_dir(self, record: ModelRecord) -> Path:
        """`package_dir`, downloaded from the artifact store first (and verified) when
        this home does not hold it yet."""
        directory = self.package_dir(record)
        if (directory / "foundry.json").is_file():
            return directory
        rel = directory.relative_to(self.home).as_posix()
        if self.artifacts is not None:
            self.artifacts.fetch(
                rel, directory, manifest_sha256=record.manifest_sha256, ref=record.ref
            )
        elif not directory.name.isdigit():  # a `<version>-<id>` path: a shared package
            raise ModelError(
                f"model {record.ref} was registered to an artifact store ({rel}), and "
                f"{ARTIFACTS_ENV} is not set",
                hint=f"set {ARTIFACTS_ENV} to the s3:// URL it was registered with",
            )
        return directory

    def run_dirs(self, names: Iterable[str]) -> list[Path]:
        """The run folders foundry recorded for the versions of `names`, newest first:
        with the home, the only folders the report and dashboard read."""
        names = sorted(set(names))
        with self._session() as session:
            if session is None or not names:
                return []
            query = (
                select(_ModelVersionRow.run_dir)
                .where(_ModelVersionRow.name.in_(names), _ModelVersionRow.run_dir.is_not(None))
                .order_by(_ModelVersionRow.created_at.desc(), _ModelVersionRow.id.desc())
            )
            seen: dict[str, None] = dict.fromkeys(r for r in session.scalars(query) if r)
        return [Path(r) for r in seen]

    def confinement(self, lineage: Iterable[str]) -> Confinement:
        """What the report and dashboard may read for a model of this lineage (refs): the
        home and the run folders recorded for the names in it."""
        names = {parse_ref(ref)[0] for ref in lineage}
        return Confinement([self.home, *self.run_dirs(names)])

    def list_models(self) -> list[ModelRecord]:
        """The latest version of every model, by name, with ``version_count`` set."""
        with self._session() as session:
            if session is None:
                return []
            latest = (
                select(
                    _ModelVersionRow.name,
                    func.max(_ModelVersionRow.version).label("latest"),
                    func.count(_ModelVersionRow.id).label("n"),
                )
                .group_by(_ModelVersionRow.name)
                .subquery()
            )
            query = (
                select(_ModelVersionRow, latest.c.n)
                .join(
                    latest,
                    and_(
                        _ModelVersionRow.name == latest.c.name,
                        _ModelVersionRow.version == latest.c.latest,
                    ),
                )
                .order_by(_ModelVersionRow.name)
            )
            return [self._record(row, version_count=n) for row, n in session.execute(query)]

    def versions(self, name: str) -> list[ModelRecord]:
        """Every version of ``name``, oldest first; ModelError if the name is unknown."""
        validate_name(name)
        with self._session() as session:
            rows = []
            if session is not None:
                query = (
                    select(_ModelVersionRow)
                    .where(_ModelVersionRow.name == name)
                    .order_by(_ModelVersionRow.version)
                )
                rows = list(session.scalars(query))
            if not rows:
                raise self._unknown_name(session, name)
            return [self._record(row) for row in rows]

    def lineage(self, ref: str) -> list[ModelRecord]:
        """The model and its ancestors, nearest first: [ref, parent, grandparent, ...].
        Stops at a parent that has been deleted."""
        chain = [self.resolve(ref)]
        seen = {chain[0].ref}
        while chain[-1].parent is not None:
            try:
                parent = self.resolve(chain[-1].parent)
            except ModelError:
                break
            if parent.ref in seen:  # cannot happen through register(); guards hand edits
                break
            chain.append(parent)
            seen.add(parent.ref)
        return chain

    def close(self) -> None:
        """Release database connections (the registry stays usable and reconnects)."""
        with self._engine_lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    # -- internals --------------------------------------------------------------------

    def _not_recorded(self, name: str, version: int, exc: SQLAlchemyError) -> ModelError:
        """The error for a package row the registry database did not take (local and
        object-store registrations alike)."""
        if isinstance(exc, IntegrityError):
            return ModelError(f"the registry database refused {name}:{version}: {exc.orig}")
        return ModelError(
            f"cannot record {name}:{version} in the registry database {self._safe_url()!r}: {exc}"
        )

    def _safe_url(self) -> str:
        return safe_url(self.url)

    def _sqlite_file(self) -> Path | None:
        """The database file for a file-based SQLite URL, else None."""
        return sqlite_file(self.url)

    @contextmanager
    def _session(self) -> Iterator[Session | None]:
        """A read session, or None when the SQLite file does not exist yet: reading an
        empty store should not create it."""
        try:
            sqlite_file = self._sqlite_file()
        except ArgumentError:
            sqlite_file = None  # reported by _get_engine
        if sqlite_file is not None and not sqlite_file.exists():
            yield None
            return
        with Session(self._get_engine()) as session:
            yield session

    def _get_engine(self) -> Engine:
        with self._engine_lock:
            if self._engine is None:
                self._engine = self._create_engine()
            return self._engine

    def _create_engine(self) -> Engine:
        # Creates the tables, or brings an older database's to the current schema, once
        # across processes starting together (foundry.migrations).
        return open_engine(self.url, error=ModelError, what="registry database")

    def _max_version(self, name: str) -> int:
        with Session(self._get_engine()) as session:
            query = select(func.max(_ModelVersionRow.version)).where(_ModelVersionRow.name == name)
            return session.scalar(query) or 0

    def _version_taken(self, name: str, version: int) -> bool:
        with Session(self._get_engine()) as session:
            query = select(_ModelVersionRow.id).where(
                _ModelVersionRow.name == name, _ModelVersionRow.version == version
            )
            return session.scalar(query) is not None

    @staticmethod
    def _versions_of(session: Session | None, name: str) -> list[int]:
        if session is None:
            return []
        query = (
            select(_ModelVersionRow.version)
            .where(_ModelVersionRow.name == name)
            .order_by(_ModelVersionRow.version)
        )
        return list(session.scalars(query))

    def _unknown_name(self, session: Session | None, name: str) -> ModelError:
        known: list[str] = []
        if session is not None:
            query = select(_ModelVersionRow.name).distinct().order_by(_ModelVersionRow.name)
            known = list(session.scalars(query))
        message = f"no model named '{name}' in the registry at {self.home}"
        if not known:
            return ModelError(message, hint="the registry is empty; train and register a model")
        close = difflib.get_close_matches(name, known, n=1)
        shown = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
        hint = f"known models: {shown}"
        if close:
            hint = f"did you mean '{close[0]}'? {hint}"
        return ModelError(message, hint=hint)

    def _record(self, row: _ModelVersionRow, version_count: int | None = None) -> ModelRecord:
        created = row.created_at
        if created.tzinfo is None:  # SQLite stores naive datetimes; they were written as UTC
            created = created.replace(tzinfo=timezone.utc)
        else:  # PostgreSQL answers in the session's TimeZone setting, often not UTC
            created = created.astimezone(timezone.utc)
        return ModelRecord(
            name=row.name,
            version=row.version,
            path=self.home / row.path,
            created_at=created,
            parent=row.parent,
            task=row.task,
            metrics=dict(row.metrics or {}),
            fingerprint=row.fingerprint,
            description=row.description or "",
            tags=tuple(row.tags or ()),
            size_bytes=row.size_bytes,
            version_count=version_count,
            manifest_sha256=row.manifest_sha256,
            run_dir=Path(row.run_dir) if row.run_dir else None,
        )


def _max_dir_version(model_dir: Path) -> int:
    """Highest version number among the package directories of one name (0 if none)."""
    try:
        numbers = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
    except FileNotFoundError:
        return 0
    return max(numbers, default=0)


def _dir_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _task_name(task: Any) -> str | None:
    """The task kind from a manifest: a TaskInfo dict ({"task": "binary", ...}) or a str."""
    if isinstance(task, dict):
        task = task.get("task")
    return str(task) if task is not None else None


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays → Python, tuples → lists, NaN/inf → None
    (PostgreSQL JSON and strict parsers reject NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_card(
    directory: Path, manifest: dict[str, Any], metrics: dict[str, Any], card: str | None
) -> None:
    """card.json (always) and card.md (rendered from it unless the caller wrote one)."""
    from foundry.evaluation.card import build_card, render_card

    card_json = build_card(manifest, metrics)
    write_json(directory / "card.json", card_json)
    if card is None:
        crypto.write_text(directory / "card.md", render_card(card_json), fsync=False)
