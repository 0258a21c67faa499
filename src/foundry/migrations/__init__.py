"""Schema migrations of foundry's database (Alembic), run from code: no alembic.ini.

    ensure_schema(engine)     the stores call it when they open the database: at HEAD it
                              costs one SELECT and never imports Alembic
    upgrade(url)              `foundry db upgrade`: (revision before, revision after)
    read_revision(conn)       `foundry db current` (with whether tables exist)

One database holds the registry index (model_versions) and the serving tables (api_keys,
usage_events, idempotency); one chain of revisions in versions/ creates and changes them
all, on SQLite and PostgreSQL alike. The revision a database is at lives in the table
VERSION_TABLE, not Alembic's default `alembic_version`: the database may be shared with
another Alembic-managed application (Optuna's RDB storage keeps its own `alembic_version`).

Upgrading holds a lock, so processes that start together (uvicorn workers, serving
machines) upgrade once and the others wait, then find the database at HEAD: SQLite's write
lock (`BEGIN IMMEDIATE`), PostgreSQL's transaction-level advisory lock MIGRATION_LOCK_ID.
Both databases run DDL inside the transaction, so a failed upgrade changes nothing.

A database created before migrations existed (tables, no version table) is brought to the
baseline in place, not re-created (see versions/0001_baseline.py).

Adding a revision: write versions/NNNN_what.py (copy the baseline's header: `revision`,
`down_revision` = the previous one), set HEAD below to its id, and add the columns to the
store's table definitions; tests/test_migrations.py checks that the migrated schema equals
the tables the code declares, on both databases.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

HEAD = "0005_encrypted_key_names"
"""The newest revision in versions/ (a test keeps the two in step)."""
VERSION_TABLE = "foundry_alembic_version"
MIGRATION_LOCK_ID = 0x466F756E64727900
"""pg_advisory_xact_lock key of migrations (ASCII "Foundry\\0"); any fixed 64-bit number
other applications on the database do not use."""
SCRIPT_LOCATION = Path(__file__).resolve().parent


def read_revision(conn: Connection) -> str | None:
    """The revision the database is at; None when it has no version table (empty, or
    created before migrations existed). Never fails on a missing table."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def ensure_schema(engine: Engine) -> None:
    """Bring the database to HEAD unless it is there already. Raises SQLAlchemy errors."""
    with engine.connect() as conn:
        # Deferred: on an engine whose transactions BEGIN IMMEDIATE (ServeStore), a read
        # must not take SQLite's write lock.
        conn.execution_options(sqlite_begin="DEFERRED")
        try:
            at = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        except SQLAlchemyError:  # no version table yet (the slow path reads it again, locked)
            at = None
    if at != HEAD:
        upgrade_engine(engine)


def upgrade_engine(engine: Engine) -> tuple[str | None, str]:
    """Upgrade to HEAD under the migration lock: (revision before, HEAD)."""
    with _locked(engine) as conn:
        before = read_revision(conn)
        if before != HEAD:
            _run_alembic(conn)
    return before, HEAD


def upgrade(url: str) -> tuple[str | None, str]:
    """`foundry db upgrade`: bring the database at ``url`` to HEAD."""
    from foundry.db import create_db_engine

    engine = create_db_engine(url)
    try:
        return upgrade_engine(engine)
    finally:
        engine.dispose()


def alembic_config(connection: Connection | None = None):  # -> alembic.config.Config
    """An Alembic Config for these migrations, built in code; ``connection`` is the one
    env.py migrates (Alembic's own commands, e.g. `command.history`, need none)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("version_table", VERSION_TABLE)
    config.attributes["connection"] = connection
    return config


def _run_alembic(conn: Connection) -> None:
    from alembic import command

    command.upgrade(alembic_config(conn), "head")


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """One transaction holding the migration lock, committed on exit."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            yield conn
        return
    if dialect == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        # An engine of our own whose transactions start with BEGIN IMMEDIATE (the write
        # lock, taken up front) and whose driver leaves DDL inside that transaction.
        from foundry.db import create_db_engine

        locking = create_db_engine(
            engine.url.render_as_string(hide_password=False), sqlite_immediate=True
        )
        try:
            with locking.begin() as conn:
                yield conn
        finally:
            locking.dispose()
        return
    with engine.begin() as conn:  # another database, or a private in-memory SQLite
        yield conn
