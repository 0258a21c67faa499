"""Shared fixtures: every test gets its own FOUNDRY_HOME so registries never leak.

Storage tests run on both databases: a module that says
``pytestmark = pytest.mark.usefixtures("db_backend")`` runs each test twice, on SQLite
(`[sqlite]`) and on PostgreSQL (`[postgresql]`: FOUNDRY_DATABASE_URL set to a fresh,
empty schema; see tests/pg_support.py for where the server comes from). A test marked
``@pytest.mark.sqlite_only`` (it opens the SQLite file itself) runs on SQLite alone.

Object-storage tests take ``s3_bucket``: a fresh bucket on a real S3-compatible server
(moto; tests/s3_support.py says where it comes from), with the environment pointing at it.
"""

from __future__ import annotations

import os

import pytest
from tests import pg_support, s3_support


@pytest.fixture(autouse=True)
def foundry_home(tmp_path, monkeypatch):
    home = tmp_path / "foundry-home"
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    monkeypatch.delenv("FOUNDRY_DATABASE_URL", raising=False)
    # A developer's shared artifact store must not receive the tests' models.
    monkeypatch.delenv("FOUNDRY_ARTIFACTS", raising=False)
    return home


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "sqlite_only: a storage test that needs the SQLite file (not parametrized)"
    )


def pytest_generate_tests(metafunc):
    if "db_backend" in metafunc.fixturenames:
        sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
        backends = ["sqlite"] if sqlite_only else ["sqlite", "postgresql"]
        metafunc.parametrize("db_backend", backends, indirect=True)


@pytest.fixture(scope="session")
def postgres_server():
    """Admin URL of a PostgreSQL server for this session (FOUNDRY_TEST_POSTGRES_URL, else
    a throwaway one); skips, or fails under FOUNDRY_REQUIRE_POSTGRES=1, without one."""
    try:
        with pg_support.postgres_admin_url() as url:
            yield url
    except pg_support.PostgresUnavailable as exc:
        if os.environ.get(pg_support.REQUIRE_ENV) == "1":
            pytest.fail(f"{pg_support.REQUIRE_ENV}=1 and no PostgreSQL: {exc}")
        pytest.skip(f"PostgreSQL tests need a server: {exc}")


@pytest.fixture(scope="session")
def postgres_database(postgres_server):
    """A database of this session's own on the server; dropped at the end."""
    url = pg_support.create_database(postgres_server)
    yield url
    pg_support.drop_database(postgres_server, url)


@pytest.fixture
def postgres_url(postgres_database):
    """A URL that sees a fresh, empty PostgreSQL schema (tests/pg_support.py) of its own,
    as a new database would look; dropped after the test."""
    url = pg_support.create_schema(postgres_database)
    yield url
    pg_support.drop_schema(url)


@pytest.fixture
def db_backend(request, foundry_home, monkeypatch):
    """"sqlite" (the default `<FOUNDRY_HOME>/foundry.db`) or "postgresql" (a fresh database
    in FOUNDRY_DATABASE_URL, which child processes inherit)."""
    if request.param == "postgresql":
        monkeypatch.setenv("FOUNDRY_DATABASE_URL", request.getfixturevalue("postgres_url"))
    return request.param


@pytest.fixture(scope="session")
def s3_server():
    """URL of an S3-compatible server for this session (FOUNDRY_TEST_S3_URL, else a moto
    server started here); a failure, never a skip, without one."""
    with s3_support.s3_endpoint() as url:
        yield url


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """``s3://<fresh bucket>``, with credentials and FOUNDRY_S3_ENDPOINT_URL set for it
    (child processes inherit them)."""
    for name, value in s3_support.environment(s3_server).items():
        monkeypatch.setenv(name, value)
    return s3_support.create_bucket()
