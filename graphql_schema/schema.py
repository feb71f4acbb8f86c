"""The schema: Query and Mutation roots, built with the limits from settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.types import Info

from graphql_schema.costs import (
    EXPLANATION,
    RECOMMENDATIONS,
    SEARCH_TEXT,
    assumed,
    cost,
    page_depth,
    sliced,
    text_cost,
)
from graphql_schema.extensions import schema_extensions
from graphql_schema.permissions import IsAdmin, IsAuthenticated, OwnerOrAdmin
from graphql_schema.types import (
    ApiKey,
    ApiKeyScope,
    AuditEntry,
    AuthPayload,
    Connection,
    DriftReport,
    Experiment,
    ExperimentArmInput,
    ExplanationChunk,
    ExplanationEvidence,
    ExplanationSource,
    HomePage,
    HomeRow,
    HomeRowKind,
    ModelKind,
    ModelVersion,
    Movie,
    MovieFilter,
    MovieInput,
    MovieOrder,
    MoviePatch,
    MovieSearchHit,
    NewApiKey,
    RateLimit,
    Rating,
    Recommendation,
    RecommendationFilter,
    SortDirection,
    User,
)
from resolvers import experiments as experiment_resolvers
from resolvers import explanations as explain_resolvers
from resolvers import movies as movie_resolvers
from resolvers import operators as operator_resolvers
from resolvers import recommendations as rec_resolvers
from resolvers import users as user_resolvers

if TYPE_CHECKING:
    from graphql import GraphQLError
    from strawberry.types import ExecutionContext

    from app.infra.settings import Settings

log = logging.getLogger(__name__)


@strawberry.type
class Query:
    @strawberry.field(directives=[cost(1)])
    async def movie(self, info: Info, movie_id: int) -> Movie | None:
        row = await movie_resolvers.movie(info.context, movie_id=movie_id)
        return Movie.from_row(row) if row else None

    @strawberry.field(
        description="Movies, filtered and ordered, Relay-style (at most 100 a page).",
        directives=[cost(1), sliced(sized=["edges"])],
    )
    async def movies(
        self,
        info: Info,
        first: int = 20,
        after: str | None = None,
        filter: MovieFilter | None = None,
        order_by: MovieOrder = MovieOrder.POPULARITY,
        direction: SortDirection | None = None,
    ) -> Connection[Movie]:
        f = filter or MovieFilter()
        page = await movie_resolvers.movies(
            info.context,
            first=first,
            after=after,
            genre=f.genre,
            year_from=f.year_from,
            year_to=f.year_to,
            title_contains=f.title_contains,
            min_ratings=f.min_ratings,
            order=order_by.value,
            descending=None if direction is None else direction is SortDirection.DESC,
        )
        return Connection.from_page(page, Movie.from_row)

    @strawberry.field(description="All genre names.", directives=[cost(1), assumed(30)])
    async def genres(self, info: Info) -> list[str]:
        return await movie_resolvers.all_genres(info.context)

    @strawberry.field(
        permission_classes=[OwnerOrAdmin],
        description="A user: yourself, or anyone for an admin.",
        directives=[cost(1)],
    )
    async def user(self, info: Info, user_id: int) -> User | None:
        row = await user_resolvers.user(info.context, user_id=user_id)
        return User.from_row(row) if row else None

    @strawberry.field(
        permission_classes=[OwnerOrAdmin],
        description="Top movies for a user (yourself, or anyone for an admin), from the serving model.",
        directives=[cost(RECOMMENDATIONS), sliced(), page_depth()],
    )
    async def recommendations(
        self,
        info: Info,
        user_id: int,
        first: int = 10,
        exclude_rated: bool = True,
        filter: RecommendationFilter | None = None,
        after: Annotated[
            str | None, strawberry.argument(description="The `cursor` of the last item of the page before.")
        ] = None,
        diversity: Annotated[
            float,
            strawberry.argument(
                description="0 (pure relevance) to 1: reorders by maximal marginal relevance over the "
                "movies' content, so that the list covers more kinds of film."
            ),
        ] = 0.0,
    ) -> list[Recommendation]:
        return await Recommendation.for_user(
            info,
            user_id,
            first=first,
            exclude_rated=exclude_rated,
            filter=filter,
            after=after,
            diversity=diversity,
        )

    @strawberry.field(
        permission_classes=[OwnerOrAdmin],
        description="A home page for a user (yourself, or anyone for an admin): rows with titles a person "
        "reads, scored in one batch, no movie twice.",
        directives=[cost(2 * RECOMMENDATIONS)],
    )
    async def home_page(self, info: Info, user_id: int) -> HomePage:
        rows, _ = await rec_resolvers.home_page(info.context, user_id=user_id)
        return HomePage(rows=[HomeRow(title=t, kind=HomeRowKind(k), page=p) for t, k, p in rows])

    @strawberry.field(
        description="Movies most alike: by content (title, year, genres) and by the model's item "
        "representations together; movies added since training by content.",
        directives=[cost(2), sliced()],
    )
    async def similar_movies(self, info: Info, movie_id: int, first: int = 10) -> list[Movie]:
        rows = await rec_resolvers.similar_movies(info.context, movie_id=movie_id, first=first)
        return [Movie.from_row(row) for row in rows]

    @strawberry.field(
        description="Semantic search: movies whose description is closest to the query.",
        directives=[cost(20), sliced(), text_cost("query", SEARCH_TEXT)],
    )
    async def search_movies(self, info: Info, query: str, first: int = 10) -> list[MovieSearchHit]:
        found = await rec_resolvers.search_movies(info.context, query=query, first=first)
        return [MovieSearchHit(score=s, movie_id=m) for m, s in found]

    @strawberry.field(
        permission_classes=[IsAdmin],
        description="Registered versions of a model, newest first.",
        directives=[cost(5), assumed(50)],
    )
    async def model_versions(
        self, info: Info, model: ModelKind = ModelKind.RECOMMENDER
    ) -> list[ModelVersion]:
        found = await rec_resolvers.model_versions(info.context, model=model.value)
        return [ModelVersion.from_info(v) for v in found]

    @strawberry.field(
        description="Your rate-limit bucket: this operation's cost and what is left.", directives=[cost(0)]
    )
    def rate_limit(self, info: Info) -> RateLimit | None:
        ctx = info.context
        if ctx.budget is None or ctx.price is None:
            return None  # rate limits are off
        budget = ctx.budget
        return RateLimit(
            cost=max(ctx.price.cost, 1),
            limit=int(budget.capacity),
            remaining=int(budget.remaining),
            reset_at=datetime.now(UTC) + timedelta(seconds=budget.full_in),
            restore_per_second=budget.restore_per_second,
        )

    @strawberry.field(
        permission_classes=[IsAdmin],
        description="An A/B experiment and its outcome so far.",
        directives=[cost(20)],
    )
    async def experiment(self, info: Info, name: str) -> Experiment:
        return Experiment.from_report(await experiment_resolvers.report(info.context, name=name))

    @strawberry.field(
        permission_classes=[IsAdmin],
        description="The latest drift check of the serving data against the model's training sample; "
        "null before the first.",
        directives=[cost(5)],
    )
    async def drift(self, info: Info) -> DriftReport | None:
        stored = await experiment_resolvers.drift(info.context)
        return DriftReport.from_stored(stored) if stored is not None else None

    @strawberry.field(
        permission_classes=[IsAdmin],
        description="Services' API keys, revoked ones too.",
        directives=[cost(5), assumed(100)],
    )
    async def api_keys(self, info: Info) -> list[ApiKey]:
        return [ApiKey.from_info(k) for k in await operator_resolvers.api_keys(info.context)]

    @strawberry.field(
        permission_classes=[IsAdmin],
        description="The audit log, newest first: every admin mutation, key made or revoked, and account "
        "erased.",
        directives=[cost(1), sliced(sized=["edges"])],
    )
    async def audit_log(
        self, info: Info, first: int = 20, after: str | None = None, action: str | None = None
    ) -> Connection[AuditEntry]:
        page = await operator_resolvers.audit_log(info.context, first=first, after=after, action=action)
        return Connection.from_page(page, AuditEntry.from_line)

    @strawberry.field(
        permission_classes=[IsAuthenticated],
        description="Everything held about you, as JSON: account, ratings, tags, dismissals, clicks, "
        "impressions, experiment arms.",
        directives=[cost(50)],
    )
    async def export_my_data(self, info: Info) -> strawberry.scalars.JSON:
        return strawberry.scalars.JSON(await operator_resolvers.export_my_data(info.context))

    @strawberry.field(permission_classes=[IsAuthenticated], description="The caller.", directives=[cost(1)])
    async def me(self, info: Info) -> User:
        principal = info.context.require_principal()
        row = await user_resolvers.user(info.context, user_id=principal.user_id)
        return User.from_row(row)


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create an account (a new user) and log in.", directives=[cost(20)])
    async def register(self, info: Info, email: str, password: str) -> AuthPayload:
        token, principal = await user_resolvers.register(info.context, email=email, password=password)
        row = await user_resolvers.user(info.context, user_id=principal.user_id)
        return AuthPayload(token=token, user=User.from_row(row))

    @strawberry.mutation(directives=[cost(20)])  # a password check, and the account's user
    async def login(self, info: Info, email: str, password: str) -> AuthPayload:
        token, principal = await user_resolvers.login(info.context, email=email, password=password)
        row = await user_resolvers.user(info.context, user_id=principal.user_id)
        return AuthPayload(token=token, user=User.from_row(row))

    @strawberry.mutation(
        permission_classes=[IsAuthenticated],
        description="Sign out: every token of the caller's account issued until now stops working, on "
        "every replica, and its open subscriptions close. True when done.",
        directives=[cost(5)],
    )
    async def logout(self, info: Info) -> bool:
        await user_resolvers.logout(info.context, principal=info.context.require_principal())
        return True

    @strawberry.mutation(
        permission_classes=[IsAuthenticated],
        description="Erase your account and everything held about you, in one transaction: your tokens "
        "and open subscriptions end at once, and your user id is never given again. Asks for your "
        "password again. True when done.",
        directives=[cost(50)],
    )
    async def delete_my_account(self, info: Info, password: str) -> bool:
        return await operator_resolvers.delete_my_account(info.context, password=password)

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Erase a user's account and everything held about them (as deleteMyAccount). Answers "
        "the pseudonym the audit log keeps for them.",
        directives=[cost(50)],
    )
    async def delete_account(self, info: Info, user_id: int) -> str:
        return await operator_resolvers.delete_account(info.context, user_id=user_id)

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Make an API key for a service. The key is in the answer this once.",
        directives=[cost(20)],
    )
    async def create_api_key(self, info: Info, name: str, scope: ApiKeyScope) -> NewApiKey:
        key, made = await operator_resolvers.create_api_key(info.context, name=name, scope=scope.value)
        return NewApiKey(key=key, api_key=ApiKey.from_info(made))

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Revoke an API key: it fails from its next request, on every replica.",
        directives=[cost(20)],
    )
    async def revoke_api_key(self, info: Info, name: str) -> ApiKey:
        return ApiKey.from_info(await operator_resolvers.revoke_api_key(info.context, name=name))

    @strawberry.mutation(
        permission_classes=[IsAuthenticated],
        description="Rate a movie as the caller (0.5 to 5.0 in half stars); rating again replaces it.",
        directives=[cost(5)],
    )
    async def rate_movie(self, info: Info, movie_id: int, rating: float) -> Rating:
        principal = info.context.require_principal()
        row = await user_resolvers.rate_movie(
            info.context, principal=principal, movie_id=movie_id, rating=rating
        )
        return Rating.from_row(row)

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Add a movie to the catalog: searchable, similar and recommendable by its content at "
        "once, before any retraining, on every replica.",
        directives=[cost(50)],
    )
    async def add_movie(self, info: Info, movie: MovieInput) -> Movie:
        principal = info.context.require_principal()
        row = await movie_resolvers.add_movie(info.context, principal=principal, movie=movie)
        return Movie.from_row(row)

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Change a movie's title, year, genres, tags or links.",
        directives=[cost(50)],
    )
    async def update_movie(self, info: Info, movie_id: int, patch: MoviePatch) -> Movie:
        principal = info.context.require_principal()
        row = await movie_resolvers.update_movie(
            info.context, principal=principal, movie_id=movie_id, patch=patch
        )
        return Movie.from_row(row)

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Retire a movie: out of every recommendation, row, search and similar list at once, on "
        "every replica; its ratings stay.",
        directives=[cost(50)],
    )
    async def retire_movie(self, info: Info, movie_id: int) -> Movie:
        return Movie.from_row(await movie_resolvers.retire_movie(info.context, movie_id=movie_id))

    @strawberry.mutation(
        permission_classes=[IsAuthenticated],
        description="Delete the caller's rating of a movie: gone from its statistics, the caller's history "
        "and their next recommendations. Answers the movie as it stands now.",
        directives=[cost(5)],
    )
    async def delete_rating(self, info: Info, movie_id: int) -> Movie:
        principal = info.context.require_principal()
        row = await user_resolvers.delete_rating(info.context, principal=principal, movie_id=movie_id)
        return Movie.from_row(row)

    @strawberry.mutation(
        permission_classes=[IsAuthenticated],
        description="'Not interested': never recommend this movie to the caller again, and count it as taste "
        "against. True when it was not dismissed before.",
        directives=[cost(5)],
    )
    async def dismiss_movie(self, info: Info, movie_id: int) -> bool:
        principal = info.context.require_principal()
        return await user_resolvers.dismiss(
            info.context, principal=principal, movie_id=movie_id, dismissed=True
        )

    @strawberry.mutation(
        permission_classes=[IsAuthenticated],
        description="Take back a dismissal. True when the movie was dismissed.",
        directives=[cost(5)],
    )
    async def undismiss_movie(self, info: Info, movie_id: int) -> bool:
        principal = info.context.require_principal()
        return await user_resolvers.dismiss(
            info.context, principal=principal, movie_id=movie_id, dismissed=False
        )

    @strawberry.mutation(
        permission_classes=[IsAuthenticated],
        description="A click on a recommendation, named by its `id`; counted once per recommendation, per "
        "experiment arm beside its hits. True when it was not recorded before.",
        directives=[cost(2)],
    )
    async def record_click(self, info: Info, recommendation_id: strawberry.ID) -> bool:
        principal = info.context.require_principal()
        return await rec_resolvers.record_click(
            info.context, principal=principal, recommendation_id=recommendation_id
        )

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Point an alias at a version; `champion` is what serves, swapped in without a restart.",
        directives=[cost(50)],
    )
    async def promote_model(
        self, info: Info, version: str, alias: str = "champion", model: ModelKind = ModelKind.RECOMMENDER
    ) -> ModelVersion:
        found = await rec_resolvers.promote(info.context, version=version, alias=alias, model=model.value)
        return ModelVersion.from_info(found)

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Start an A/B experiment: each user is served by one arm (a hash of user and "
        "experiment), each arm's version fixed now. One experiment runs at a time.",
        directives=[cost(50)],
    )
    async def start_experiment(self, info: Info, name: str, arms: list[ExperimentArmInput]) -> Experiment:
        report = await experiment_resolvers.start(
            info.context, name=name, arms=[(a.alias, a.weight) for a in arms]
        )
        return Experiment.from_report(report)

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Stop an experiment: the champion serves everyone.",
        directives=[cost(50)],
    )
    async def stop_experiment(self, info: Info, name: str) -> Experiment:
        return Experiment.from_report(await experiment_resolvers.stop(info.context, name=name))

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Return an alias to the version it held before.",
        directives=[cost(50)],
    )
    async def rollback_model(
        self, info: Info, alias: str = "champion", model: ModelKind = ModelKind.RECOMMENDER
    ) -> ModelVersion:
        return ModelVersion.from_info(
            await rec_resolvers.rollback(info.context, alias=alias, model=model.value)
        )


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=[OwnerOrAdmin],
        description="A recommendation's explanation, streamed as the LLM writes it (graphql-transport-ws; "
        "send {authorization: 'Bearer <token>'} in connection_init). Yourself, or anyone for an admin.",
        directives=[cost(EXPLANATION)],
    )
    async def explanation(
        self, info: Info, user_id: int, movie_id: int
    ) -> AsyncGenerator[ExplanationChunk, None]:
        async for chunk in explain_resolvers.stream(info.context, user_id=user_id, movie_id=movie_id):
            evidence = (
                [ExplanationEvidence.from_evidence(e) for e in chunk.evidence]
                if chunk.evidence is not None
                else None
            )
            yield ExplanationChunk(
                text=chunk.text,
                done=chunk.done,
                evidence=evidence,
                source=ExplanationSource(chunk.source),
                error=chunk.error,
            )


class Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Internal errors were logged with their traceback by ErrorCodes; the rest are the client's.
        for error in errors:
            log.debug("client error: %s", error.message)


def build_schema(settings: Settings) -> strawberry.Schema:
    return Schema(
        query=Query, mutation=Mutation, subscription=Subscription, extensions=schema_extensions(settings)
    )
