"""drift reports, and ratings by time (BRIN on PostgreSQL) for "since the model's cut-off"

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_ratings_time",
        "ratings",
        ["timestamp"],
        postgresql_using="brin",
        postgresql_with={"autosummarize": "on"},
    )
    op.create_table(
        "drift_checks",
        sa.Column(
            "check_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("generated_at", sa.BigInteger(), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("check_id"),
    )
    op.create_index("ix_drift_checks_generated_at", "drift_checks", ["generated_at"])


def downgrade() -> None:
    op.drop_index("ix_drift_checks_generated_at", table_name="drift_checks")
    op.drop_table("drift_checks")
    op.drop_index("ix_ratings_time", table_name="ratings")
