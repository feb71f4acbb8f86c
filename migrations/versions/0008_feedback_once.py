"""feedback counts once: one impression row per (experiment, user, movie), clicks on a pair
found by their index, and a sign-out time per account that tokens issued before it fail

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.add_column(sa.Column("signed_out_at", sa.Float(), nullable=True))
    # the first showing of each pair is what the report reads: later repeats go
    op.execute(
        "DELETE FROM impressions WHERE impression_id NOT IN ("
        "SELECT min(impression_id) FROM impressions GROUP BY experiment, user_id, movie_id)"
    )
    op.drop_index("ix_impressions_experiment_user_movie", table_name="impressions")
    op.create_index(
        "uq_impressions_experiment_user_movie",
        "impressions",
        ["experiment", "user_id", "movie_id"],
        unique=True,
    )
    op.drop_index("ix_clicks_experiment_arm", table_name="clicks")
    op.create_index("ix_clicks_experiment_pair", "clicks", ["experiment", "arm", "user_id", "movie_id"])


def downgrade() -> None:
    op.drop_index("ix_clicks_experiment_pair", table_name="clicks")
    op.create_index("ix_clicks_experiment_arm", "clicks", ["experiment", "arm"])
    op.drop_index("uq_impressions_experiment_user_movie", table_name="impressions")
    op.create_index(
        "ix_impressions_experiment_user_movie", "impressions", ["experiment", "user_id", "movie_id"]
    )
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.drop_column("signed_out_at")
