"""Evidence for an explanation: the reasons behind a recommendation, as facts in words.

Served evidence comes from ``ml.attribution``: the user's ratings (and the movie's own
popularity) that contributed most to its score, each with its share (``weight``). The
genres a reason shares with the candidate are a fact about it, not how it was chosen.
``gather_evidence`` (the liked movies nearest by content embedding) remains for what the
model scores by content alone: movies added since it was trained."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ml.llm.prompts import LIKED_THRESHOLD, popularity_reason

__all__ = [
    "CONTENT",
    "POPULARITY",
    "RATING",
    "Evidence",
    "gather_evidence",
    "popularity_reason",
    "rated_reason",
]

RATING = "rating"  # a movie the user rated moved the score
POPULARITY = "popularity"  # the movie's own part: its popularity (``movie_id`` is the candidate)
CONTENT = "content"  # nearest by content, for a movie the model scores by content alone


@dataclass(frozen=True)
class Evidence:
    movie_id: int
    reason: str
    similarity: float  # content similarity of ``movie_id`` and the candidate
    weight: float = 0.0  # the reason's share of what pushed the score up, in [0, 1]
    kind: str = RATING


def rated_reason(title: str, rating: float, shared: Sequence[str]) -> str:
    out = f"you rated {title} {rating:g}/5"
    return f"{out} and it shares {', '.join(shared[:3])}" if shared else out


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
    total = float(np.clip(sims[order], 0, None).sum()) or 1.0
    for i in order:
        movie, rating = liked[int(i)]
        shared = [g for g in genres.get(movie, []) if g in cand_genres]
        reason = rated_reason(titles.get(movie, f"movie {movie}"), rating, shared)
        shared_tags = [t for t in (tags or {}).get(movie, []) if t in cand_tags]
        if shared_tags:
            reason += " and tagged " + ", ".join(shared_tags[:3])
        similarity = float(sims[int(i)])
        out.append(Evidence(movie, reason, similarity, max(similarity, 0.0) / total, CONTENT))
    return out
