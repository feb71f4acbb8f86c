"""catalog tables

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "genres",
        sa.Column("genre_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("genre_id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "movies",
        sa.Column("movie_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("title", sa.String(length=512), nullable=False),
        sa.Column("year", sa.Integer(), nullable=True),
        sa.Column("ratings_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rating_sum", sa.Float(), server_default="0", nullable=False),
        sa.Column("rating_mean", sa.Float(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("movie_id"),
    )
    with op.batch_alter_table("movies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_movies_rating_mean"), ["rating_mean"], unique=False)
        batch_op.create_index(batch_op.f("ix_movies_ratings_count"), ["ratings_count"], unique=False)
        batch_op.create_index(batch_op.f("ix_movies_title"), ["title"], unique=False)
        batch_op.create_index(batch_op.f("ix_movies_year"), ["year"], unique=False)

    op.create_table(
        "users",
        sa.Column("user_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("age", sa.Integer(), nullable=True),
        sa.Column("gender", sa.String(length=16), nullable=True),
        sa.Column("occupation", sa.String(length=64), nullable=True),
        sa.Column("zip_code", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("role", sa.String(length=16), server_default="user", nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id"),
        sa.UniqueConstraint("email"),
        sa.UniqueConstraint("user_id"),
    )
    op.create_table(
        "links",
        sa.Column("movie_id", sa.Integer(), nullable=False),
        sa.Column("imdb_id", sa.String(length=16), nullable=True),
        sa.Column("tmdb_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["movie_id"], ["movies.movie_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("movie_id"),
    )
    op.create_table(
        "movie_genres",
        sa.Column("movie_id", sa.Integer(), nullable=False),
        sa.Column("genre_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["genre_id"], ["genres.genre_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["movie_id"], ["movies.movie_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("movie_id", "genre_id"),
    )
    with op.batch_alter_table("movie_genres", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_movie_genres_genre_id"), ["genre_id"], unique=False)

    op.create_table(
        "ratings",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("movie_id", sa.Integer(), nullable=False),
        sa.Column("rating", sa.Float(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "rating >= 0.5 AND rating <= 5.0 AND rating * 2 = CAST(rating * 2 AS INTEGER)",
            name="ck_ratings_half_stars",
        ),
        sa.ForeignKeyConstraint(
            ["movie_id"], ["movies.movie_id"], ondelete="CASCADE", name="fk_ratings_movie_id"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], ondelete="CASCADE", name="fk_ratings_user_id"
        ),
        sa.PrimaryKeyConstraint("user_id", "movie_id", name="pk_ratings"),
    )
    with op.batch_alter_table("ratings", schema=None) as batch_op:
        batch_op.create_index("ix_ratings_movie_id", ["movie_id"], unique=False)

    op.create_table(
        "tags",
        sa.Column("tag_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("movie_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=256), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["movie_id"], ["movies.movie_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tag_id"),
        sa.UniqueConstraint("user_id", "movie_id", "tag", name="uq_tags_user_movie_tag"),
    )
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tags_movie_id"), ["movie_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tags_movie_id"))

    op.drop_table("tags")
    with op.batch_alter_table("ratings", schema=None) as batch_op:
        batch_op.drop_index("ix_ratings_movie_id")

    op.drop_table("ratings")
    with op.batch_alter_table("movie_genres", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_movie_genres_genre_id"))

    op.drop_table("movie_genres")
    op.drop_table("links")
    op.drop_table("accounts")
    op.drop_table("users")
    with op.batch_alter_table("movies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_movies_year"))
        batch_op.drop_index(batch_op.f("ix_movies_title"))
        batch_op.drop_index(batch_op.f("ix_movies_ratings_count"))
        batch_op.drop_index(batch_op.f("ix_movies_rating_mean"))

    op.drop_table("movies")
    op.drop_table("genres")
