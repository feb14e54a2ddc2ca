"""Consumer credentials of basic-auth, hmac-auth and mtls-auth (identity/credential_store.py).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consumer_credentials",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("identifier", sa.String(length=512), nullable=False),
        sa.Column("consumer", sa.String(length=128), nullable=False),
        sa.Column("organization_id", sa.String(length=36), nullable=True),
        sa.Column("secret", sa.LargeBinary(), nullable=True),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consumer_credentials")),
    )
    with op.batch_alter_table("consumer_credentials", schema=None) as batch_op:
        batch_op.create_index("ix_consumer_credentials_kind", ["kind", "identifier"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_consumer_credentials_consumer"), ["consumer"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_consumer_credentials_organization_id"),
            ["organization_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("consumer_credentials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consumer_credentials_organization_id"))
        batch_op.drop_index(batch_op.f("ix_consumer_credentials_consumer"))
        batch_op.drop_index("ix_consumer_credentials_kind")
    op.drop_table("consumer_credentials")
