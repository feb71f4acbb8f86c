"""Top-k ranking metrics over recommendation lists, as plain functions.

Conventions follow Microsoft Recommenders' ranking metrics (binary relevance: every
held-out rating is relevant), so numbers compare with its published MovieLens benchmark:

- precision@k = hits in the top k / k
- recall@k = hits in the top k / |relevant|
- nDCG@k = DCG / ideal DCG, gains 1/log2(rank + 1), ideal over min(|relevant|, k) hits
- MAP@k = mean over users of (sum of precision@i at each hit rank i <= k) / |relevant|

Shapes: ``recommended`` is (n_users, k) of item indices, best first; ``relevant`` is a
list of n_users sets (or arrays) of item indices. Users with no relevant items are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _hits(
    recommended: np.ndarray, relevant: Sequence[np.ndarray | set[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """(n_users, k) boolean hit matrix and the relevant-set sizes, for users with any relevant item."""
    sizes = np.array([len(r) for r in relevant])
    keep = sizes > 0
    hits = np.zeros(recommended.shape, dtype=bool)
    for u in np.flatnonzero(keep):
        hits[u] = np.isin(recommended[u], np.fromiter(relevant[int(u)], dtype=np.int64, count=sizes[u]))
    return hits[keep], sizes[keep]


def precision_at_k(recommended: np.ndarray, relevant: Sequence, k: int = 10) -> float:
    hits, _ = _hits(recommended[:, :k], relevant)
    return float(hits.sum(axis=1).mean() / k)


def recall_at_k(recommended: np.ndarray, relevant: Sequence, k: int = 10) -> float:
    hits, sizes = _hits(recommended[:, :k], relevant)
    return float((hits.sum(axis=1) / sizes).mean())


def ndcg_per_user(recommended: np.ndarray, relevant: Sequence, k: int = 10) -> np.ndarray:
    """nDCG@k of each row (for paired comparisons and their intervals)."""
    hits, sizes = _hits(recommended[:, :k], relevant)
    gains = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * gains[: hits.shape[1]]).sum(axis=1)
    ideal = np.cumsum(gains)[np.minimum(sizes, k) - 1]
    return np.asarray(dcg / ideal, dtype=np.float64)


def ndcg_at_k(recommended: np.ndarray, relevant: Sequence, k: int = 10) -> float:
    return float(ndcg_per_user(recommended, relevant, k).mean())


def map_at_k(recommended: np.ndarray, relevant: Sequence, k: int = 10) -> float:
    hits, sizes = _hits(recommended[:, :k], relevant)
    precision_at_hit = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    return float(((precision_at_hit * hits).sum(axis=1) / sizes).mean())


def catalog_coverage(recommended: np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in anyone's list."""
    return float(len(np.unique(recommended)) / n_items)


def intra_list_diversity(recommended: np.ndarray, item_vectors: np.ndarray) -> float:
    """Mean pairwise cosine distance within each list, averaged over lists.

    ``item_vectors`` is (n_items, d): genre indicators or content embeddings.
    """
    norms = np.linalg.norm(item_vectors, axis=1, keepdims=True)
    unit = item_vectors / np.where(norms == 0, 1, norms)
    k = recommended.shape[1]
    if k < 2:
        return 0.0
    vectors = unit[recommended]  # (n_users, k, d)
    similarity = np.einsum("ukd,ujd->ukj", vectors, vectors)
    off_diagonal = similarity.sum(axis=(1, 2)) - np.einsum("ukk->u", similarity)
    return float((1 - off_diagonal / (k * (k - 1))).mean())


def novelty(recommended: np.ndarray, item_popularity: np.ndarray, n_users: int) -> float:
    """Mean self-information -log2(p(i)) of recommended items, p(i) = users who rated i / users."""
    p = np.clip(item_popularity[recommended] / n_users, 1e-12, 1.0)
    return float((-np.log2(p)).mean())


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(a random positive outscores a random negative), ties half.

    Computed from average ranks (Mann-Whitney U); NaN when only one class is present.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average rank (1-based) within each run of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mean_interval(diff: np.ndarray, *, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A 95% percentile-bootstrap interval of the mean of per-user differences (the mean itself,
    exactly, when every difference is the same: nothing changed)."""
    if not len(diff) or np.ptp(diff) == 0:
        value = float(diff.mean()) if len(diff) else 0.0
        return value, value
    from scipy import stats as scipy_stats

    interval = scipy_stats.bootstrap(
        (diff,), np.mean, confidence_level=0.95, n_resamples=resamples, method="percentile", rng=seed
    ).confidence_interval
    return float(interval.low), float(interval.high)
