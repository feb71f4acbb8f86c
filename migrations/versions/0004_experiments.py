"""A/B experiments and their impressions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("salt", sa.String(length=32), nullable=False),
        sa.Column("arms", sa.String(length=4000), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("stopped_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "impressions",
        sa.Column(
            "impression_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("experiment", sa.String(length=64), nullable=False),
        sa.Column("arm", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("movie_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("shown_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["experiment"], ["experiments.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("impression_id"),
    )
    op.create_index(
        "ix_impressions_experiment_user_movie", "impressions", ["experiment", "user_id", "movie_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_impressions_experiment_user_movie", table_name="impressions")
    op.drop_table("impressions")
    op.drop_table("experiments")
