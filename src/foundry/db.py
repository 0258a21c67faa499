"""Where foundry's database is and how an engine for it is made.

The registry index and the serving tables (keys, usage) share one database:
``FOUNDRY_DATABASE_URL`` when set, else ``sqlite:///<FOUNDRY_HOME>/foundry.db``. SQLite
runs in WAL mode (readers go on while one process writes) with a busy timeout, so
several processes can use one file. PostgreSQL is reached with psycopg 3
(``postgresql+psycopg://user:password@host:5432/db``; the plain ``postgresql://`` and
``postgres://`` forms mean the same here). `open_engine` also brings the schema to the
newest migration (`foundry.migrations`). Nothing here imports torch: the `foundry keys`
and `foundry usage` commands start fast.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from foundry.errors import FoundryError
from foundry.extras import install_command, require

# Seconds SQLite waits for another writer's lock before "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30.0
URL_HINT = (
    "set FOUNDRY_DATABASE_URL to a SQLAlchemy URL such as "
    "postgresql+psycopg://user:password@host:5432/foundry or sqlite:////path/foundry.db"
)


def default_home() -> Path:
    """The store root: ``FOUNDRY_HOME`` or ``./.foundry``, as an absolute path."""
    return Path(os.environ.get("FOUNDRY_HOME") or ".foundry").expanduser().resolve()


def database_url(home: Path | str | None = None, url: str | None = None) -> str:
    """``url``, else ``FOUNDRY_DATABASE_URL``, else the SQLite file ``<home>/foundry.db``."""
    if url:
        return url
    if os.environ.get("FOUNDRY_DATABASE_URL"):
        return os.environ["FOUNDRY_DATABASE_URL"]
    root = Path(home).expanduser().resolve() if home is not None else default_home()
    return f"sqlite:///{(root / 'foundry.db').as_posix()}"


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid url>"


def sqlite_file(url: str) -> Path | None:
    """The database file of a file-based SQLite URL, else None (raises ArgumentError for
    a malformed URL)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def open_engine(
    url: str,
    *,
    error: type[FoundryError],
    what: str = "database",
    sqlite_immediate: bool = False,
    busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S,
) -> Engine:
    """`create_db_engine`, then the schema brought to the newest migration
    (`foundry.migrations.ensure_schema`). A bad URL, a missing driver or a database that
    cannot be reached or upgraded raises ``error`` naming ``what`` and FOUNDRY_DATABASE_URL.
    """
    from foundry.migrations import ensure_schema

    try:
        engine = create_db_engine(
            url, sqlite_immediate=sqlite_immediate, busy_timeout_s=busy_timeout_s
        )
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise url_error(url, exc, error=error, what=what) from exc
    try:
        ensure_schema(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise error(
            f"cannot open the {what} {safe_url(url)!r}: {reason(exc)}",
            hint="check that the server is running and FOUNDRY_DATABASE_URL is right; "
            "`foundry db current` shows the schema revision",
        ) from exc
    return engine


def url_error(
    url: str, exc: BaseException, *, error: type[FoundryError], what: str = "database"
) -> FoundryError:
    """The error for a URL SQLAlchemy cannot use: malformed, unknown dialect, or a
    driver that is not installed."""
    hint = URL_HINT
    if isinstance(exc, ImportError):
        postgres = safe_url(url).startswith(("postgres", "<"))
        hint = (
            f"install the PostgreSQL driver: {install_command('postgres')}"
            if postgres
            else "its driver is not installed; foundry is tested on SQLite and PostgreSQL"
        ) + "; " + hint
    return error(f"cannot use {what} URL {safe_url(url)!r}: {exc}", hint=hint)


def reason(exc: SQLAlchemyError) -> str:
    """The driver's message of a database error, without SQLAlchemy's statement echo and
    link (the statement is ours; the reason is what the user can act on)."""
    return str(getattr(exc, "orig", None) or exc).strip()


def normalize_url(url: str | URL) -> URL:
    """``url`` parsed; ``postgresql://`` and ``postgres://`` (libpq's forms, which
    SQLAlchemy would give to psycopg2) mean psycopg 3, the driver foundry installs."""
    if isinstance(url, str) and url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_db_engine(
    url: str,
    *,
    sqlite_immediate: bool = False,
    busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S,
) -> Engine:
    """An engine for ``url``; for SQLite, WAL mode, ``synchronous=NORMAL`` and a busy
    timeout, creating the file's folder.

    ``sqlite_immediate``: every transaction starts with ``BEGIN IMMEDIATE`` (it takes the
    write lock up front, so read-then-write transactions of several processes queue on
    the busy timeout instead of failing with "database is locked" on upgrade). A
    connection with the execution option ``sqlite_begin="DEFERRED"`` starts a plain
    read transaction instead. The DBAPI connections of such an engine are in the driver's
    autocommit mode, so code that uses them raw (``engine.raw_connection()``, as
    ``ServeStore.fast_write`` does) emits its own ``BEGIN IMMEDIATE`` and commits with
    ``connection.commit()``. Raises SQLAlchemy's ArgumentError / NoSuchModuleError for
    a bad URL or a missing driver; callers turn those into their own errors.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        if parsed.drivername == "postgresql+psycopg":
            require("postgres", "psycopg", "a PostgreSQL database (FOUNDRY_DATABASE_URL)")
        return create_engine(parsed, pool_pre_ping=True)
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        parsed, connect_args={"timeout": busy_timeout_s, "check_same_thread": False}
    )
    event.listen(engine, "connect", sqlite_on_connect)
    if sqlite_immediate:
        # The recipe of SQLAlchemy's SQLite dialect docs ("Serializable isolation /
        # Savepoints / Transactional DDL"): pysqlite stops emitting its own BEGIN and we
        # emit ours when SQLAlchemy begins a transaction.
        event.listen(engine, "connect", _sqlite_driver_autocommit)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL and `synchronous=NORMAL` on each new SQLite connection (a `connect` event
    listener; foundry's engines and tuning's Optuna storage use it)."""
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers go on while one process writes. NORMAL sync in WAL loses no
        # committed transaction when a process dies (kill -9); only an OS crash or power
        # loss can drop the last commits.
        _set_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _set_wal(cursor: Any) -> None:
    """WAL mode, once per database file (it is persistent). Asking to set it takes a lock
    that SQLite may refuse at once ("database is locked", without waiting the busy timeout)
    while other processes open or write the file: read the mode first, and retry the
    switch within the busy timeout."""
    import sqlite3

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    conn.exec_driver_sql("BEGIN DEFERRED" if mode == "DEFERRED" else "BEGIN IMMEDIATE")
