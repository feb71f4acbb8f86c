"""what the product API keeps: dismissals, deleted ratings (so that trained histories forget
them), clicks on recommendations, movies added or retired while serving and their embeddings

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("movies") as batch_op:
        batch_op.add_column(sa.Column("retired", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("added_at", sa.BigInteger(), nullable=True))
    op.create_table(
        "dismissals",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("movie_id", sa.Integer(), nullable=False),
        sa.Column("dismissed_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["movie_id"], ["movies.movie_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "movie_id"),
    )
    op.create_table(
        "deleted_ratings",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("movie_id", sa.Integer(), nullable=False),
        sa.Column("deleted_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "movie_id"),
    )
    op.create_index("ix_deleted_ratings_user_time", "deleted_ratings", ["user_id", "deleted_at"])
    op.create_table(
        "clicks",
        sa.Column(
            "click_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("recommendation", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("movie_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=True),
        sa.Column("experiment", sa.String(length=64), nullable=True),
        sa.Column("arm", sa.String(length=64), nullable=True),
        sa.Column("clicked_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("click_id"),
        sa.UniqueConstraint("recommendation", name="uq_clicks_recommendation"),
    )
    op.create_index("ix_clicks_experiment_arm", "clicks", ["experiment", "arm"])
    op.create_table(
        "movie_embeddings",
        sa.Column("movie_id", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["movie_id"], ["movies.movie_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("movie_id"),
    )


def downgrade() -> None:
    op.drop_table("movie_embeddings")
    op.drop_index("ix_clicks_experiment_arm", table_name="clicks")
    op.drop_table("clicks")
    op.drop_index("ix_deleted_ratings_user_time", table_name="deleted_ratings")
    op.drop_table("deleted_ratings")
    op.drop_table("dismissals")
    with op.batch_alter_table("movies") as batch_op:
        batch_op.drop_column("added_at")
        batch_op.drop_column("retired")
