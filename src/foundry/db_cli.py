"""`foundry db ...`: the schema of foundry's database.

    foundry db current [--check]    the revision the database is at, and the newest
    foundry db upgrade              bring it to the newest (creating the tables if needed)

The database is the one every command uses: FOUNDRY_DATABASE_URL, else
`<FOUNDRY_HOME>/foundry.db` (`--url` for another). The stores upgrade on first use, so
`upgrade` is for deployments that migrate as a step of their own before starting servers.
Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

db_app = typer.Typer(
    help="The database's schema: current revision, upgrade (migrations).",
    no_args_is_help=True,
)

_URL_HELP = "Database URL (default: FOUNDRY_DATABASE_URL, else <FOUNDRY_HOME>/foundry.db)."


@contextmanager
def _database_errors(url: str) -> Iterator[None]:
    """A bad URL, a missing driver or an unreachable server as one ConfigError naming
    FOUNDRY_DATABASE_URL."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    from foundry.db import reason, safe_url, url_error
    from foundry.errors import ConfigError

    try:
        yield
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise url_error(url, exc, error=ConfigError) from exc
    except SQLAlchemyError as exc:
        raise ConfigError(
            f"cannot open the database {safe_url(url)!r}: {reason(exc)}",
            hint="check that the server is running and FOUNDRY_DATABASE_URL is right",
        ) from exc


@db_app.command("current")
def current(
    url: str | None = typer.Option(None, "--url", help=_URL_HELP),
    check: bool = typer.Option(
        False, "--check", help="Exit with status 1 unless the database is at the newest revision."
    ),
) -> None:
    """Show the revision the database is at and the newest one this foundry knows."""
    from sqlalchemy import inspect

    from foundry import migrations
    from foundry.db import create_db_engine, database_url, safe_url, sqlite_file

    url = database_url(url=url)
    typer.echo(f"database  {safe_url(url)}")
    with _database_errors(url):
        path = sqlite_file(url)
        if path is not None and not path.exists():
            at, tables = None, False  # reading must not create the file
        else:
            engine = create_db_engine(url)
            try:
                with engine.connect() as conn:
                    at = migrations.read_revision(conn)
                    tables = bool(inspect(conn).get_table_names())
            finally:
                engine.dispose()
    if at == migrations.HEAD:
        typer.echo(f"revision  {at} (head)")
        return
    if at is not None:
        state = f"{at}; the newest is {migrations.HEAD}"
    elif tables:
        state = "none: tables from before migrations, which an upgrade keeps"
    else:
        state = "none: no foundry tables yet"
    typer.echo(f"revision  {state}; run `foundry db upgrade`")
    if check:
        raise typer.Exit(1)


@db_app.command("upgrade")
def upgrade(url: str | None = typer.Option(None, "--url", help=_URL_HELP)) -> None:
    """Bring the database to the newest revision (safe while servers run: one process
    upgrades, the others wait for it)."""
    from foundry import migrations
    from foundry.db import database_url, safe_url

    url = database_url(url=url)
    with _database_errors(url):
        before, after = migrations.upgrade(url)
    if before == after:
        typer.echo(f"{safe_url(url)} is at {after} (head): nothing to do")
    else:
        typer.echo(f"upgraded {safe_url(url)} from {before or 'no revision'} to {after}")
