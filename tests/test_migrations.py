"""Schema migrations (foundry.migrations, `foundry db`): on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from sqlalchemy import inspect, text
from tests import pg_support
from typer.testing import CliRunner

from foundry import migrations
from foundry.db import create_db_engine, database_url
from foundry.db_cli import db_app
from foundry.errors import ConfigError, ModelError
from foundry.serve.store import ServeStore
from foundry.serve.store import metadata as serve_metadata

pytestmark = pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL (conftest.py)

TABLES = {"model_versions", "api_keys", "usage_events", "idempotency", "serve_leases"}


def _registry_metadata():
    from foundry.registry.store import _Base

    return _Base.metadata


def _schema(engine) -> dict:
    """Everything the database says about foundry's tables, comparable across databases of
    one kind: columns (type, nullability), primary keys, indexes, unique constraints."""
    found = {}
    with engine.connect() as conn:
        inspector = inspect(conn)
        for table in sorted(TABLES):
            found[table] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"])
                    for c in inspector.get_columns(table)
                ],
                "pk": inspector.get_pk_constraint(table)["constrained_columns"],
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in inspector.get_indexes(table)
                ),
                "unique": sorted(
                    tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)
                ),
            }
    return found


@pytest.fixture
def other_url(request, db_backend, tmp_path):
    """A second empty database of the same kind."""
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    url = pg_support.create_schema(request.getfixturevalue("postgres_database"))
    yield url
    pg_support.drop_schema(url)


@pytest.fixture
def engine(foundry_home):
    foundry_home.mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(database_url())
    yield engine
    engine.dispose()


def test_head_is_the_newest_revision_in_versions():
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(migrations.alembic_config())
    assert scripts.get_heads() == [migrations.HEAD]


def test_the_migrated_schema_is_the_one_the_code_declares(engine, other_url):
    migrations.ensure_schema(engine)
    with engine.connect() as conn:
        assert migrations.read_revision(conn) == migrations.HEAD
        assert set(inspect(conn).get_table_names()) >= TABLES
    declared = create_db_engine(other_url)
    try:  # what `create_all` of the stores' table definitions makes
        _registry_metadata().create_all(declared)
        serve_metadata.create_all(declared)
        assert _schema(engine) == _schema(declared)
    finally:
        declared.dispose()


def test_alembic_sees_no_difference_between_migrations_and_models(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    migrations.ensure_schema(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": migrations.VERSION_TABLE}
        )
        for metadata in (_registry_metadata(), serve_metadata):
            ours = set(metadata.tables)
            # The other store's tables (and their indexes) are not in this metadata.
            diff = [
                d for d in compare_metadata(context, metadata)
                if not (d[0] == "remove_table" and d[1].name not in ours)
                and not (d[0] == "remove_index" and d[1].table.name not in ours)
            ]
            assert diff == []


def test_a_database_from_before_migrations_is_stamped_not_recreated(engine):
    # As the stores' create_all made it, and api_keys as the first release made it.
    _registry_metadata().create_all(engine)
    serve_metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE api_keys DROP COLUMN tpm_tokens"))
        conn.execute(text("ALTER TABLE api_keys DROP COLUMN tpm_updated"))
        # Usage reservations (revision 0002) came later still.
        conn.execute(text("DROP TABLE serve_leases"))
        conn.execute(text("DROP INDEX ix_usage_events_reserved"))
        conn.execute(text("ALTER TABLE usage_events DROP COLUMN lease_id"))
        conn.execute(text(
            "INSERT INTO usage_events (key_id, model, units, status, request_id, created_at, "
            "period) VALUES (1, 'm', 3, 200, 'old', 0, '2026-11')"
        ))
    migrations.ensure_schema(engine)
    with engine.connect() as conn:
        assert migrations.read_revision(conn) == migrations.HEAD
        assert conn.execute(text("SELECT request_id FROM usage_events")).scalars().all() == [
            "old"
        ]
        columns = {c["name"] for c in inspect(conn).get_columns("api_keys")}
    assert {"tpm_tokens", "tpm_updated"} <= columns


def test_processes_starting_together_upgrade_once(foundry_home):
    foundry_home.mkdir(parents=True, exist_ok=True)
    url = database_url()
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def start() -> None:
        engine = create_db_engine(url)
        try:
            barrier.wait()
            migrations.ensure_schema(engine)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(f"SELECT version_num FROM {migrations.VERSION_TABLE}"))
            assert rows.scalars().all() == [migrations.HEAD]
    finally:
        engine.dispose()


def test_at_head_opening_the_store_does_not_import_alembic(foundry_home):
    ServeStore().engine  # noqa: B018  (creates and migrates)
    code = (
        "import sys; from foundry.serve.store import ServeStore; "
        "ServeStore().engine; print('alembic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, "FOUNDRY_HOME": str(foundry_home)},
    )
    assert out.stdout.strip() == "False"


def test_db_current_and_upgrade_commands(foundry_home):
    runner = CliRunner()
    before = runner.invoke(db_app, ["current", "--check"])
    assert before.exit_code == 1, before.output
    assert "no foundry tables yet" in before.output and "foundry db upgrade" in before.output
    assert not (foundry_home / "foundry.db").exists()  # looking does not create it
    upgraded = runner.invoke(db_app, ["upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert f"from no revision to {migrations.HEAD}" in upgraded.output
    again = runner.invoke(db_app, ["upgrade"])
    assert "nothing to do" in again.output
    after = runner.invoke(db_app, ["current", "--check"])
    assert after.exit_code == 0 and f"{migrations.HEAD} (head)" in after.output


@pytest.mark.sqlite_only  # the URLs are the test's own
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("nonsense", "Could not parse"),
        ("mysql://u:secret@localhost/x", "driver is not installed"),
        ("postgresql+psycopg2://u:secret@localhost/x", "pip install 'foundry-mlops[postgres]'"),
    ],
)
def test_a_bad_url_or_missing_driver_names_the_setting(url, says, monkeypatch):
    monkeypatch.setenv("FOUNDRY_DATABASE_URL", url)
    result = CliRunner().invoke(db_app, ["upgrade"])
    assert isinstance(result.exception, ConfigError)
    message = str(result.exception)
    assert says in message and "FOUNDRY_DATABASE_URL" in message and "secret" not in message
    with pytest.raises(ConfigError, match="FOUNDRY_DATABASE_URL"):
        ServeStore().engine  # noqa: B018
    from foundry.registry import Registry

    with pytest.raises(ModelError, match="FOUNDRY_DATABASE_URL"):
        Registry().list_models()


@pytest.mark.sqlite_only  # the URL is the test's own
def test_an_unreachable_server_is_a_clear_error(monkeypatch):
    port = pg_support.free_port()  # nothing listens there
    monkeypatch.setenv("FOUNDRY_DATABASE_URL", f"postgresql://u:secret@127.0.0.1:{port}/x")
    with pytest.raises(ConfigError, match="cannot open the database") as exc:
        ServeStore().engine  # noqa: B018
    assert "FOUNDRY_DATABASE_URL" in str(exc.value) and "secret" not in str(exc.value)
