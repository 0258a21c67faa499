"""Package integrity: the index keeps each version's foundry.json sha256 and run folder.

`manifest_sha256`: foundry.json is checked against it on every read, so a manifest changed
after registration (which could list new file checksums) is refused. `run_dir`: the run
folder foundry created for the version (training or compress run), the only folders
outside the home that the report and dashboard read (`foundry.registry.integrity`).
Both nullable: versions registered before this revision keep NULL and load as before.

Revision ID: 0002_package_checksums
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_package_checksums"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Only where missing: a database made by a store's create_all before migrations
    # existed, at this code's table definitions, was stamped at the baseline with them.
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("model_versions")}
    with op.batch_alter_table("model_versions") as batch:
        if "manifest_sha256" not in present:
            batch.add_column(sa.Column("manifest_sha256", sa.String(64), nullable=True))
        if "run_dir" not in present:
            batch.add_column(sa.Column("run_dir", sa.String(1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("run_dir")
        batch.drop_column("manifest_sha256")
