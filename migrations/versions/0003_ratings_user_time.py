"""ratings by (user, time): serving reads only the ratings a user made since training

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_ratings_user_time", "ratings", ["user_id", "timestamp"])


def downgrade() -> None:
    op.drop_index("ix_ratings_user_time", table_name="ratings")
