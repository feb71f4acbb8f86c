"""SQLModel tables. They are storage, not API: GraphQL types live in ``graphql_schema``.

Alembic migrations (``migrations/``) are the only way these tables are created.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlmodel import Field, SQLModel

RATING_MIN = 0.5
RATING_MAX = 5.0
# Named so that a bulk load can drop and rebuild them (app.services.ingest).
RATINGS_PK = "pk_ratings"
RATINGS_MOVIE_INDEX = "ix_ratings_movie_id"
RATINGS_USER_TIME_INDEX = "ix_ratings_user_time"
# ratings by time, for "since the model's cut-off" (drift): BRIN on PostgreSQL, tiny and cheap to
# keep, since new ratings land in new pages after every older timestamp
RATINGS_TIME_INDEX = "ix_ratings_time"
RATINGS_USER_FK = "fk_ratings_user_id"
RATINGS_MOVIE_FK = "fk_ratings_movie_id"


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Movie(SQLModel, table=True):
    __tablename__ = "movies"

    movie_id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    title: str = Field(sa_column=Column(String(512), nullable=False, index=True))
    year: int | None = Field(default=None, sa_column=Column(Integer, nullable=True, index=True))
    # Denormalised rating statistics, kept in step by ingest and rateMovie, so that a page
    # ordered by popularity never aggregates millions of ratings.
    ratings_count: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default="0", index=True)
    )
    rating_sum: float = Field(default=0.0, sa_column=Column(Float, nullable=False, server_default="0"))
    rating_mean: float = Field(
        default=0.0, sa_column=Column(Float, nullable=False, server_default="0", index=True)
    )
    # a retired movie leaves every list at once (its ratings stay); added_at: added while serving
    retired: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))
    added_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class Genre(SQLModel, table=True):
    __tablename__ = "genres"

    genre_id: int | None = Field(
        default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True)
    )
    name: str = Field(sa_column=Column(String(64), nullable=False, unique=True))


class MovieGenre(SQLModel, table=True):
    __tablename__ = "movie_genres"

    movie_id: int = Field(
        sa_column=Column(Integer, ForeignKey("movies.movie_id", ondelete="CASCADE"), primary_key=True)
    )
    genre_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("genres.genre_id", ondelete="CASCADE"), primary_key=True, index=True
        )
    )


class Link(SQLModel, table=True):
    __tablename__ = "links"

    movie_id: int = Field(
        sa_column=Column(Integer, ForeignKey("movies.movie_id", ondelete="CASCADE"), primary_key=True)
    )
    imdb_id: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    tmdb_id: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))


class User(SQLModel, table=True):
    __tablename__ = "users"

    user_id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    age: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    gender: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    occupation: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    zip_code: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))


class Tag(SQLModel, table=True):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("user_id", "movie_id", "tag", name="uq_tags_user_movie_tag"),)

    tag_id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    user_id: int = Field(sa_column=Column(Integer, nullable=False))
    movie_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("movies.movie_id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    tag: str = Field(sa_column=Column(String(256), nullable=False))
    timestamp: int = Field(sa_column=Column(BigInteger, nullable=False))


class Account(SQLModel, table=True):
    __tablename__ = "accounts"
    # ids are never given again: tokens name their account by id (migration 0006)
    __table_args__ = {"sqlite_autoincrement": True}

    account_id: int | None = Field(
        default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True)
    )
    email: str = Field(sa_column=Column(String(320), nullable=False, unique=True))
    password_hash: str = Field(sa_column=Column(String(256), nullable=False))
    role: str = Field(default="user", sa_column=Column(String(16), nullable=False, server_default="user"))
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False, unique=True
        )
    )
    created_at: datetime = Field(default_factory=_utcnow, sa_column=Column(DateTime, nullable=False))
    # Unix seconds of the last sign-out: tokens issued before it are refused
    signed_out_at: float | None = Field(default=None, sa_column=Column(Float, nullable=True))


class Rating(SQLModel, table=True):
    __tablename__ = "ratings"
    __table_args__ = (
        CheckConstraint(
            f"rating >= {RATING_MIN} AND rating <= {RATING_MAX} AND rating * 2 = CAST(rating * 2 AS INTEGER)",
            name="ck_ratings_half_stars",
        ),
        PrimaryKeyConstraint("user_id", "movie_id", name=RATINGS_PK),
        Index(RATINGS_MOVIE_INDEX, "movie_id"),
        Index(RATINGS_USER_TIME_INDEX, "user_id", "timestamp"),
        Index(
            RATINGS_TIME_INDEX, "timestamp", postgresql_using="brin", postgresql_with={"autosummarize": "on"}
        ),
    )

    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("users.user_id", ondelete="CASCADE", name=RATINGS_USER_FK), primary_key=True
        )
    )
    movie_id: int = Field(
        sa_column=Column(
            Integer,
            ForeignKey("movies.movie_id", ondelete="CASCADE", name=RATINGS_MOVIE_FK),
            primary_key=True,
        )
    )
    rating: float = Field(sa_column=Column(Float, nullable=False))
    timestamp: int = Field(sa_column=Column(BigInteger, nullable=False))


class GenomeTag(SQLModel, table=True):
    __tablename__ = "genome_tags"

    tag_id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    tag: str = Field(sa_column=Column(String(256), nullable=False))


class GenomeScore(SQLModel, table=True):
    """How strongly a genome tag applies to a movie (MovieLens tag genome), 0..1."""

    __tablename__ = "genome_scores"
    __table_args__ = (
        CheckConstraint("relevance >= 0 AND relevance <= 1", name="ck_genome_scores_relevance"),
    )

    movie_id: int = Field(
        sa_column=Column(Integer, ForeignKey("movies.movie_id", ondelete="CASCADE"), primary_key=True)
    )
    tag_id: int = Field(
        sa_column=Column(Integer, ForeignKey("genome_tags.tag_id", ondelete="CASCADE"), primary_key=True)
    )
    relevance: float = Field(sa_column=Column(Float, nullable=False))


class Experiment(SQLModel, table=True):
    """An A/B experiment between registry aliases: each arm's version is fixed at the start."""

    __tablename__ = "experiments"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    salt: str = Field(sa_column=Column(String(32), nullable=False))
    arms: str = Field(sa_column=Column(String(4000), nullable=False))  # JSON: [{alias, version, weight}]
    active: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    window_seconds: int = Field(sa_column=Column(Integer, nullable=False))
    started_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    stopped_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class Impression(SQLModel, table=True):
    """A recommendation shown to a user in an experiment; a later rating of it is its outcome."""

    __tablename__ = "impressions"
    # one row per pair: the report reads when the movie was first shown, repeats add nothing
    __table_args__ = (
        Index("uq_impressions_experiment_user_movie", "experiment", "user_id", "movie_id", unique=True),
    )

    impression_id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    )
    experiment: str = Field(
        sa_column=Column(String(64), ForeignKey("experiments.name", ondelete="CASCADE"), nullable=False)
    )
    arm: str = Field(sa_column=Column(String(64), nullable=False))
    version: str = Field(sa_column=Column(String(32), nullable=False))
    user_id: int = Field(sa_column=Column(Integer, nullable=False))
    movie_id: int = Field(sa_column=Column(Integer, nullable=False))
    rank: int = Field(sa_column=Column(Integer, nullable=False))
    shown_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class DriftCheck(SQLModel, table=True):
    """One drift report (``cinerec monitor drift``): the ratings since a model version's cut-off
    against the snapshot stored with it."""

    __tablename__ = "drift_checks"

    check_id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    )
    generated_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    model_version: str = Field(sa_column=Column(String(32), nullable=False))
    report: str = Field(sa_column=Column(Text, nullable=False))  # JSON: DriftResult.as_dict()


