"""Strawberry output types. They are built from service rows with ``from_row``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Generic, TypeVar

import strawberry
from strawberry.types import Info

from app.infra.errors import BadUserInput
from graphql_schema.costs import (
    EVIDENCE,
    EXPLANATION,
    OBJECT,
    RECOMMENDATIONS,
    assumed,
    cost,
    page_depth,
    sliced,
)
from graphql_schema.permissions import OwnerOrAdmin
from resolvers import explanations as explain_resolvers
from resolvers import movies as movie_resolvers
from resolvers import recommendations as rec_resolvers
from resolvers import users as user_resolvers
from resolvers.movies import Page


@strawberry.enum(description="How to order a movie list. Each has a natural direction; `direction` flips it.")
class MovieOrder(Enum):
    POPULARITY = "popularity"
    AVERAGE_RATING = strawberry.enum_value(
        "average_rating",
        description="Best rated first: the mean rating shrunk toward 3.5 as if with 10 more ratings of "
        "3.5, so that a movie with two ratings of 5 does not come before hundreds of 4.4s.",
    )
    YEAR = "year"
    TITLE = "title"


@strawberry.enum(description="Which registered model: the recommender or the LLM (reranker and explainer).")
class ModelKind(Enum):
    RECOMMENDER = "recommender"
    LLM = "llm"


@strawberry.enum
class SortDirection(Enum):
    ASC = "asc"
    DESC = "desc"


@strawberry.input(description="Conditions a movie must all meet.")
class MovieFilter:
    genre: str | None = strawberry.field(default=None, description="Genre name, case-insensitive.")
    year_from: int | None = None
    year_to: int | None = None
    title_contains: str | None = strawberry.field(default=None, description="Case-insensitive substring.")
    min_ratings: int | None = strawberry.field(default=None, description="At least this many ratings.")


@strawberry.type(directives=OBJECT)
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None

    @classmethod
    def from_page(cls, page: Page) -> PageInfo:
        cursors = [c for c, _ in page.edges]
        return cls(
            has_next_page=page.has_next,
            has_previous_page=page.has_previous,
            start_cursor=cursors[0] if cursors else None,
            end_cursor=cursors[-1] if cursors else None,
        )


T = TypeVar("T")


@strawberry.type(directives=OBJECT)
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type(
    directives=OBJECT, description="A page of a list, Relay-style: edges, where the page is, and the total."
)
class Connection(Generic[T]):
    edges: list[Edge[T]]  # sized by the field that returns the connection (@listSize sizedFields)
    page_info: PageInfo
    _page: strawberry.Private[Page]

    @classmethod
    def from_page(cls, page: Page, node: Callable[[Any], T]) -> Connection[T]:
        edges = [Edge(cursor=c, node=node(r)) for c, r in page.edges]
        return cls(edges=edges, page_info=PageInfo.from_page(page), _page=page)

    @strawberry.field(
        description="Items over all pages (for movies: those matching the filter).", directives=[cost(1)]
    )
    async def total_count(self) -> int:
        return await self._page.total()


@strawberry.type(directives=OBJECT)
class Movie:
    movie_id: int
    title: str = strawberry.field(description="Title without the year, which is in `year`.")
    year: int | None
    ratings_count: int
    average_rating: float | None = strawberry.field(description="Mean rating, null when unrated.")
    retired: bool = strawberry.field(
        description="Retired by an admin: in no recommendation, row, search or similar list; "
        "its ratings stay."
    )

    @classmethod
    def from_row(cls, row: Any) -> Movie:
        return cls(
            movie_id=row.movie_id,
            title=row.title,
            year=row.year,
            ratings_count=row.ratings_count,
            average_rating=row.rating_sum / row.ratings_count if row.ratings_count else None,
            retired=bool(getattr(row, "retired", False)),
        )

    @strawberry.field(directives=[cost(0), assumed(30)])  # read with the movie's row, cached
    async def genres(self, info: Info) -> list[str]:
        return await movie_resolvers.genres(info.context, movie_id=self.movie_id)

    @strawberry.field(description="The most used tags, most used first.", directives=[cost(0), sliced()])
    async def tags(self, info: Info, first: int = 10) -> list[str]:
        return await movie_resolvers.tags(info.context, movie_id=self.movie_id, first=first)

    @strawberry.field(
        description="IMDb id as MovieLens gives it (digits, leading zeros kept).", directives=[cost(0)]
    )
    async def imdb_id(self, info: Info) -> str | None:
        link = await movie_resolvers.link(info.context, movie_id=self.movie_id)
        return link.imdb_id if link else None

    @strawberry.field(directives=[cost(0)])  # one batched, cached read with imdbId
    async def tmdb_id(self, info: Info) -> int | None:
        link = await movie_resolvers.link(info.context, movie_id=self.movie_id)
        return link.tmdb_id if link else None

    @strawberry.field(
        description="The signed-in caller's own rating of it (0.5 to 5 in halves); null when they "
        "have not rated it or nobody is signed in. A token that no longer works is UNAUTHENTICATED.",
        directives=[cost(1)],  # one statement for all of a request's movies
    )
    async def my_rating(self, info: Info) -> float | None:
        return await movie_resolvers.my_rating(info.context, movie_id=self.movie_id)


@strawberry.type(directives=OBJECT)
class Rating:
    user_id: int
    movie_id: int
    rating: float
    timestamp: int = strawberry.field(description="Seconds since the Unix epoch.")

    @classmethod
    def from_row(cls, row: Any) -> Rating:
        return cls(user_id=row.user_id, movie_id=row.movie_id, rating=row.rating, timestamp=row.timestamp)

    @strawberry.field(directives=[cost(0)])
    def rated_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)

    @strawberry.field(directives=[cost(1)])
    async def movie(self, info: Info) -> Movie:
        row = await movie_resolvers.movie(info.context, movie_id=self.movie_id)
        return Movie.from_row(row)


@strawberry.type(directives=OBJECT)
class User:
    user_id: int
    age: int | None
    gender: str | None
    occupation: str | None

    @classmethod
    def from_row(cls, row: Any) -> User:
        return cls(user_id=row.user_id, age=row.age, gender=row.gender, occupation=row.occupation)

    @strawberry.field(directives=[cost(0)])  # one batched count for the request's users
    async def ratings_count(self, info: Info) -> int:
        return await user_resolvers.ratings_count(info.context, user_id=self.user_id)

    @strawberry.field(
        permission_classes=[OwnerOrAdmin],
        description="Best first, unrated movies only (as `Query.recommendations`).",
        directives=[cost(RECOMMENDATIONS), sliced(), page_depth()],
    )
    async def recommendations(
        self,
        info: Info,
        first: int = 10,
        filter: RecommendationFilter | None = None,
        after: str | None = None,
        diversity: float = 0.0,
    ) -> list[Recommendation]:
        return await Recommendation.for_user(
            info,
            self.user_id,
            first=first,
            exclude_rated=True,
            filter=filter,
            after=after,
            diversity=diversity,
        )

    @strawberry.field(
        permission_classes=[OwnerOrAdmin],
        description="Newest first.",
        directives=[cost(1), sliced(sized=["edges"])],
    )
    async def ratings(self, info: Info, first: int = 20, after: str | None = None) -> Connection[Rating]:
        page = await user_resolvers.user_ratings(info.context, user_id=self.user_id, first=first, after=after)
        return Connection.from_page(page, Rating.from_row)

    @strawberry.field(
        permission_classes=[OwnerOrAdmin],
        description="Movies the user dismissed, newest first; `undismissMovie` takes one back.",
        directives=[cost(1), sliced()],
    )
    async def dismissed_movies(self, info: Info, first: int = 20) -> list[Movie]:
        ids = await user_resolvers.dismissed_movies(info.context, user_id=self.user_id, first=first)
        rows = await info.context.loaders.movie.load_many(ids)  # one batch
        return [Movie.from_row(row) for row in rows if row is not None]


@strawberry.type(directives=OBJECT)
class AuthPayload:
    token: str = strawberry.field(description="A JWT for `Authorization: Bearer <token>`.")
    user: User


async def _movie(info: Info, movie_id: int) -> Movie:
    row = await movie_resolvers.movie(info.context, movie_id=movie_id)
    return Movie.from_row(row)


@strawberry.type(
    directives=OBJECT,
    description="A reason behind a recommendation, which an explanation rests on: one of the user's "
    "ratings that raised the model's score most, or the movie's own popularity, largest first.",
)
class ExplanationEvidence:
    reason: str = strawberry.field(
        description="The fact in words, e.g. 'you rated X 5/5 and it shares Drama'."
    )
    similarity: float = strawberry.field(
        description="Content similarity of this movie and the recommended one."
    )
    weight: float = strawberry.field(
        description="This reason's share of what raised the recommendation's score, 0 to 1: its part "
        "of the model's score over the sum of the parts that raised it (for CONTENT, its share of "
        "the content similarity shown)."
    )
    kind: EvidenceKind = strawberry.field(description="What the reason is.")
    movie_id: strawberry.Private[int]

    @classmethod
    def from_evidence(cls, evidence: Any) -> ExplanationEvidence:
        return cls(
            reason=evidence.reason,
            similarity=evidence.similarity,
            weight=evidence.weight,
            kind=EvidenceKind(evidence.kind),
            movie_id=evidence.movie_id,
        )

    @strawberry.field(
        description="The movie the fact is about: the user's rated movie, or for POPULARITY the "
        "recommended movie itself.",
        directives=[cost(1)],
    )
    async def movie(self, info: Info) -> Movie:
        return await _movie(info, self.movie_id)


@strawberry.enum(description="What a reason behind a recommendation is.")
class EvidenceKind(Enum):
    RATING = "rating"  # one of the user's ratings, by its part of the model's score
    POPULARITY = "popularity"  # the movie's own part of the score: how widely it is liked
    CONTENT = "content"  # a liked movie nearest in content: for movies the model scores by content alone


@strawberry.enum(description="Who wrote an explanation.")
class ExplanationSource(Enum):
    LLM = "llm"  # the model wrote it, and the checker found every claim in it among the facts
    TEMPLATE = "template"  # the server's sentence over the evidence: the LLM failed, was off, or made claims


@strawberry.type(directives=OBJECT, description="A piece of a streamed explanation.")
class ExplanationChunk:
    text: str = strawberry.field(
        description="Text since the previous chunk; the chunks of a stream concatenate to the explanation."
    )
    done: bool = strawberry.field(description="True on the last chunk, which carries no new text.")
    evidence: list[ExplanationEvidence] | None = strawberry.field(
        description="On the first and the last chunk: the facts the explanation was given.",
        directives=[assumed(EVIDENCE)],
    )
    source: ExplanationSource = strawberry.field(
        description="LLM, or TEMPLATE when the LLM was unavailable, failed, or its first clause made a claim "
        "the facts do not hold."
    )
    error: str | None = strawberry.field(
        description="Why the template stood in, or why an LLM stream ended early (an unsupported claim)."
    )


@strawberry.input(
    description="What a recommendation must be. Applied to the whole ranking before the top is taken: "
    "`first` matching movies come back even when none is among the unfiltered best."
)
class RecommendationFilter:
    any_genres: list[str] | None = strawberry.field(default=None, description="At least one of these genres.")
    all_genres: list[str] | None = strawberry.field(default=None, description="Every one of these genres.")
    year_from: int | None = None
    year_to: int | None = None
    min_ratings: int | None = strawberry.field(default=None, description="Rated by at least this many users.")
    exclude_movie_ids: list[int] | None = strawberry.field(
        default=None, description="Never these (at most 1,000)."
    )
    include_dismissed: bool = strawberry.field(
        default=False, description="Movies the user dismissed come back too (they never do otherwise)."
    )

    def to_filter(self) -> Any:
        return rec_resolvers.rec_filter(
            any_genres=self.any_genres,
            all_genres=self.all_genres,
            year_from=self.year_from,
            year_to=self.year_to,
            min_ratings=self.min_ratings,
            exclude_movie_ids=self.exclude_movie_ids,
            include_dismissed=self.include_dismissed,
        )


@strawberry.input(description="A movie as an admin adds it.")
class MovieInput:
    title: str
    year: int | None = None
    genres: list[str]
    tags: list[str] | None = None
    imdb_id: str | None = None
    tmdb_id: int | None = None


@strawberry.input(description="What an admin changes of a movie; what is left out stays as it is.")
class MoviePatch:
    title: str | None = None
    year: int | None = None
    genres: list[str] | None = None
    tags: list[str] | None = None
    imdb_id: str | None = None
    tmdb_id: int | None = None


@strawberry.type(directives=OBJECT)
class Recommendation:
    score: float = strawberry.field(
        description="The hybrid's blended score; higher is better. For a user with few ratings the "
        "learned ranker orders the list and the blend's values follow its order."
    )
    rank: int = strawberry.field(description="The position in the whole ranking (pages go on counting).")
    movie_id: strawberry.Private[int]
    user_id: strawberry.Private[int]
    page: strawberry.Private[Any]

    @classmethod
    def from_page(cls, page: Any) -> list[Recommendation]:
        return [
            cls(score=r.score, rank=r.rank, movie_id=r.movie_id, user_id=page.user_id, page=page)
            for r in page.items
        ]

    @classmethod
    async def for_user(
        cls,
        info: Info,
        user_id: int,
        *,
        first: int,
        exclude_rated: bool,
        filter: RecommendationFilter | None,
        after: str | None,
        diversity: float,
    ) -> list[Recommendation]:
        """What `Query.recommendations` and `User.recommendations` both answer."""
        page = await rec_resolvers.recommendations(
            info.context,
            user_id=user_id,
            first=first,
            exclude_rated=exclude_rated,
            filter=filter.to_filter() if filter else rec_resolvers.NO_FILTER,
            after=after,
            diversity=diversity,
        )
        return cls.from_page(page)

    @strawberry.field(
        description="Where this item stands in its list: pass it as `after` for the page after it. "
        "Opaque; tied to the user, the list (filter, diversity) and the model version. Null on a home "
        "page's row.",
        directives=[cost(0)],
    )
    def cursor(self, info: Info) -> str | None:
        return rec_resolvers.cursor(info.context, self.page, self.rank)

    @strawberry.field(description="This recommendation, as `recordClick` takes it.", directives=[cost(0)])
    def id(self, info: Info) -> strawberry.ID:
        return strawberry.ID(
            rec_resolvers.recommendation_id(info.context, self.page, self.movie_id, self.rank)
        )

    @strawberry.field(directives=[cost(1)])
    async def movie(self, info: Info) -> Movie:
        return await _movie(info, self.movie_id)

    @strawberry.field(
        description="Why this movie, in words, from the LLM (one batch for the whole request); "
        "the template when the LLM is unavailable (see extensions.explanations).",
        directives=[cost(EXPLANATION)],
    )
    async def explanation(self, info: Info) -> str:
        found = await explain_resolvers.explanation(
            info.context, user_id=self.user_id, movie_id=self.movie_id
        )
        return found.text

    @strawberry.field(
        description="Who wrote the explanation: LLM (every claim checked against the facts the server "
        "holds: titles, years, genres, ratings, the evidence) or TEMPLATE.",
        directives=[cost(EXPLANATION)],  # the same generation as `explanation`: priced once for both
    )
    async def explanation_source(self, info: Info) -> ExplanationSource:
        found = await explain_resolvers.explanation(
            info.context, user_id=self.user_id, movie_id=self.movie_id
        )
        return ExplanationSource(found.source)

    @strawberry.field(
        description="The facts from the user's ratings that the explanation rests on.",
        directives=[cost(2), assumed(EVIDENCE)],
    )
    async def evidence(self, info: Info) -> list[ExplanationEvidence]:
        found = await explain_resolvers.evidence(info.context, user_id=self.user_id, movie_id=self.movie_id)
        return [ExplanationEvidence.from_evidence(e) for e in found]


@strawberry.enum(description="What a home page's row holds.")
class HomeRowKind(Enum):
    TOP = "top"  # the user's best scores
    BECAUSE = "because"  # close in content to a movie the user liked
    GENRE = "genre"  # the genre of most of the user's likes
    POPULAR = "popular"  # the most rated lately
    NEW = "new"  # added since the model was trained


@strawberry.type(
    directives=OBJECT, description="One row of a home page: a title a person reads, and its movies."
)
class HomeRow:
    title: str = strawberry.field(description='e.g. "Because you liked Heat (1995)".')
    kind: HomeRowKind
    page: strawberry.Private[Any]

    @strawberry.field(
        description="Best first; no movie is in two rows of a page.", directives=[cost(0), sliced()]
    )
    def items(self, first: int = 10) -> list[Recommendation]:
        if not 0 <= first <= rec_resolvers.ROW_LENGTH:
            raise BadUserInput(f"first must be between 0 and {rec_resolvers.ROW_LENGTH}", field="first")
        return Recommendation.from_page(self.page)[:first]


@strawberry.type(directives=OBJECT, description="A home page: rows of recommendations scored in one batch.")
class HomePage:
    rows: list[HomeRow] = strawberry.field(directives=[assumed(5)])


@strawberry.type(directives=OBJECT)
class MovieSearchHit:
    score: float = strawberry.field(description="Cosine similarity of the query and the movie's description.")
    movie_id: strawberry.Private[int]

    @strawberry.field(directives=[cost(1)])
    async def movie(self, info: Info) -> Movie:
        return await _movie(info, self.movie_id)


@strawberry.input(description="One arm of an experiment: a registry alias and its share of users.")
class ExperimentArmInput:
    alias: str
    weight: float


@strawberry.type(
    directives=OBJECT, description="One arm: the version its alias held at the start, and what it scored."
)
class ExperimentArm:
    alias: str
    version: str
    weight: float
    users: int = strawberry.field(description="Users shown this arm's recommendations.")
    impressions: int = strawberry.field(
        description="Distinct (user, movie) pairs shown; a movie shown again counts once."
    )
    hits: int = strawberry.field(
        description="Impressions the user rated 4 or more after first seeing them, within the window."
    )
    hit_rate: float
    hit_rate_low: float = strawberry.field(
        description="95% interval of the hit rate, with the user as the unit (delta method over users)."
    )
    hit_rate_high: float
    clicks: int = strawberry.field(description="Impressions clicked (recordClick) within the window.")
    click_through_rate: float
    click_through_rate_low: float = strawberry.field(description="95% interval, clustered by user as above.")
    click_through_rate_high: float


@strawberry.type(
    directives=OBJECT, description="An A/B experiment between registry aliases, and its outcome so far."
)
class Experiment:
    name: str
    active: bool
    started_at: datetime
    stopped_at: datetime | None
    window_seconds: int
    arms: list[ExperimentArm] = strawberry.field(directives=[assumed(100)])
    difference: float | None = strawberry.field(description="First arm's hit rate minus the second's.")
    difference_low: float | None = strawberry.field(description="95% interval of the difference.")
    difference_high: float | None
    p_value: float | None = strawberry.field(
        description="Two-sided z-test of the first two arms' hit rates, variances clustered by user."
    )

    @classmethod
    def from_report(cls, report: Any) -> Experiment:
        compared = report.comparison()
        arms = []
        for a in report.arms:
            low, high = a.interval()
            clicks_low, clicks_high = a.click_interval()
            arms.append(
                ExperimentArm(
                    alias=a.alias,
                    version=a.version,
                    weight=a.weight,
                    users=a.users,
                    impressions=a.impressions,
                    hits=a.hits,
                    hit_rate=a.hit_rate,
                    hit_rate_low=low,
                    hit_rate_high=high,
                    clicks=a.clicks,
                    click_through_rate=a.click_rate,
                    click_through_rate_low=clicks_low,
                    click_through_rate_high=clicks_high,
                )
            )
        return cls(
            name=report.name,
            active=report.active,
            started_at=datetime.fromtimestamp(report.started_at, UTC),
            stopped_at=datetime.fromtimestamp(report.stopped_at, UTC) if report.stopped_at else None,
            window_seconds=report.window_seconds,
            arms=arms,
            difference=compared[0] if compared else None,
            difference_low=compared[1] if compared else None,
            difference_high=compared[2] if compared else None,
            p_value=compared[3] if compared else None,
        )


@strawberry.type(
    directives=OBJECT, description="The caller's rate-limit bucket, as GitHub's `rateLimit` reports it."
)
class RateLimit:
    cost: int = strawberry.field(description="What this operation took from the bucket.")
    limit: int = strawberry.field(description="The bucket's size in points.")
    remaining: int = strawberry.field(description="Points left after this operation.")
    reset_at: datetime = strawberry.field(description="When the bucket is full again.")
    restore_per_second: float


@strawberry.type(directives=OBJECT)
class ModelMetric:
    name: str
    value: float


@strawberry.type(directives=OBJECT)
class ModelVersion:
    name: str
    version: str
    aliases: list[str] = strawberry.field(directives=[assumed(100)])
    metrics: list[ModelMetric] = strawberry.field(directives=[assumed(50)])
    created_at: datetime
    run_id: str | None

    @classmethod
    def from_info(cls, info: Any) -> ModelVersion:
        return cls(
            name=info.name,
            version=info.version,
            aliases=info.aliases,
            metrics=[ModelMetric(name=k, value=v) for k, v in sorted(info.metrics.items())],
            created_at=datetime.fromtimestamp(info.created_ms / 1000, UTC),
            run_id=info.run_id,
        )


@strawberry.type(
    directives=OBJECT,
    description="One drift column: how far the ratings since the cut-off moved from the training sample.",
)
class DriftColumn:
    name: str = strawberry.field(
        description="rating, genre, user_activity (log1p training ratings of the rater), "
        "item_popularity (log1p training ratings of the movie) or new_user."
    )
    method: str = strawberry.field(description="Evidently's method for the column (a distance or a test).")
    threshold: float
    statistic: float = strawberry.field(description="The distance, or the test's p-value.")
    p_value: float | None = strawberry.field(description="For tests; distances have none.")
    drifted: bool


@strawberry.type(
    directives=OBJECT,
    description="The latest drift check (`cinerec monitor drift --store`, or the server's interval).",
)
class DriftReport:
    generated_at: datetime
    model_version: str = strawberry.field(
        description="The recommender version whose training sample is the reference."
    )
    dataset_drift: bool = strawberry.field(description="The share of drifted columns reached the threshold.")
    drift_share: float = strawberry.field(description="Share of columns that drifted.")
    threshold: float
    reference_rows: int
    current_rows: int = strawberry.field(description="Ratings made since the model's data cut-off, compared.")
    columns: list[DriftColumn] = strawberry.field(directives=[assumed(100)])

    @classmethod
    def from_stored(cls, stored: Any) -> DriftReport:
        r = stored.result
        return cls(
            generated_at=datetime.fromtimestamp(stored.generated_at, UTC),
            model_version=stored.model_version,
            dataset_drift=r.dataset_drift,
            drift_share=r.drift_share,
            threshold=r.threshold,
            reference_rows=r.reference_rows,
            current_rows=r.current_rows,
            columns=[
                DriftColumn(
                    name=c.name,
                    method=c.method,
                    threshold=c.threshold,
                    statistic=c.statistic,
                    p_value=c.p_value,
                    drifted=c.drifted,
                )
                for c in r.columns
            ],
        )


@strawberry.enum(description="What a service's API key may do.")
class ApiKeyScope(Enum):
    CATALOG = "catalog"  # read the catalog, with a rate-limit bucket of its own
    RECOMMEND = "recommend"  # besides, any user's profile, recommendations and explanations
    ADMIN = "admin"  # everything an admin may


@strawberry.type(directives=OBJECT, description="A service's API key as listed: never its secret.")
class ApiKey:
    name: str
    scope: ApiKeyScope
    prefix: str = strawberry.field(
        description="The key's public start (`ck_<prefix>_…`), to tell keys apart."
    )
    created_at: datetime
    created_by: str = strawberry.field(description="Who made it, as the audit log names them.")
    revoked_at: datetime | None

    @classmethod
    def from_info(cls, info: Any) -> ApiKey:
        return cls(
            name=info.name,
            scope=ApiKeyScope(info.scope.value),
            prefix=info.prefix,
            created_at=info.created_at.replace(tzinfo=UTC),
            created_by=info.created_by,
            revoked_at=info.revoked_at.replace(tzinfo=UTC) if info.revoked_at is not None else None,
        )


@strawberry.type(directives=OBJECT)
class NewApiKey:
    key: str = strawberry.field(
        description="The key: send it as `Authorization: ApiKey <key>`. Shown this once; only its hash "
        "is kept."
    )
    api_key: ApiKey


@strawberry.type(
    directives=OBJECT,
    description="A line of the audit log: who did what, when, from where, and how it ended. Lines are "
    "hash-chained; `cinerec audit verify` checks the chain.",
)
class AuditEntry:
    id: int
    at: datetime
    actor: str = strawberry.field(
        description="`account:<id>/user:<id>`, `key:<name>`, or `erased:<pseudonym>` for an erased user."
    )
    action: str = strawberry.field(description="The mutation's name.")
    arguments: strawberry.scalars.JSON = strawberry.field(description="Its arguments, secrets left out.")
    client: str = strawberry.field(description="The caller's address.")
    result: str = strawberry.field(description="`ok`, or the error's code.")
    hash: str

    @classmethod
    def from_line(cls, line: Any) -> AuditEntry:
        return cls(
            id=line.entry_id,
            at=line.at.replace(tzinfo=UTC),
            actor=line.actor,
            action=line.action,
            arguments=line.arguments,
            client=line.client,
            result=line.result,
            hash=line.hash,
        )
