"""The serving tables and the engine they live behind.

    api_keys       one row per key; a rotation chain shares the root key's row as its
                   account (rate bucket and quota counter live there)
    usage_events   one row per admitted request: a reservation (status RESERVED) until
                   its answer is written, then settled to the HTTP status; billing sums
                   the settled rows with status < 500
    idempotency    the stored answer of each (account, Idempotency-Key)
    serve_leases   one row per serving process (Gate): host, pid, heartbeat; the
                   reservations of a dead one are voided (foundry.serve.leases)

They sit in the registry's database (`foundry.db.database_url`: FOUNDRY_DATABASE_URL or
`<FOUNDRY_HOME>/foundry.db`). Times are epoch seconds (float, UTC), money is integer
cents, and the SQL is portable: SQLite takes its write lock with `BEGIN IMMEDIATE`,
PostgreSQL locks the key row with `SELECT ... FOR UPDATE` (see `ServeStore.write`).

Two ways in: `write()` / `read()` give SQLAlchemy connections (administration, billing);
`fast_write()` gives a raw DBAPI cursor inside one write transaction, for the gate's
per-request work, which runs statements compiled once per dialect (`ServeStore.sql`) and
so skips SQLAlchemy's per-statement execution machinery (~4x cheaper on SQLite).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

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
    text,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement

from foundry.db import database_url, default_home, open_engine, safe_url
from foundry.errors import ConfigError

# Seconds a request waits for another process's write lock. Admissions hold it for well
# under a millisecond, so reaching this means the database is stuck, not busy.
BUSY_TIMEOUT_S = 10.0
# Raw SQLite connections `fast_write` keeps checked out between transactions (one per
# thread that writes at the same time; the gate uses one thread on SQLite).
_IDLE_SQLITE_CONNECTIONS = 4

metadata = MetaData()

# SQLite autoincrements only an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT.
_BIG_ID = BigInteger().with_variant(Integer, "sqlite")

RESERVED = 600
"""usage_events.status of an admitted request whose answer is not written yet: its units
count against the quota (the account's counter) but are not billed. Not an HTTP status,
and >= 500, so "billable = status < 500" holds for every row."""
VOIDED = 601
"""usage_events.status of a reservation whose process died before settling it (see
foundry.serve.leases): never billed, its units given back to the quota."""

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # Text: encrypted when FOUNDRY_ENCRYPTION_KEY is set (foundry.crypto.encrypt_field).
    Column("name", Text, nullable=False),
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
    Column("tpm_tokens", Double, nullable=True),
    Column("tpm_updated", Double, nullable=True),
    # The account's tokens-per-minute bucket (language models); NULL = full. Added after
    # the first release: the baseline migration adds them to older databases.
)

usage_events = Table(
    "usage_events",
    metadata,
    Column("id", _BIG_ID, primary_key=True, autoincrement=True),
    Column("key_id", Integer, nullable=False),
    Column("model", String(200), nullable=False),
    Column("units", Integer, nullable=False),
    Column("status", Integer, nullable=False),
    # RESERVED when admitted, the HTTP status once the answer is written (settled),
    # VOIDED if its process died first. Billable: status < 500.
    Column("latency_ms", Double, nullable=True),
    Column("request_id", String(100), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("period", String(7), nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    Column("lease_id", BigInteger, nullable=True),
    # The serving process (serve_leases.id) holding the reservation. Added by migration
    # 0002; NULL on events written before it.
    Index("ix_usage_events_period_key", "period", "key_id"),
    # Only the open reservations (a few per process): the sweep of a dead process's
    # reservations reads this index; settling a request drops its entry.
    Index(
        "ix_usage_events_reserved",
        "lease_id",
        sqlite_where=text(f"status = {RESERVED}"),
        postgresql_where=text(f"status = {RESERVED}"),
    ),
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

serve_leases = Table(
    "serve_leases",
    metadata,
    Column("id", _BIG_ID, primary_key=True, autoincrement=True),
    Column("host", String(255), nullable=False),
    # Hostname, boot id and pid namespace: two rows with the same host can check each
    # other's pid (foundry.serve.leases.host_id).
    Column("pid", Integer, nullable=False),
    Column("pid_start", BigInteger, nullable=True),
    # The process's start time in clock ticks since boot (Linux /proc/PID/stat), so a
    # pid reused by another process is not taken for the lease's.
    Column("created_at", Double, nullable=False),
    Column("heartbeat_at", Double, nullable=False),
    # Epoch seconds by the database's clock (one clock for every host).
    Column("models", JSON(none_as_null=True), nullable=True),
    # The pinned refs (`adult:3`) this process serves: `foundry models delete` refuses
    # them while the lease lives. Added by migration 0004.
    # Ids never reused (SQLite AUTOINCREMENT): a reservation made under a lease swept as
    # dead must never look like a newer process's.
    sqlite_autoincrement=True,
)


class CompiledSql:
    """A Core statement compiled once for one dialect and run on a raw DBAPI cursor.

    The SQL text and parameter order come from SQLAlchemy's compiler, so each dialect gets
    its own SQL (`?` and no `FOR UPDATE` on SQLite; `%(name)s` and `FOR UPDATE` on
    PostgreSQL) from one definition, and parameters go through the same type conversions
    (bind processors) SQLAlchemy would apply. Rows come back as the driver's tuples.
    """

    __slots__ = ("text", "names", "defaults", "processors")

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.text: str = compiled.string
        self.names: tuple[str, ...] | None = (
            tuple(compiled.positiontup or ()) if compiled.positional else None
        )
        # Values the statement carries itself, like the 500 of `status < 500`.
        self.defaults = {
            name: value
            for name, value in compiled.params.items()
            if not compiled.binds[name].required
        }
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor

    def __repr__(self) -> str:
        return f"CompiledSql({self.text!r})"

    def params(self, values: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        """`values` (by bind name) in the form the driver's paramstyle takes."""
        if self.defaults:
            values = {**self.defaults, **values}
        processors = self.processors
        if self.names is None:
            if not processors:
                return values
            return {
                name: processors[name](value) if name in processors else value
                for name, value in values.items()
            }
        if not processors:
            return tuple([values[name] for name in self.names])
        return tuple(
            [
                processors[name](values[name]) if name in processors else values[name]
                for name in self.names
            ]
        )

    def execute(self, cursor: Any, values: Mapping[str, Any]) -> Any:
        """Run on `cursor`; returns the cursor (fetchone / rowcount / lastrowid)."""
        cursor.execute(self.text, self.params(values))
        return cursor

    def executemany(self, cursor: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        cursor.executemany(self.text, [self.params(values) for values in rows])


class StoreBusy(Exception):
    """`fast_write(wait=False)`: another connection holds the write lock; nothing was done."""


class FastWrite:
    """`with store.fast_write() as cursor:` one write transaction on a raw DBAPI cursor,
    committed on exit (rolled back on an exception). SQLite: it starts with `BEGIN
    IMMEDIATE`, exactly like `ServeStore.write`; PostgreSQL: the driver's implicit BEGIN,
    lock rows with `FOR UPDATE` (statements compiled by `ServeStore.sql`)."""

    __slots__ = ("_store", "_fairy", "_wait")

    def __init__(self, store: ServeStore, wait: bool = True) -> None:
        self._store = store
        self._fairy: Any = None
        self._wait = wait

    def __enter__(self) -> Any:
        store, wait = self._store, self._wait
        fairy = store._checkout(wait)
        try:
            cursor = fairy.dbapi_connection.cursor()
            if store._begin is not None:
                cursor.execute(store._begin)
        except store._dbapi_error as exc:
            if not wait and _is_busy(exc):
                store._checkin(fairy, wait)  # a busy BEGIN leaves the connection sound
                raise StoreBusy(str(exc)) from None
            store._discard(fairy)
            raise
        except BaseException:
            store._discard(fairy)
            raise
        self._fairy = fairy
        return cursor

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        store, fairy, wait = self._store, self._fairy, self._wait
        self._fairy = None
        if exc_type is None:
            try:
                fairy.dbapi_connection.commit()
            except BaseException:
                store._discard(fairy)
                raise
            store._checkin(fairy, wait)
            return
        try:
            fairy.dbapi_connection.rollback()
        except Exception:
            store._discard(fairy)
            return  # the original exception goes on
        if isinstance(exc, store._dbapi_error):
            store._discard(fairy)  # a database error: don't trust the connection
        else:
            store._checkin(fairy, wait)  # a refusal (ApiError) rolled back cleanly


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
        # fast_write: raw connections kept checked out between transactions (SQLite only;
        # PostgreSQL connections go back to the pool, which pings them on checkout).
        self._idle: list[Any] = []
        self._idle_nowait: list[Any] = []
        """Connections of `fast_write(wait=False)`: busy timeout 0, no auto-checkpoint."""
        self._max_idle = 0
        self._begin: str | None = None
        self._dbapi_error: type[BaseException] = Exception
        self.returning_ids = False
        """New rows' ids come from INSERT ... RETURNING (PostgreSQL), else from the cursor's
        lastrowid (SQLite: no second step of the statement, each of which lets go of the
        GIL; and any SQLite, RETURNING or not)."""
        self._compiled: dict[int, tuple[ClauseElement, CompiledSql]] = {}

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
                self._idle, self._idle_nowait = [], []
                self._engine.dispose(close=False)
                self._engine = None
            if self._engine is None:
                self._engine = self._create_engine()
                sqlite = self._engine.dialect.name == "sqlite"
                self._max_idle = _IDLE_SQLITE_CONNECTIONS if sqlite else 0
                self._begin = "BEGIN IMMEDIATE" if sqlite else None
                self._dbapi_error = self._engine.dialect.loaded_dbapi.Error
                self.returning_ids = not sqlite and self._engine.dialect.insert_returning
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

    def fast_write(self, *, wait: bool = True) -> FastWrite:
        """`write()` for the per-request path: the same transaction (`BEGIN IMMEDIATE` on
        SQLite) on a raw DBAPI cursor; run statements with `self.sql(stmt).execute(cursor,
        {...})`. On SQLite the connection stays checked out for the next transaction.

        wait=False (SQLite only), for an event loop that must not block: raise StoreBusy
        at once when another connection holds the write lock, instead of waiting up to
        BUSY_TIMEOUT_S; and never checkpoint the WAL on commit (a checkpoint copies pages
        into the database file and syncs it), so call `checkpoint()` from a thread."""
        if not wait and self._begin is None and not self.is_sqlite:
            raise ValueError("fast_write(wait=False) needs SQLite")
        return FastWrite(self, wait)

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database file, without waiting for readers or
        writers (SQLite `wal_checkpoint(PASSIVE)`; a no-op elsewhere). For the writes of
        `fast_write(wait=False)`, which never checkpoint themselves."""
        if not self.is_sqlite:
            return
        # Raw: a checkpoint cannot run inside a transaction, which SQLAlchemy would begin.
        fairy = self._checkout()
        try:
            cursor = fairy.dbapi_connection.cursor()
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            cursor.close()
        except BaseException:
            self._discard(fairy)
            raise
        self._checkin(fairy)

    def sql(self, statement: ClauseElement) -> CompiledSql:
        """`statement` compiled for this database, once (a module-level constant)."""
        entry = self._compiled.get(id(statement))
        if entry is not None and entry[0] is statement:
            return entry[1]
        compiled = CompiledSql(statement, self.dialect)
        self._compiled[id(statement)] = (statement, compiled)
        return compiled

    @property
    def dialect(self) -> Dialect:
        """The engine's dialect, initialized (creating the tables connected once)."""
        return self.engine.dialect

    def close(self) -> None:
        """Release connections (the store reconnects on next use)."""
        with self._lock:
            idle, self._idle = self._idle, []
            idle += self._idle_nowait
            self._idle_nowait = []
            if self._engine is not None:
                if self._pid == os.getpid():
                    for fairy in idle:
                        fairy.close()
                self._engine.dispose()
                self._engine = None

    # -- fast_write's connections ------------------------------------------------------

    def _checkout(self, wait: bool = True) -> Any:
        engine = self.engine  # (a forked child drops its parent's connections here)
        idle = self._idle if wait else self._idle_nowait
        if idle:
            try:
                return idle.pop()
            except IndexError:  # another thread took the last one
                pass
        fairy = engine.raw_connection()
        if not wait:
            cursor = fairy.dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout = 0")
            cursor.execute("PRAGMA wal_autocheckpoint = 0")
            cursor.close()
        return fairy

    def _checkin(self, fairy: Any, wait: bool = True) -> None:
        idle = self._idle if wait else self._idle_nowait
        if len(idle) < self._max_idle and self._pid == os.getpid():
            idle.append(fairy)
        else:
            if not wait:  # back to the pool as the engine made it
                with suppress(Exception):
                    cursor = fairy.dbapi_connection.cursor()
                    cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                    cursor.execute("PRAGMA wal_autocheckpoint = 1000")
                    cursor.close()
            fairy.close()

    def _discard(self, fairy: Any) -> None:
        with suppress(Exception):  # closing a broken connection may fail too
            fairy.invalidate()

    def _create_engine(self) -> Engine:
        # The tables are created, or an older database's migrated, once across workers
        # starting together (foundry.migrations).
        return open_engine(
            self.url,
            error=ConfigError,
            sqlite_immediate=True,
            busy_timeout_s=BUSY_TIMEOUT_S,
        )


def _is_busy(exc: BaseException) -> bool:
    """SQLite's "database is locked" (SQLITE_BUSY / SQLITE_LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)
    return "locked" in str(exc) or "busy" in str(exc)
