"""Recommendations for a batch of requests: which model version answers each user, answers
cached per user generation, version and list, concurrent misses computed together by the one
``Pipeline`` (one read of the users' ratings, one scoring call, one batched rerank)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from app.infra.cache import Kind
from app.infra.coalescer import Coalescer
from app.infra.errors import BadUserInput
from app.serving.parts import ServesModels
from app.serving.pipeline import Pipeline, Recommended, RecRequest
from app.serving.tokens import Signer, peek
from ml.registry import RECOMMENDER

if TYPE_CHECKING:
    from app.services.experiments import ExperimentService
    from app.serving.champions import Served
    from app.serving.llm_holder import ServedLLM

MAX_DEPTH = 1000  # how far into a ranking pages may go


def cursor_rank(after: str | None) -> int:
    """The rank a recommendations cursor says its page follows (0 when it is not a cursor),
    read without checking it: what an operation is priced at before it runs, which then
    refuses a changed cursor."""
    payload = peek(after) if after else None
    if payload is None or len(payload) != 5 or type(payload[4]) is not int:
        return 0
    return min(max(payload[4], 0), MAX_DEPTH)


@dataclass(frozen=True)
class RecommendationShown:
    """What a recommendation's id says: who was shown which movie, by what, at which rank."""

    user_id: int
    movie_id: int
    version: str | None
    experiment: str | None
    arm: str | None
    rank: int


@dataclass(frozen=True)
class ServedBy:
    """What answered a batch: a model version or the popularity fallback (and why), and the
    LLM's rerank when it took part (with its error, if it failed and the order stood)."""

    version: str | None
    reason: str | None = None
    rerank: dict[str, Any] | None = None
    experiment: str | None = None  # the A/B experiment the user is in, and their arm
    arm: str | None = None
    # the learned ranker, when it ordered this list (the user has few ratings): what it serves
    ranker: dict[str, Any] | None = None

    def extension(self) -> dict[str, Any]:
        """The response's ``extensions.recommender``."""
        out: dict[str, Any] = (
            {"model": RECOMMENDER, "version": self.version}
            if self.version is not None
            else {"model": "popularity", "reason": self.reason}
        )
        if self.rerank is not None:
            out["rerank"] = self.rerank
        if self.experiment is not None:
            out.update(experiment=self.experiment, arm=self.arm)
        if self.ranker is not None:
            out["ranker"] = self.ranker
        return out


NO_MODEL = ServedBy(None, "no trained model yet: run `cinerec train`")


def ranker_extension(served: Served | None) -> dict[str, Any] | None:
    """What ``extensions.recommender.ranker`` says when the learned ranker ordered a list: the
    model version it belongs to, and the users it orders (those with 1 to ``upTo`` ratings)."""
    if served is None or served.model.ranker is None:
        return None
    return {"version": served.version, "upTo": served.model.ranker_up_to}


def _encode_answer(value: tuple[list[Recommended], ServedBy]) -> Any:
    answers, by = value
    served = [by.version, by.reason, by.rerank, by.experiment, by.arm, by.ranker]
    return [[[r.movie_id, r.score, r.rank] for r in answers], served]


def _decode_answer(value: Any) -> tuple[list[Recommended], ServedBy]:
    answers, served = value
    return [Recommended(int(m), float(s), int(k)) for m, s, k in answers], ServedBy(*served)


# An answer after a failed rerank is given, not cached: the next request tries the LLM again.
RECOMMENDATIONS = Kind(
    "recommendations",
    600,
    True,
    _encode_answer,
    _decode_answer,
    keep=lambda v: not (v[1].rerank or {}).get("error"),
)


