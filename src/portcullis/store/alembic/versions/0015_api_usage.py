"""Per-version usage of API products: the request log and rollups gain the API, version
and sandbox a request was served as; `api_callers` counts who called each version per
day; `version_sunset_notices` remembers the `version.sunset_approaching` events sent.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROLLUP_KEY = ["granularity", "bucket_start", "route", "service", "consumer", "status_class"]
_API_DIMENSIONS = ["api", "api_version", "sandbox"]
_COUNTS = ["requests", "errors", "rate_limited", "bytes_in", "bytes_out", "latency_sum_ms"]


def upgrade() -> None:
    with op.batch_alter_table("request_log") as batch_op:
        batch_op.add_column(sa.Column("api", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("api_version", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("sandbox", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_index("ix_request_log_api_ts", ["api", "api_version", "ts_ms"])
    with op.batch_alter_table("analytics_rollups") as batch_op:
        batch_op.add_column(
            sa.Column("api", sa.String(length=128), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("api_version", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("sandbox", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.drop_constraint("uq_analytics_rollups_bucket", type_="unique")
        batch_op.create_unique_constraint(
            "uq_analytics_rollups_bucket", [*_ROLLUP_KEY, *_API_DIMENSIONS]
        )
    op.create_table(
        "api_callers",
        sa.Column("day", sa.BigInteger(), nullable=False),
        sa.Column("api", sa.String(length=128), nullable=False),
        sa.Column("api_version", sa.String(length=64), nullable=False),
        sa.Column("consumer", sa.String(length=128), nullable=False),
        sa.Column("credential_id", sa.String(length=64), nullable=False),
        sa.Column("sandbox", sa.Boolean(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day",
            "api",
            "api_version",
            "consumer",
            "credential_id",
            "sandbox",
            name=op.f("pk_api_callers"),
        ),
    )
    op.create_index("ix_api_callers_version_day", "api_callers", ["api", "api_version", "day"])
    op.create_index("ix_api_callers_day", "api_callers", ["day"])
    op.create_table(
        "version_sunset_notices",
        sa.Column("api", sa.String(length=128), nullable=False),
        sa.Column("api_version", sa.String(length=64), nullable=False),
        sa.Column("consumer", sa.String(length=128), nullable=False),
        sa.Column("sunset_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("announced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "api", "api_version", "consumer", "sunset_at", name=op.f("pk_version_sunset_notices")
        ),
    )


def downgrade() -> None:
    op.drop_table("version_sunset_notices")
    op.drop_index("ix_api_callers_day", table_name="api_callers")
    op.drop_index("ix_api_callers_version_day", table_name="api_callers")
    op.drop_table("api_callers")
    _fold_api_dimensions()
    with op.batch_alter_table("analytics_rollups") as batch_op:
        batch_op.drop_constraint("uq_analytics_rollups_bucket", type_="unique")
        batch_op.create_unique_constraint("uq_analytics_rollups_bucket", _ROLLUP_KEY)
        batch_op.drop_column("sandbox")
        batch_op.drop_column("api_version")
        batch_op.drop_column("api")
    with op.batch_alter_table("request_log") as batch_op:
        batch_op.drop_index("ix_request_log_api_ts")
        batch_op.drop_column("sandbox")
        batch_op.drop_column("api_version")
        batch_op.drop_column("api")


def _fold_api_dimensions() -> None:
    """Merge the rollups that differ only by API, version or sandbox into one row per
    bucket of the narrower key (counts added, latency sketches merged), so going down
    loses the API dimension but no traffic."""
    # The sketches' own merge (their byte format is the analytics package's): a migration
    # runs once, offline, and must merge exactly as the rollup job does.
    from portcullis.analytics.sketch import LatencySketch

    rollups = sa.table(
        "analytics_rollups",
        *(sa.column(c) for c in ("id", *_ROLLUP_KEY, *_API_DIMENSIONS)),
        *(sa.column(c) for c in _COUNTS),
        sa.column("sketch", sa.LargeBinary()),
    )
    bind = op.get_bind()
    with_api = sa.or_(rollups.c.api != "", rollups.c.api_version != "", rollups.c.sandbox)
    keys = sa.select(*(rollups.c[c] for c in _ROLLUP_KEY)).where(with_api).distinct().subquery()
    rows = bind.execute(
        sa.select(rollups).join(keys, sa.and_(*(rollups.c[c] == keys.c[c] for c in _ROLLUP_KEY)))
    ).mappings()
    merged: dict[tuple[object, ...], dict[str, object]] = {}
    sketches: dict[tuple[object, ...], LatencySketch] = {}
    ids: list[int] = []
    for row in rows:
        ids.append(row["id"])
        key = tuple(row[c] for c in _ROLLUP_KEY)
        into = merged.setdefault(
            key, {**{c: row[c] for c in _ROLLUP_KEY}, **dict.fromkeys(_COUNTS, 0)}
        )
        for c in _COUNTS:
            into[c] = into[c] + row[c]
        sketch = sketches.setdefault(key, LatencySketch())
        sketch.merge(LatencySketch.from_bytes(row["sketch"]))
    for start in range(0, len(ids), 500):
        bind.execute(sa.delete(rollups).where(rollups.c.id.in_(ids[start : start + 500])))
    narrow = sa.table(
        "analytics_rollups",
        *(sa.column(c) for c in (*_ROLLUP_KEY, *_COUNTS)),
        sa.column("sketch", sa.LargeBinary()),
    )
    for key, values in merged.items():
        bind.execute(sa.insert(narrow).values(**values, sketch=sketches[key].to_bytes()))