class Dismissal(SQLModel, table=True):
    """ "Not interested": never recommended again to that user, and negative taste."""

    __tablename__ = "dismissals"

    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True)
    )
    movie_id: int = Field(
        sa_column=Column(Integer, ForeignKey("movies.movie_id", ondelete="CASCADE"), primary_key=True)
    )
    dismissed_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class DeletedRating(SQLModel, table=True):
    """A rating deleted after the serving model read its data: the model's stored history still
    holds it, so serving removes it from there."""

    __tablename__ = "deleted_ratings"
    __table_args__ = (Index("ix_deleted_ratings_user_time", "user_id", "deleted_at"),)

    user_id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    movie_id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    deleted_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class Click(SQLModel, table=True):
    """A click on a recommendation, once per what was shown: ``recommendation`` is a digest of
    (user, movie, version, experiment, arm), whatever rank or list the id came from."""

    __tablename__ = "clicks"
    __table_args__ = (
        UniqueConstraint("recommendation", name="uq_clicks_recommendation"),
        Index("ix_clicks_experiment_pair", "experiment", "arm", "user_id", "movie_id"),
    )

    click_id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    )
    recommendation: str = Field(sa_column=Column(String(64), nullable=False))
    user_id: int = Field(sa_column=Column(Integer, nullable=False))
    movie_id: int = Field(sa_column=Column(Integer, nullable=False))
    version: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    experiment: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    arm: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    clicked_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class MovieEmbedding(SQLModel, table=True):
    """The content embedding of a movie added while serving (float32 bytes), so that every
    replica finds it without encoding it again."""

    __tablename__ = "movie_embeddings"

    movie_id: int = Field(
        sa_column=Column(Integer, ForeignKey("movies.movie_id", ondelete="CASCADE"), primary_key=True)
    )
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class ApiKey(SQLModel, table=True):
    """A service's key: shown once when created, stored as the SHA-256 of its secret (a
    random 256-bit secret needs no slow hash), found by its public prefix."""

    __tablename__ = "api_keys"

    key_id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    name: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    scope: str = Field(sa_column=Column(String(16), nullable=False))
    prefix: str = Field(sa_column=Column(String(16), nullable=False, unique=True))
    secret_hash: str = Field(sa_column=Column(String(64), nullable=False))
    created_at: datetime = Field(default_factory=_utcnow, sa_column=Column(DateTime, nullable=False))
    created_by: str = Field(sa_column=Column(String(64), nullable=False))  # who, as the audit log names them
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))