class RecommendationService(ServesModels):
    """Lists of recommendations: which version answers whom (the champion, or an experiment's
    arm), the answers cached under what they depend on, cursors and recommendation ids. The
    lists themselves come from the one ``Pipeline``."""

    def __init__(self, pipeline: Pipeline, *, secret: str) -> None:
        self._cursors = Signer(secret, "recommendation-cursor")
        self._ids = Signer(secret, "recommendation-id")
        super().__init__(pipeline.parts)
        self.pipeline = pipeline
        self.pool = pipeline.pool
        self.experiments: ExperimentService | None = None
        # concurrent requests' misses are computed together: one histories read, one scoring call
        self._batches: Coalescer[tuple[str | None, RecRequest], tuple[list[Recommended], ServedBy]] = (
            Coalescer(self._compute_batch)
        )

    async def answer(self, requests: Sequence[RecRequest]) -> list[tuple[list[Recommended], ServedBy]]:
        """Answers for every request, in order. Each request is answered by the champion, or,
        while an experiment runs, by its user's arm's version.

        Each answer is cached under what it depends on: the user's generation (a new rating
        moves it), the model version, and the LLM version and weight when it reranked."""
        served_llm = self.llm.current
        experiment = self.experiments.running if self.experiments is not None else None
        arms = {r.user_id: experiment.arm_for(r.user_id) for r in requests} if experiment else {}
        champion = self.models.current
        versions = {
            r.user_id: arms[r.user_id].version if experiment else (champion.version if champion else None)
            for r in requests
        }
        use_llm = bool(
            champion is not None
            and served_llm.rerank_weights.any
            and served_llm.backend.can_score
            and self.pool
        )
        gens = await self.generations.get("user", [r.user_id for r in requests])
        llm_key = f"{served_llm.version or 'base'}x{served_llm.rerank_weights.key()}" if use_llm else "-"
        trial = f":{experiment.name}" if experiment else ""

        catalog = (await self.generations.get("catalog", [0]))[0]  # an added or retired movie moves it

        def key(r: RecRequest) -> str:
            model_key = versions[r.user_id] or "popularity"
            return f"{r.user_id}:{gens[r.user_id]}:{model_key}:{llm_key}:{catalog}:{r.shape}{trial}"

        async def compute(missing: list[RecRequest]) -> dict[RecRequest, tuple[list[Recommended], ServedBy]]:
            keys = [(versions[r.user_id], r) for r in missing]
            return dict(zip(missing, await self._batches.get_many(keys), strict=True))

        found = await self.cache.get_many(RECOMMENDATIONS, requests, key, compute)
        if experiment is not None and self.experiments is not None:
            out = []
            for request, (answers, by) in zip(requests, found, strict=True):
                arm = arms[request.user_id]
                self.experiments.record(experiment, arm, request.user_id, [a.movie_id for a in answers])
                out.append((answers, replace(by, experiment=experiment.name, arm=arm.alias)))
            return out
        return found

    async def _compute_batch(
        self, keys: list[tuple[str | None, RecRequest]]
    ) -> dict[tuple[str | None, RecRequest], tuple[list[Recommended], ServedBy]]:
        """Concurrent requests' misses, grouped by the model version that answers them."""
        async with self.llm.lease() as served_llm:
            return await self._compute_groups(keys, served_llm)

    async def _compute_groups(
        self, keys: list[tuple[str | None, RecRequest]], served_llm: ServedLLM
    ) -> dict[tuple[str | None, RecRequest], tuple[list[Recommended], ServedBy]]:
        out: dict[tuple[str | None, RecRequest], tuple[list[Recommended], ServedBy]] = {}
        for version in dict.fromkeys(v for v, _ in keys):
            served = await self.models.version(version) if version is not None else None
            use_llm = bool(
                served is not None
                and served_llm.rerank_weights.any
                and served_llm.backend.can_score
                and self.pool
            )
            group = [r for v, r in keys if v == version]
            answers = await self._compute(group, served, served_llm, use_llm)
            out.update({(version, r): a for r, a in zip(group, answers, strict=True)})
        return out

    async def _compute(
        self, requests: Sequence[RecRequest], served: Served | None, served_llm: ServedLLM, use_llm: bool
    ) -> list[tuple[list[Recommended], ServedBy]]:
        # the rerank reorders a first page of plain relevance only: a page further on, a filtered
        # or a diversified list stands as scored
        use_llm = use_llm and all(
            r.offset == 0 and not r.diversity and not r.filter.narrows for r in requests
        )
        # with a rerank, the top `pool` are scored and reordered; each request then keeps its `first`
        wide = [replace(r, first=max(r.first, self.pool)) for r in requests] if use_llm else requests
        by = NO_MODEL if served is None else ServedBy(served.version)
        # one read of the users' ratings: scoring takes the matrix, the rerank's prompts the pairs
        history = await self.histories.read(served.model if served else None, [r.user_id for r in requests])
        ranked: set[int] = set()
        if served is None:
            answers = await self.pipeline.popular(wide, history)
        else:
            answers, ranked = await self.pipeline.pages(served, wide, history)
        if use_llm:
            answers, error = await self.pipeline.rerank(served_llm, requests, answers, history.pairs())
            rerank = {**served_llm.describe(), "weights": served_llm.rerank_weights.describe()}
            if error:
                rerank["error"] = error
            by = ServedBy(by.version, rerank=rerank)
        with_ranker = replace(by, ranker=ranker_extension(served)) if ranked else by
        return [
            (a[: r.first], with_ranker if r.user_id in ranked else by)
            for a, r in zip(answers, requests, strict=True)
        ]

    def serving_version(self, user_id: int) -> str | None:
        """The recommender version that answers ``user_id`` now: their experiment arm's, or the
        champion's (None: popularity)."""
        experiment = self.experiments.running if self.experiments is not None else None
        if experiment is not None:
            return experiment.arm_for(user_id).version
        return self.models.current.version if self.models.current is not None else None

    def cursor(self, request: RecRequest, version: str | None, rank: int) -> str:
        """The cursor after the item at ``rank`` of ``request``'s list."""
        return self._cursors.sign(["c", request.user_id, version, request.list_key, rank])

    def offset(self, after: str, request: RecRequest) -> int:
        """Where the page after ``after`` starts in ``request``'s ranking. A cursor of another
        user's list, of another list (filter, diversity) or from before the model changed is
        refused, as is a changed one: the client starts again from the first page."""
        payload = self._cursors.read(after, field="after")
        if len(payload) != 5 or payload[0] != "c" or not isinstance(payload[4], int):
            raise BadUserInput("invalid after: not a recommendations cursor", field="after")
        _, user, version, list_key, rank = payload
        if user != request.user_id:
            raise BadUserInput("the cursor belongs to another user's recommendations", field="after")
        if list_key != request.list_key:
            raise BadUserInput(
                "the cursor belongs to another list (another filter, diversity or excludeRated)",
                field="after",
            )
        now = self.serving_version(request.user_id)
        if version != now:
            raise BadUserInput(
                f"the ranking changed (version {now or 'popularity'} serves now, "
                f"not {version or 'popularity'}): start again from the first page",
                field="after",
                reason="MODEL_CHANGED",
            )
        if not 0 < rank <= MAX_DEPTH:
            raise BadUserInput(f"pages go at most {MAX_DEPTH} items deep", field="after")
        return int(rank)

    def recommendation_id(self, user_id: int, movie_id: int, rank: int, by: ServedBy) -> str:
        """What a client sends back with a click on this recommendation."""
        return self._ids.sign(["r", user_id, movie_id, by.version, by.experiment, by.arm, rank])

    def read_recommendation_id(self, token: str) -> RecommendationShown:
        payload = self._ids.read(token, field="recommendationId")
        if len(payload) != 7 or payload[0] != "r":
            raise BadUserInput("invalid recommendationId", field="recommendationId")
        return RecommendationShown(*payload[1:])
