"""Usage reservations: a lease per serving process, and the lease of each reservation.

Admission now writes a usage event as a reservation (status 600, not billed) that the
answer settles; the reservations of a process that died are voided by the next one
(foundry.serve.leases). This adds:
- `serve_leases`: one row per serving process (host, pid, its start time, heartbeat);
- `usage_events.lease_id` (nullable: older events have none; they are all settled);
- `ix_usage_events_reserved`: an index of the open reservations only (a partial index,
  `WHERE status = 600`, on SQLite and PostgreSQL alike), which the sweep reads.
No existing row changes: every event written before is settled already (its status is
the HTTP one), so what billing sums is the same before and after.

Revision ID: 0003_usage_reservations
Revises: 0002_package_checksums
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_usage_reservations"
down_revision = "0002_package_checksums"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_RESERVED = sa.text("status = 600")  # foundry.serve.store.RESERVED, frozen here


def upgrade() -> None:
    # Only what is missing (as 0002 does): a database made by a store's create_all at
    # this code's table definitions, before migrations existed, has them already.
    inspector = sa.inspect(op.get_bind())
    if "serve_leases" not in inspector.get_table_names():
        op.create_table(
            "serve_leases",
            sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("pid", sa.Integer(), nullable=False),
            sa.Column("pid_start", sa.BigInteger(), nullable=True),
            sa.Column("created_at", sa.Double(), nullable=False),
            sa.Column("heartbeat_at", sa.Double(), nullable=False),
            sqlite_autoincrement=True,  # ids never reused (see foundry.serve.store)
        )
    if "lease_id" not in {c["name"] for c in inspector.get_columns("usage_events")}:
        op.add_column("usage_events", sa.Column("lease_id", sa.BigInteger(), nullable=True))
    if "ix_usage_events_reserved" not in {i["name"] for i in inspector.get_indexes("usage_events")}:
        op.create_index(
            "ix_usage_events_reserved",
            "usage_events",
            ["lease_id"],
            sqlite_where=_RESERVED,
            postgresql_where=_RESERVED,
        )


def downgrade() -> None:
    op.drop_index("ix_usage_events_reserved", table_name="usage_events")
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("lease_id")
    op.drop_table("serve_leases")
