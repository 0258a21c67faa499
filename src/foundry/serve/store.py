"""The serving tables and the engine they live behind.

    api_keys       one row per key; a rotation chain shares the root key's row as its
                   account (rate bucket and quota counter live there)
    usage_events   one row per admitted request: what billing sums
    idempotency    the stored answer of each (account, Idempotency-Key)

They sit in the registry's database (`foundry.db.database_url`: FOUNDRY_DATABASE_URL or
`<FOUNDRY_HOME>/foundry.db`). Times are epoch seconds (float, UTC), money is integer
cents, and the SQL is portable: SQLite takes its write lock with `BEGIN IMMEDIATE`,
PostgreSQL locks the key row with `SELECT ... FOR UPDATE` (see `ServeStore.write`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from foundry.db import create_db_engine, database_url, default_home, safe_url
from foundry.errors import ConfigError

# Seconds a request waits for another process's write lock. Admissions hold it for well
# under a millisecond, so reaching this means the database is stuck, not busy.
BUSY_TIMEOUT_S = 10.0

metadata = MetaData()

# SQLite autoincrements only an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT.
_BIG_ID = BigInteger().with_variant(Integer, "sqlite")

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(16), nullable=False, index=True),
    # First 12 characters of the key (`fdy_` + 8): shown in listings and logs.
    Column("key_hash", String(64), nullable=False, unique=True),
    # sha256 hex of the whole key; the key itself is never stored.
    Column("plan", String(64), nullable=False),
    Column("models", JSON(none_as_null=True), nullable=True),
    # Models this key may call; NULL = the plan's list.
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=True),
    Column("revoked_at", Double, nullable=True),
    # The key stops working at this time (now for `revoke`, the grace end for `rotate`).
    Column("rotated_to", Integer, nullable=True),
    Column("grace_until", Double, nullable=True),
    Column("account_id", Integer, nullable=True),
    # Root key of the rotation chain; NULL = this row is its own account. Only the
    # account row's bucket and counter are used.
    Column("rate_tokens", Double, nullable=False),
    Column("rate_updated", Double, nullable=False),
    Column("used_period", String(7), nullable=True),
    Column("used_units", BigInteger, nullable=False, default=0),
    # Billable units admitted in `used_period` (YYYY-MM): the quota counter, kept in
    # step with usage_events inside the same transactions.
)

usage_events = Table(
    "usage_events",
    metadata,
    Column("id", _BIG_ID, primary_key=True, autoincrement=True),
    Column("key_id", Integer, nullable=False),
    Column("model", String(200), nullable=False),
    Column("units", Integer, nullable=False),
    Column("status", Integer, nullable=False),
    # HTTP status: 200 when admitted, the final one after `complete`; >= 500 is not billed.
    Column("latency_ms", Double, nullable=True),
    Column("request_id", String(100), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("period", String(7), nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    Index("ix_usage_events_period_key", "period", "key_id"),
)

idempotency = Table(
    "idempotency",
    metadata,
    Column("id", _BIG_ID, primary_key=True, autoincrement=True),
    Column("key_id", Integer, nullable=False),
    # The account (root key) id, so a retry with the rotated key still replays.
    Column("idempotency_key", String(255), nullable=False),
    Column("request_hash", String(128), nullable=True),
    Column("event_id", BigInteger, nullable=True),
    Column("status", Integer, nullable=True),
    # NULL while the first request is in flight.
    Column("response_json", Text, nullable=True),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("key_id", "idempotency_key", name="uq_idempotency_key"),
)


class ServeStore:
    """The engine of the serving tables, created on first use (again in a forked child).

    home / url: as `foundry.db.database_url`. Safe to share between threads.
    """

    def __init__(self, *, home: Path | str | None = None, url: str | None = None) -> None:
        self.home = Path(home).expanduser().resolve() if home is not None else default_home()
        self.url = database_url(self.home, url)
        self._engine: Engine | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ServeStore(url={safe_url(self.url)!r})"

    @property
    def engine(self) -> Engine:
        engine = self._engine
        if engine is not None and self._pid == os.getpid():
            return engine
        with self._lock:
            if self._engine is not None and self._pid != os.getpid():
                # Connections must not cross a fork: drop the parent's without closing them.
                self._engine.dispose(close=False)
                self._engine = None
            if self._engine is None:
                self._engine = self._create_engine()
                self._pid = os.getpid()
            return self._engine

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that commits on exit (rolls back on an exception).

        SQLite: it starts with `BEGIN IMMEDIATE`, so it holds the database's one write lock
        from its first statement and transactions of every process run one after another.
        Other databases: lock the rows you read-then-write with `.with_for_update()`.
        """
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only connection (on SQLite a deferred transaction: no write lock)."""
        with self.engine.connect() as conn:
            conn.execution_options(sqlite_begin="DEFERRED")
            yield conn  # closing the connection ends (rolls back) its transaction

    def close(self) -> None:
        """Release connections (the store reconnects on next use)."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def _create_engine(self) -> Engine:
        try:
            engine = create_db_engine(
                self.url, sqlite_immediate=True, busy_timeout_s=BUSY_TIMEOUT_S
            )
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise ConfigError(
                f"cannot use database URL {safe_url(self.url)!r}: {exc}",
                hint="set FOUNDRY_DATABASE_URL to a SQLAlchemy URL such as "
                "postgresql+psycopg://user@host/db",
            ) from exc
        # Several workers starting together may all try to create the tables; a loser's
        # CREATE fails and its retry sees them.
        for attempt in range(3):
            try:
                metadata.create_all(engine)
                break
            except SQLAlchemyError as exc:
                if attempt == 2:
                    engine.dispose()
                    raise ConfigError(
                        f"cannot open the database {safe_url(self.url)!r}: {exc}"
                    ) from exc
        return engine
