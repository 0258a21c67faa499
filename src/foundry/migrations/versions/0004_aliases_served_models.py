"""Model aliases, and which versions each serving process serves.

- `model_aliases`: `name:alias` → one version (`foundry models alias`), one row per alias
  so that moving it is a single UPDATE;
- `serve_leases.models`: the pinned references (`adult:3`) a serving process loaded, so
  `foundry models delete` refuses a version a live server holds (nullable: a process
  started before this revision records none until it restarts).

Revision ID: 0004_aliases_served_models
Revises: 0003_usage_reservations
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_aliases_served_models"
down_revision = "0003_usage_reservations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Only what is missing (as 0002 and 0003 do).
    inspector = sa.inspect(op.get_bind())
    if "model_aliases" not in inspector.get_table_names():
        op.create_table(
            "model_aliases",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("name", sa.String(128), nullable=False),
            sa.Column("alias", sa.String(64), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.UniqueConstraint("name", "alias", name="uq_model_aliases_name_alias"),
        )
    if "models" not in {c["name"] for c in inspector.get_columns("serve_leases")}:
        op.add_column("serve_leases", sa.Column("models", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("serve_leases") as batch:
        batch.drop_column("models")
    op.drop_table("model_aliases")
