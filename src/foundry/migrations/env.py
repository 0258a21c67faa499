"""Alembic's entry point for foundry's migrations (see foundry/migrations/__init__.py).

It migrates the connection foundry hands over in ``config.attributes["connection"]``,
inside that connection's transaction (which holds the migration lock); there is no
alembic.ini and no URL of its own: run `foundry db upgrade`.
"""

from __future__ import annotations

from alembic import context

from foundry.migrations import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "foundry's migrations run through foundry: `foundry db upgrade` (or "
        "foundry.migrations.upgrade(url))"
    )
context.configure(
    connection=connection,
    version_table=VERSION_TABLE,
)
with context.begin_transaction():
    context.run_migrations()
