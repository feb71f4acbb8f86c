"""Evidence for an explanation: the user's best-rated movies most like the candidate, and
the genres and tags they share. Built from the engine's content embeddings, so the text a
model writes can be shown beside the facts it was given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ml.llm.prompts import LIKED_THRESHOLD


@dataclass(frozen=True)
class Evidence:
    movie_id: int
    reason: str
    similarity: float


def gather_evidence(
    *,
    candidate: int,
    rated: Sequence[tuple[int, float]],
    embedding_of: Mapping[int, np.ndarray],
    titles: Mapping[int, str],
    genres: Mapping[int, Sequence[str]],
    tags: Mapping[int, Sequence[str]] | None = None,
    k: int = 3,
) -> list[Evidence]:
    """Up to ``k`` of the user's liked movies (rating above 3), most similar to ``candidate`` first.

    ``rated`` is the user's (movie_id, rating) pairs; ``embedding_of`` maps movie ids to
    L2-normalised content vectors (movies without one are skipped).
    """
    target = embedding_of.get(candidate)
    liked = [(m, r) for m, r in rated if r > LIKED_THRESHOLD and m in embedding_of and m != candidate]
    if target is None or not liked:
        return []
    sims = np.array([float(embedding_of[m] @ target) for m, _ in liked])
    # similarity first, the rating breaks near-ties
    order = np.lexsort((-np.array([r for _, r in liked]), -np.round(sims, 3)))[:k]
    out = []
    cand_genres = set(genres.get(candidate, []))
    cand_tags = set((tags or {}).get(candidate, []))
    for i in order:
        movie, rating = liked[int(i)]
        parts = [f"you rated {titles.get(movie, f'movie {movie}')} {rating:g}/5"]
        shared = [g for g in genres.get(movie, []) if g in cand_genres]
        if shared:
            parts.append("it shares " + ", ".join(shared[:3]))
        shared_tags = [t for t in (tags or {}).get(movie, []) if t in cand_tags]
        if shared_tags:
            parts.append("tagged " + ", ".join(shared_tags[:3]))
        out.append(Evidence(movie, " and ".join(parts), float(sims[int(i)])))
    return out
