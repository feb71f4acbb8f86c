"""The catalog as a serving model sees it now: facts its filters test for every column, and
the movies added since it was trained (the overlay), which are scored by content alone
until a retraining takes them in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from app.infra.tables import movie_embeddings as vectors
from app.infra.tables import movies
from app.serving.filters import ItemFacts, read_item_facts

if TYPE_CHECKING:
    import scipy.sparse as sp
    from sqlalchemy.ext.asyncio import AsyncSession

    from ml.hybrid import HybridRecommender


@dataclass(frozen=True)
class Overlay:
    """Movies added while serving that the model has no column for, with their content."""

    ids: np.ndarray  # int64, sorted
    vectors: np.ndarray  # (n, d) float32, L2-normalised
    facts: ItemFacts

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, movie_ids: list[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(movie_ids, dtype=np.int64)
        if not len(self.ids):
            return np.full(len(ids), -1)
        pos = np.searchsorted(self.ids, ids).clip(0, len(self.ids) - 1)
        return np.where(self.ids[pos] == ids, pos, -1)


@dataclass(frozen=True)
class CatalogView:
    facts: ItemFacts  # for the model's columns
    overlay: Overlay
    mean: np.ndarray  # (d,): the mean of the model's item embeddings
    covariance: np.ndarray  # (d, d): their covariance (z-scores of a user's content scores)


async def read_catalog_view(session: AsyncSession, model: HybridRecommender) -> CatalogView:
    item_ids = np.asarray(model.item_ids)
    facts = await read_item_facts(session, item_ids)
    stmt = (
        select(movies.c.movie_id, vectors.c.vector)
        .join(vectors, vectors.c.movie_id == movies.c.movie_id)
        .where(movies.c.retired.is_(False))
        .order_by(movies.c.movie_id)
    )
    rows = [r for r in (await session.execute(stmt)).all() if model.item_index([r.movie_id])[0] < 0]
    ids = np.array([r.movie_id for r in rows], dtype=np.int64)
    dim = model.item_embeddings.shape[1]
    found = (
        np.stack([np.frombuffer(r.vector, dtype=np.float32) for r in rows]) if rows else np.zeros((0, dim))
    )
    overlay = Overlay(ids, found.astype(np.float32), await read_item_facts(session, ids))
    if not len(overlay):
        return CatalogView(facts, overlay, np.zeros(dim, np.float32), np.zeros((dim, dim), np.float32))
    embeddings = np.asarray(model.item_embeddings, dtype=np.float32)
    mean = embeddings.mean(axis=0)
    centred = embeddings - mean
    return CatalogView(facts, overlay, mean, (centred.T @ centred) / max(len(embeddings) - 1, 1))


def taste(model: HybridRecommender, history: sp.csr_matrix) -> np.ndarray:
    """(batch, d): each user's content taste, the embeddings of what they rated weighted by
    how much they liked it (a 5 twice a 4; 3 or less, and dismissals, count against),
    normalised; zero rows for users with nothing to go on."""
    weights = history.copy().astype(np.float32)
    weights.data = np.where(weights.data < 0, -1.0, weights.data - 3.0).astype(np.float32)
    profile = np.asarray(weights @ np.asarray(model.item_embeddings, dtype=np.float32))
    norms = np.linalg.norm(profile, axis=1, keepdims=True)
    return np.divide(profile, norms, out=np.zeros_like(profile), where=norms > 0)


def content_scores(view: CatalogView, profiles: np.ndarray, scale: float) -> np.ndarray:
    """(batch, n_overlay): how well each added movie matches each taste, as the z-score of its
    similarity among the model's own movies' (mean and spread from the embeddings' mean and
    covariance, so no pass over the catalog), times ``scale`` (the blend's total weight: the
    model's scores are sums of weighted z-scores). -inf where a user has no taste to match."""
    sims = profiles @ view.overlay.vectors.T
    mu = profiles @ view.mean
    sd = np.sqrt(np.maximum(np.einsum("bi,ij,bj->b", profiles, view.covariance, profiles), 1e-12))
    out = (sims - mu[:, None]) / sd[:, None] * scale
    out[~np.any(profiles, axis=1)] = -np.inf
    return out.astype(np.float32)
