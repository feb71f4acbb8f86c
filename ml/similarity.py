"""Movies alike: by content, by the model's item representations, and the blend that serves.

Each function gives (len(items), n_items) scores, higher is more alike. ``similar_scores``
is what ``HybridRecommender.similar`` serves: per-row z-scores of the named parts, summed, so
parts on different scales count alike. ``benchmarks/similar.py`` measures them against each
other on held-out users' co-likes (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from ml.hybrid import standardise, top_k

if TYPE_CHECKING:
    from ml.hybrid import HybridRecommender

# the parts the served blend sums (those the model has): the best co-like lift and the most
# shared genres of those measured (docs/benchmarks.md, "Similar movies")
SERVED = ("content", "lightfm")


def content(model: HybridRecommender, items: np.ndarray) -> np.ndarray:
    """Cosine of the content embeddings (title, year, genres)."""
    return np.asarray(model.item_embeddings[items] @ model.item_embeddings.T)


def item_vectors(model: HybridRecommender, items: np.ndarray) -> np.ndarray | None:
    """Cosine of LightFM's item vectors; None without LightFM."""
    component = model.components.get("lightfm")
    if component is None:
        return None
    vectors = np.asarray(component.item_vectors, dtype=np.float32)  # type: ignore[attr-defined]
    norms = np.linalg.norm(vectors, axis=1)
    norms[norms == 0] = 1
    return np.asarray((vectors[items] / norms[items, None]) @ (vectors / norms[:, None]).T)


def ease(model: HybridRecommender, items: np.ndarray) -> np.ndarray | None:
    """EASE's B[x, y]: how much having rated x raises y; None without EASE."""
    component = model.components.get("ease")
    if component is None:
        return None
    return np.asarray(component.weights[items], dtype=np.float32)  # type: ignore[attr-defined]


def rating_columns(matrix: sp.csr_matrix, items: np.ndarray) -> np.ndarray:
    """Cosine of the (binary) rating columns: item-item collaborative filtering's similarity."""
    columns = (matrix > 0).astype(np.float32).tocsc()
    norms = np.sqrt(np.asarray(columns.multiply(columns).sum(axis=0)).ravel())
    norms[norms == 0] = 1
    dots = (columns[:, items].T @ columns).toarray()
    return np.asarray(dots / norms[items, None] / norms[None, :])


PARTS = {"content": content, "lightfm": item_vectors, "ease": ease}


def similar_scores(
    model: HybridRecommender, items: np.ndarray, parts: tuple[str, ...] = SERVED
) -> np.ndarray:
    """(len(items), n_items): the sum of the per-row z-scores of ``parts`` the model has."""
    total = np.zeros((len(items), model.n_items), dtype=np.float32)
    for name in parts:
        scores = PARTS[name](model, items)
        if scores is not None:
            total += standardise(scores)
    return total


def neighbours(
    model: HybridRecommender, item: int, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` columns most alike ``item`` by ``similar_scores``, among the ``allowed`` ones,
    best first (never ``item`` itself; nothing allowed left: fewer)."""
    scores = similar_scores(model, np.array([item]))[0]
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    scores[item] = -np.inf
    top, values = top_k(scores[None, :], k)
    keep = np.isfinite(values[0])
    return top[0][keep], values[0][keep]


def on_served_scale(model: HybridRecommender, item: int, cosines: np.ndarray) -> np.ndarray:
    """Content cosines with ``item`` of movies the model has not seen (added since training),
    on ``similar_scores``'s scale: their content z-score, standing in for each part the model
    would have had (a z-score of content counted once per served part)."""
    row = content(model, np.array([item]))[0].astype(np.float64)
    std = row.std() or 1.0
    present = sum(name == "content" or name in model.components for name in SERVED)  # without scoring them
    return present * (cosines - row.mean()) / std
