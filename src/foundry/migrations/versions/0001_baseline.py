"""Baseline: the registry index and the serving tables as foundry 0.1 created them.

A database made by foundry before migrations existed (its tables there, no version table)
is brought to this revision in place: a table that exists is left as it is, and the
nullable columns added to api_keys after the first release (tpm_tokens, tpm_updated) are
added where missing. Nothing is dropped or re-created.

Revision ID: 0001_baseline
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

# SQLite autoincrements only an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT (BIGSERIAL).
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "model_versions" not in present:
        op.create_table(
            "model_versions",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("name", sa.String(128), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("path", sa.String(512), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("parent", sa.String(200), nullable=True),
            sa.Column("task", sa.String(32), nullable=True),
            sa.Column("metrics", sa.JSON(), nullable=False),
            sa.Column("fingerprint", sa.String(128), nullable=True),
            sa.Column("description", sa.Text(), nullable=False),
            sa.Column("tags", sa.JSON(), nullable=False),
            sa.Column("size_bytes", sa.BigInteger(), nullable=False),
            sa.UniqueConstraint("name", "version", name="uq_model_versions_name_version"),
        )
    if "api_keys" not in present:
        op.create_table(
            "api_keys",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("prefix", sa.String(16), nullable=False),
            sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
            sa.Column("plan", sa.String(64), nullable=False),
            sa.Column("models", sa.JSON(none_as_null=True), nullable=True),
            sa.Column("created_at", sa.Double(), nullable=False),
            sa.Column("expires_at", sa.Double(), nullable=True),
            sa.Column("revoked_at", sa.Double(), nullable=True),
            sa.Column("rotated_to", sa.Integer(), nullable=True),
            sa.Column("grace_until", sa.Double(), nullable=True),
            sa.Column("account_id", sa.Integer(), nullable=True),
            sa.Column("rate_tokens", sa.Double(), nullable=False),
            sa.Column("rate_updated", sa.Double(), nullable=False),
            sa.Column("used_period", sa.String(7), nullable=True),
            sa.Column("used_units", sa.BigInteger(), nullable=False),
            sa.Column("tpm_tokens", sa.Double(), nullable=True),
            sa.Column("tpm_updated", sa.Double(), nullable=True),
        )
        op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"])
    else:  # a database of the first release: the tokens-per-minute bucket came later
        columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("api_keys")}
        for name in ("tpm_tokens", "tpm_updated"):
            if name not in columns:
                op.add_column("api_keys", sa.Column(name, sa.Double(), nullable=True))
    if "usage_events" not in present:
        op.create_table(
            "usage_events",
            sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
            sa.Column("key_id", sa.Integer(), nullable=False),
            sa.Column("model", sa.String(200), nullable=False),
            sa.Column("units", sa.Integer(), nullable=False),
            sa.Column("status", sa.Integer(), nullable=False),
            sa.Column("latency_ms", sa.Double(), nullable=True),
            sa.Column("request_id", sa.String(100), nullable=False),
            sa.Column("created_at", sa.Double(), nullable=False),
            sa.Column("period", sa.String(7), nullable=False),
            sa.Column("idempotency_key", sa.String(255), nullable=True),
        )
        op.create_index("ix_usage_events_period_key", "usage_events", ["period", "key_id"])
    if "idempotency" not in present:
        op.create_table(
            "idempotency",
            sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
            sa.Column("key_id", sa.Integer(), nullable=False),
            sa.Column("idempotency_key", sa.String(255), nullable=False),
            sa.Column("request_hash", sa.String(128), nullable=True),
            sa.Column("event_id", sa.BigInteger(), nullable=True),
            sa.Column("status", sa.Integer(), nullable=True),
            sa.Column("response_json", sa.Text(), nullable=True),
            sa.Column("created_at", sa.Double(), nullable=False),
            sa.UniqueConstraint("key_id", "idempotency_key", name="uq_idempotency_key"),
        )


def downgrade() -> None:
    for table in ("idempotency", "usage_events", "api_keys", "model_versions"):
        op.drop_table(table)
