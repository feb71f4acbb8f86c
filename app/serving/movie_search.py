"""Movies found from a movie or a text: similar movies (content and the model's item
representations together, ``ml.similarity``) and semantic search over the content embeddings,
both with the movies added since training, cached per model version and catalog generation."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from app.infra.cache import Kind
from app.infra.errors import NotFound
from app.serving.parts import ServesModels
from ml import embeddings, similarity

if TYPE_CHECKING:
    from app.serving.catalog_view import CatalogView
    from app.serving.champions import Served
    from app.serving.pipeline import Pipeline
    from ml.hybrid import HybridRecommender


# The best hits of a search or a similar list, as two arrays (movie ids, scores): 1.3 KB for
# 100 hits, where a list of 100 (id, score) pairs takes 11 KB. Cached at the longest list
# anyone may ask for, in the process only: the keys of search are strangers' texts, so Redis
# would fill at their rate (27 MB in 4 minutes of distinct searches, benchmarks/soak.py).
Hits = tuple[np.ndarray, np.ndarray]


def _hits(model: HybridRecommender, top: np.ndarray, scores: np.ndarray) -> Hits:
    return np.asarray(model.item_ids)[top].astype(np.int32), np.asarray(scores, dtype=np.float64)


def _with_overlay(
    model: HybridRecommender,
    hits: tuple[np.ndarray, np.ndarray],
    view: CatalogView,
    query: np.ndarray,
    k: int,
    leave_out: int | None = None,
    scale: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Hits:
    """The model's own hits merged with the movies added since its training, best first: those
    by their content cosine with ``query``, put on the hits' scale by ``scale`` when given."""
    ids, scores = _hits(model, *hits)
    overlay = view.overlay
    if not len(overlay):
        return ids, scores
    cosines = overlay.vectors @ query
    if scale is not None:
        cosines = scale(cosines)
    keep = ~overlay.facts.hidden & (overlay.ids != (leave_out if leave_out is not None else -1))
    ids = np.concatenate([ids, overlay.ids[keep].astype(np.int32)])
    scores = np.concatenate([scores, cosines[keep].astype(np.float64)])
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order], scores[order]


def _first(hits: Hits, first: int) -> list[tuple[int, float]]:
    ids, scores = hits
    return list(zip(ids[:first].tolist(), scores[:first].tolist(), strict=True))


SIMILAR = Kind("similar", 3600, False)
SEARCH = Kind("search", 3600, False)


class MovieSearch(ServesModels):
    def __init__(self, pipeline: Pipeline, *, max_hits: int = 100, floor: float = 0.30) -> None:
        super().__init__(pipeline.parts)
        self.pipeline = pipeline
        self.max_hits = max_hits  # the longest similar or search list anyone may ask for
        self.floor = floor  # search hits below it are noise, not answers

    def _served(self) -> Served:
        served = self.models.current
        if served is None:
            raise NotFound("no trained model yet: run `cinerec train`")
        return served

    async def similar(self, movie_id: int, first: int) -> list[tuple[int, float]]:
        """Movies most alike by content and the model's item representations (``ml.similarity``;
        those added since training by content), cached per model version and catalog
        generation; retired movies leave at once."""
        served = self._served()
        model = served.model
        view = await self.pipeline.view(served)
        [index] = model.item_index([movie_id])
        [added] = view.overlay.index([movie_id])
        if index < 0 and added < 0:
            raise NotFound(f"movie {movie_id} is not in the catalog the model serves")
        catalog = (await self.generations.get("catalog", [0]))[0]

        async def compute(keys: list[int]) -> dict[int, Hits]:
            if index < 0:  # added since training: by content alone
                query = np.asarray(view.overlay.vectors[added])
                hits = model.search(query, self.max_hits, ~view.facts.hidden)
                return {keys[0]: _with_overlay(model, hits, view, query, self.max_hits, movie_id)}
            # content and the model's item representations together (ml.similarity), off the loop
            column = int(index)
            hits = await asyncio.to_thread(
                similarity.neighbours, model, column, self.max_hits, ~view.facts.hidden
            )
            query = np.asarray(model.item_embeddings[column])
            scale = functools.partial(similarity.on_served_scale, model, column)
            return {keys[0]: _with_overlay(model, hits, view, query, self.max_hits, movie_id, scale)}

        [found] = await self.cache.get_many(
            SIMILAR, [movie_id], lambda m: f"{m}:{served.version}:{catalog}", compute
        )
        return _first(found, first)

    async def search(self, query: str, first: int) -> list[tuple[int, float]]:
        """Semantic search over the content embeddings (of movies added since training too),
        cached per (query, model version, catalog generation); hits below the floor are left
        out, so a query nothing matches finds nothing rather than the least unlike movies."""
        served = self._served()
        model = served.model
        view = await self.pipeline.view(served)
        catalog = (await self.generations.get("catalog", [0]))[0]

        async def compute(keys: list[str]) -> dict[str, Hits]:
            vector = np.asarray((await asyncio.to_thread(embeddings.encode, [query]))[0])
            hits = model.search(vector, self.max_hits, ~view.facts.hidden)
            return {keys[0]: _with_overlay(model, hits, view, vector, self.max_hits)}

        digest = hashlib.sha256(query.encode()).hexdigest()[:24]
        [(ids, scores)] = await self.cache.get_many(
            SEARCH, [query], lambda _: f"{digest}:{served.version}:{catalog}", compute
        )
        above = scores >= self.floor  # scores come best first
        return _first((ids[above], scores[above]), first)
