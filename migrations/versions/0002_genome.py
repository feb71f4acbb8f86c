"""tag genome: genome_tags and genome_scores

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "genome_tags",
        sa.Column("tag_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("tag", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("tag_id"),
    )
    op.create_table(
        "genome_scores",
        sa.Column("movie_id", sa.Integer(), nullable=False),
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.Column("relevance", sa.Float(), nullable=False),
        sa.CheckConstraint("relevance >= 0 AND relevance <= 1", name="ck_genome_scores_relevance"),
        sa.ForeignKeyConstraint(["movie_id"], ["movies.movie_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tag_id"], ["genome_tags.tag_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("movie_id", "tag_id"),
    )


def downgrade() -> None:
    op.drop_table("genome_scores")
    op.drop_table("genome_tags")
