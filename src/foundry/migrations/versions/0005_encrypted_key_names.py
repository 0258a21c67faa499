"""Key names fit their encrypted form: `api_keys.name` becomes TEXT.

With FOUNDRY_ENCRYPTION_KEY set a key's name (its owner or customer label) is stored
encrypted (foundry.crypto.encrypt_field: `enc1:` + base64 of nonce, ciphertext and tag),
which outgrows VARCHAR(200) for names near their 200-character limit. No row changes.

Revision ID: 0005_encrypted_key_names
Revises: 0004_aliases_served_models
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_encrypted_key_names"
down_revision = "0004_aliases_served_models"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("name", type_=sa.Text(), existing_type=sa.String(200),
                           existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("name", type_=sa.String(200), existing_type=sa.Text(),
                           existing_nullable=False)
