"""Maximal marginal relevance (Carbonell and Goldstein 1998) over the content embeddings: a
list that trades relevance for variety by one knob.

Each pick maximises ``(1 - diversity) * relevance - diversity * closeness``, where relevance
is the candidate's score scaled to [0, 1] within the pool, and closeness is its largest
cosine similarity to what was picked already. ``diversity`` 0 keeps the order of the scores;
1 picks each next movie as unlike the list so far as the pool allows.
"""

from __future__ import annotations

import numpy as np


def mmr(vectors: np.ndarray, scores: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """The order of the candidates (their L2-normalised content ``vectors``, best score first,
    with their ``scores``) after MMR, its first ``k`` picks: positions into the candidates."""
    n = len(scores)
    k = min(k, n)
    if diversity <= 0 or k <= 1:
        return np.arange(k)
    finite = np.isfinite(scores)
    low, high = (scores[finite].min(), scores[finite].max()) if finite.any() else (0.0, 1.0)
    relevance = np.where(finite, (scores - low) / (high - low if high > low else 1.0), -np.inf)
    vectors = np.asarray(vectors, dtype=np.float32)
    closeness = np.full(n, -np.inf, dtype=np.float32)  # the largest similarity to a pick so far
    picked = np.zeros(n, dtype=bool)
    order = np.empty(k, dtype=np.int64)
    for step in range(k):
        gain = (1 - diversity) * relevance - diversity * np.where(np.isfinite(closeness), closeness, 0.0)
        gain[picked] = -np.inf
        best = int(np.argmax(gain))
        order[step] = best
        picked[best] = True
        closeness = np.maximum(closeness, vectors @ vectors[best])
    return order


def intra_list_diversity(items: np.ndarray, embeddings: np.ndarray) -> float:
    """The mean cosine distance between the pairs of a list (0: all alike)."""
    if len(items) < 2:
        return 0.0
    vectors = np.asarray(embeddings[items], dtype=np.float32)
    similarity = vectors @ vectors.T
    pairs = len(items) * (len(items) - 1)
    return float((pairs - (similarity.sum() - np.trace(similarity))) / pairs)