class AuditEntry(SQLModel, table=True):
    """One line of the audit log: append-only, each line's hash covers its fields and the hash
    of the line before (``app.services.audit``), so an edited or deleted line breaks the chain."""

    __tablename__ = "audit_log"

    entry_id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    )
    at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    actor: str = Field(sa_column=Column(String(128), nullable=False))
    action: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    arguments: str = Field(sa_column=Column(Text, nullable=False))  # JSON, without secrets
    client: str = Field(sa_column=Column(String(64), nullable=False))
    result: str = Field(sa_column=Column(String(64), nullable=False))  # "ok" or the error's code
    previous_hash: str = Field(sa_column=Column(String(64), nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))


class ErasedUser(SQLModel, table=True):
    """A user id whose account and data were erased: never given to a new account, so that a
    model trained before the erasure never serves its stored history to someone else."""

    __tablename__ = "erased_users"

    user_id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))


# The tables as SQLAlchemy Core objects, for the services' select, insert and update
# expressions (one place instead of a copy in every service).
movies: Table = Movie.__table__  # type: ignore[attr-defined]
genres: Table = Genre.__table__  # type: ignore[attr-defined]
movie_genres: Table = MovieGenre.__table__  # type: ignore[attr-defined]
links: Table = Link.__table__  # type: ignore[attr-defined]
users: Table = User.__table__  # type: ignore[attr-defined]
tags: Table = Tag.__table__  # type: ignore[attr-defined]
accounts: Table = Account.__table__  # type: ignore[attr-defined]
ratings: Table = Rating.__table__  # type: ignore[attr-defined]
genome_tags: Table = GenomeTag.__table__  # type: ignore[attr-defined]
experiments: Table = Experiment.__table__  # type: ignore[attr-defined]
impressions: Table = Impression.__table__  # type: ignore[attr-defined]
drift_checks: Table = DriftCheck.__table__  # type: ignore[attr-defined]
dismissals: Table = Dismissal.__table__  # type: ignore[attr-defined]
deleted_ratings: Table = DeletedRating.__table__  # type: ignore[attr-defined]
clicks: Table = Click.__table__  # type: ignore[attr-defined]
api_keys: Table = ApiKey.__table__  # type: ignore[attr-defined]
audit_log: Table = AuditEntry.__table__  # type: ignore[attr-defined]
erased_users: Table = ErasedUser.__table__  # type: ignore[attr-defined]
movie_embeddings: Table = MovieEmbedding.__table__  # type: ignore[attr-defined]
