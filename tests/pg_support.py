"""A real PostgreSQL for the tests, and a fresh database on it per test.

    FOUNDRY_TEST_POSTGRES_URL   a server to use (CI sets it: `.ci/run` starts one), as a
                                SQLAlchemy URL whose user may CREATE / DROP DATABASE
    otherwise                   a throwaway server: initdb into a temporary folder, pg_ctl
                                start on a free 127.0.0.1 port, stopped at session end
                                (run as the `postgres` user when we are root: PostgreSQL
                                refuses to run as root)
    FOUNDRY_REQUIRE_POSTGRES=1  no server is a failure, not a skip (CI)

A session creates one database and gives each test a fresh schema in it (`create_schema`):
to the code under test it is an empty database, and it costs a millisecond where CREATE
DATABASE costs half a second. The throwaway server trades durability for speed (fsync
off). Imported by tests/conftest.py and by benchmarks/serve_postgres.py.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

URL_ENV = "FOUNDRY_TEST_POSTGRES_URL"
REQUIRE_ENV = "FOUNDRY_REQUIRE_POSTGRES"
# Throwaway servers run with these: no fsync (a crash loses a test database, nothing
# else), and enough connections for several serving processes plus their pools.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PostgresUnavailable(Exception):
    """No FOUNDRY_TEST_POSTGRES_URL and no PostgreSQL binaries to start one."""


def pg_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's versioned folder."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(versions[0]).parent if versions else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def throwaway_server(*, durable: bool = False) -> Iterator[str]:
    """Start a PostgreSQL cluster in a temporary folder; yields its admin URL
    (``postgresql+psycopg://postgres@127.0.0.1:<port>/postgres``); stops and deletes it
    on exit. durable=True keeps PostgreSQL's default fsync settings (benchmarks)."""
    bindir = pg_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            f"no PostgreSQL binaries (initdb, pg_ctl) on this machine and {URL_ENV} is unset"
        )
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root and no `runuser` to start PostgreSQL")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="foundry-pg-"))
    data = root / "data"
    if as_user:
        shutil.chown(root, user="postgres")
    port = free_port()
    options = [f"-p {port}", "-c listen_addresses=127.0.0.1", f"-k {root}",
               "-c max_connections=200"]
    if not durable:
        options += [f"-c {setting}" for setting in FAST_SETTINGS]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
    stop = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
    try:
        _run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
              "--auth=trust", "-E", "UTF8", "--no-sync"], quiet)
        _run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"),
              "-o", " ".join(options), "-w", "-t", "60", "start"], quiet)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    # pg_ctl detaches the server: if this process is killed (a test run stopped by a
    # timeout), a watchdog of its own session stops the server and deletes its files.
    watchdog = subprocess.Popen(
        ["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
         f"{shlex.join(stop)}; rm -rf {shlex.quote(str(root))}"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        watchdog.kill()
        watchdog.wait()
        subprocess.run(stop, check=False, **quiet)
        shutil.rmtree(root, ignore_errors=True)


def _run(command: list[str], kwargs: dict) -> None:
    result = subprocess.run(command, check=False, **kwargs)
    if result.returncode != 0:
        raise PostgresUnavailable(f"{' '.join(command[:4])} failed: {result.stderr.strip()}")


def _conninfo(url: str) -> str:
    """A SQLAlchemy URL as a libpq URI for psycopg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(admin_url: str) -> str:
    """A new empty database on the server of ``admin_url``; its SQLAlchemy URL."""
    import psycopg

    name = f"foundry_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    """Drop the database of ``url``, closing whatever connections are still open to it."""
    import psycopg

    name = make_url(url).database
    with psycopg.connect(_conninfo(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_schema(database_url: str) -> str:
    """A new empty schema in the database of ``database_url``: the URL of a connection
    that sees only it (``search_path``), as if it were a fresh database. CREATE DATABASE
    takes ~0.5 s here, CREATE SCHEMA a millisecond; dropping it drops all it holds."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(database_url), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    # application_name marks the connections of this schema, to close them in drop_schema.
    query = {"options": f"-csearch_path={name}", "application_name": name}
    return make_url(database_url).update_query_dict(query).render_as_string(
        hide_password=False
    )


def drop_schema(url: str) -> None:
    """Drop the schema of a `create_schema` URL, closing connections still open to it (a
    test's leftover transaction would otherwise hold a lock the DROP waits for)."""
    import psycopg

    parsed = make_url(url)
    name = parsed.query["application_name"]
    plain = parsed.difference_update_query(["options", "application_name"])
    with psycopg.connect(_conninfo(plain.render_as_string(hide_password=False)),
                         autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@contextlib.contextmanager
def postgres_admin_url() -> Iterator[str]:
    """FOUNDRY_TEST_POSTGRES_URL, else a throwaway server for as long as the block runs."""
    url = os.environ.get(URL_ENV)
    if url:
        yield url
        return
    with throwaway_server() as started:
        yield started
