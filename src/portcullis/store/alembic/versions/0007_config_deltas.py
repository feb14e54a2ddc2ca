"""Config versions stored as keyframes and deltas.

A version row holds the whole document (a keyframe) or a delta against the version
before it; `keyframe` names the keyframe a version is rebuilt from. Every existing
row holds its whole document, so each becomes its own keyframe.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from alembic import op

from portcullis.model.delta import apply_delta
from portcullis.store.config_repository import canonical_text

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with _head_detached():
        with op.batch_alter_table("config_versions") as batch:
            batch.add_column(sa.Column("delta", sa.Text(), nullable=True))
            batch.add_column(sa.Column("keyframe", sa.Integer(), nullable=True))
            batch.alter_column("document", existing_type=sa.Text(), nullable=True)
        op.execute("UPDATE config_versions SET keyframe = version")
        with op.batch_alter_table("config_versions") as batch:
            batch.alter_column("keyframe", existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    """Every kept version gets its whole document back (rebuilt oldest first: the oldest
    kept version is always a keyframe), then the delta columns go."""
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT version, document, delta FROM config_versions ORDER BY version")
    ).all()
    document: dict[str, Any] | None = None
    for version, text, delta in rows:
        if text is not None:
            document = json.loads(text)
            continue
        if document is None:
            raise RuntimeError(f"config version {version} has neither a document nor a base")
        document = apply_delta(document, json.loads(delta))
        conn.execute(
            sa.text("UPDATE config_versions SET document = :document WHERE version = :version"),
            {"document": canonical_text(document), "version": version},
        )
    with _head_detached(), op.batch_alter_table("config_versions") as batch:
        batch.alter_column("document", existing_type=sa.Text(), nullable=False)
        batch.drop_column("keyframe")
        batch.drop_column("delta")


@contextmanager
def _head_detached() -> Iterator[None]:
    """On SQLite a batch alteration copies the table and drops the old one, which the
    config head's foreign key refuses while it points at a version (and PRAGMA
    foreign_keys can't be switched off inside the migration's transaction): the head
    lets go of its version for the copy and takes it back after."""
    if op.get_bind().dialect.name != "sqlite":
        yield
        return
    conn = op.get_bind()
    head = conn.execute(sa.text("SELECT id, version FROM config_head")).all()
    conn.execute(sa.text("UPDATE config_head SET version = NULL"))
    yield
    for row_id, version in head:
        conn.execute(
            sa.text("UPDATE config_head SET version = :version WHERE id = :id"),
            {"version": version, "id": row_id},
        )
