"""A home page: several rows of recommendations, each with a title a person reads, scored in
one batch (one read of the user's ratings, one scoring call), no movie twice on the page.

The rows, in order, each left out when there is nothing to put in it:
- "Top picks for you": the user's best scores;
- "Because you liked <title (year)>": among the 200 movies closest in content to the movie
  the user rated best most recently, those the user's scores rank highest;
- "<Genre> picks for you": the genre of most of the user's likes, best scores first;
- "Popular this month": the most rated movies of the last 30 days, when at least POPULAR_MIN
  ratings fall in them; otherwise "Popular in <month year>", the 30 days before the newest
  older rating (MovieLens 100K ends in April 1998);
- "New in the catalog": movies added since the model was trained, best content match first.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import func, select

from app.infra.tables import genres, movie_genres, movies, ratings
from app.serving.filters import NO_FILTER, RecFilter
from app.serving.pipeline import Recommended, RecRequest
from app.serving.recommendations import ServedBy, ranker_extension
from ml import similarity
from ml.llm.prompts import LIKED_THRESHOLD, display_title, movie_label

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.serving.recommendations import RecommendationService

MONTH = 30 * 24 * 3600
NEIGHBOURS = 200  # movies close in content to the anchor of "Because you liked"
POPULAR_MIN = 100  # ratings in the last 30 days for "Popular this month" to mean something
POPULAR_TTL = 300.0  # seconds a process keeps the popular row's movies


@dataclass(frozen=True)
class HomeRow:
    title: str
    kind: str  # top, because, genre, popular, new
    items: list[Recommended]


@dataclass(frozen=True)
class HomePage:
    rows: list[HomeRow]
    served: ServedBy
    user_id: int


class HomePages:
    def __init__(self, recommendations: RecommendationService) -> None:
        self.recs = recommendations
        self.pipeline = recommendations.pipeline
        self._popular_lock = asyncio.Lock()
        self._popular_cached: tuple[float, list[int], str] | None = None

    async def page(self, user_id: int, *, per_row: int) -> HomePage:
        recs = self.recs
        version = recs.serving_version(user_id)
        if version is None:  # no model yet: the popularity fallback's list is the page
            answers, by = (await recs.answer([RecRequest(user_id, per_row, True)]))[0]
            return HomePage([HomeRow("Popular picks", "top", answers)], by, user_id)
        served = await recs.models.version(version)
        model = served.model
        read = await recs.histories.read(model, [user_id])
        view = await self.pipeline.view(served)
        # the pipeline's mask → score → overlay, once for the whole page
        scored = await asyncio.to_thread(
            self.pipeline.user_scores, model, view, RecRequest(user_id, per_row, True, NO_FILTER), read
        )
        scores, added = scored.scores, scored.added
        used: set[int] = set()
        ids = np.asarray(model.item_ids)

        def take(order: np.ndarray, values: np.ndarray, movie_ids: np.ndarray = ids) -> list[Recommended]:
            out: list[Recommended] = []
            for i in order:
                movie = int(movie_ids[i])
                if movie in used or not np.isfinite(values[i]):
                    continue
                used.add(movie)
                out.append(Recommended(movie, float(values[i]), len(out) + 1))
                if len(out) == per_row:
                    break
            return out

        rows = [HomeRow("Top picks for you", "top", take(np.argsort(-scores, kind="stable"), scores))]
        pairs = read.pairs()[user_id]
        async with recs.sessions() as session:
            anchor = await self._anchor(session, user_id)
            genre = await self._genre(session, pairs)
            popular, popular_title = await self._popular(session)
        if anchor is not None and (column := int(model.item_index([anchor[0]])[0])) >= 0:
            near = similarity.neighbours(model, column, NEIGHBOURS)[0]  # as similarMovies finds them
            near = near[np.argsort(-scores[near], kind="stable")]
            rows.append(
                HomeRow(f"Because you liked {display_title(anchor[1])}", "because", take(near, scores))
            )
        if genre is not None:
            in_genre = np.where(view.facts.allowed(RecFilter(any_genres=(genre,))), scores, -np.inf)
            rows.append(
                HomeRow(
                    f"{genre} picks for you", "genre", take(np.argsort(-in_genre, kind="stable"), in_genre)
                )
            )
        if popular:
            column_of = model.item_index(popular)
            order = np.array([c for c in column_of if c >= 0], dtype=np.int64)
            rows.append(HomeRow(popular_title, "popular", take(order, scores)))
        if added is not None and np.isfinite(added).any():
            rows.append(
                HomeRow(
                    "New in the catalog",
                    "new",
                    take(np.argsort(-added, kind="stable"), added, view.overlay.ids),
                )
            )
        by = ServedBy(
            version, ranker=ranker_extension(served) if len(model.ranked_rows(read.matrix())) else None
        )
        shown = [r for r in rows if r.items]
        experiments = recs.experiments
        if experiments is not None and (experiment := experiments.running) is not None:
            # the page's items carry the user's arm and count as impressions like any list's
            arm = experiment.arm_for(user_id)
            for row in shown:
                experiments.record(experiment, arm, user_id, [r.movie_id for r in row.items])
            by = replace(by, experiment=experiment.name, arm=arm.alias)
        return HomePage(shown, by, user_id)

    @staticmethod
    async def _anchor(session: AsyncSession, user_id: int) -> tuple[int, str] | None:
        """The movie the user rated best, most recently: (id, its label)."""
        stmt = (
            select(ratings.c.movie_id, movies.c.title, movies.c.year)
            .join(movies, movies.c.movie_id == ratings.c.movie_id)
            .where(
                ratings.c.user_id == user_id, ratings.c.rating > LIKED_THRESHOLD, movies.c.retired.is_(False)
            )
            .order_by(ratings.c.rating.desc(), ratings.c.timestamp.desc())
            .limit(1)
        )
        found = (await session.execute(stmt)).first()
        return (found.movie_id, movie_label(found.title, found.year)) if found else None

    @staticmethod
    async def _genre(session: AsyncSession, pairs: list[tuple[int, float]]) -> str | None:
        """The genre of most of the user's likes."""
        liked = [m for m, r in pairs if r > LIKED_THRESHOLD]
        if not liked:
            return None
        stmt = (
            select(genres.c.name)
            .join(movie_genres, movie_genres.c.genre_id == genres.c.genre_id)
            .where(movie_genres.c.movie_id.in_(liked))
        )
        counted = Counter((await session.execute(stmt)).scalars())
        return counted.most_common(1)[0][0] if counted else None

    async def _popular(self, session: AsyncSession) -> tuple[list[int], str]:
        """The most rated movies of the last 30 days when at least POPULAR_MIN ratings fall in
        them ("Popular this month"), else of the 30 days before the newest older rating
        ("Popular in April 1998"), and the row's title. Kept POPULAR_TTL seconds per process:
        the window scan reads the ratings table, which is millions of rows at the 25M scale."""
        now = time.time()
        async with self._popular_lock:
            if self._popular_cached is not None and now - self._popular_cached[0] < POPULAR_TTL:
                return self._popular_cached[1], self._popular_cached[2]
            recent = (
                await session.execute(select(func.count()).where(ratings.c.timestamp >= int(now) - MONTH))
            ).scalar_one()
            if recent >= POPULAR_MIN:
                end, title = int(now), "Popular this month"
            else:
                older = (
                    await session.execute(
                        select(func.max(ratings.c.timestamp)).where(ratings.c.timestamp < int(now) - MONTH)
                    )
                ).scalar_one_or_none()
                if older is None:  # every rating is recent, and there are few of them
                    end, title = int(now), "Popular this month"
                else:
                    end, title = int(older), f"Popular in {datetime.fromtimestamp(older, UTC):%B %Y}"
            stmt = (
                select(ratings.c.movie_id, func.count().label("n"))
                .join(movies, movies.c.movie_id == ratings.c.movie_id)
                .where(
                    ratings.c.timestamp > end - MONTH,
                    ratings.c.timestamp <= end,
                    movies.c.retired.is_(False),
                )
                .group_by(ratings.c.movie_id)
                .order_by(func.count().desc(), ratings.c.movie_id)
                .limit(200)
            )
            found = [m for m, _ in (await session.execute(stmt)).all()]
            self._popular_cached = (now, found, title)
            return found, title
