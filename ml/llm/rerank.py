"""Blend the recommender's candidate scores with the LLM's P(Yes), and choose the weight.

Both signals are standardised over one user's candidate list, so the weight alone sets how
much the LLM moves the order; P(Yes) enters as its log-odds.

The weight is chosen per segment of users (``SEGMENTS``): cold users, whose histories are
cut to 1, 3 or 5 ratings (collaborative filtering is weakest there, and the LLM reads titles
it knows), and warm users with their whole history. Each segment's weight is chosen on half
of its users and its gain reported on the other half, with a 95% bootstrap interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from ml import metrics as m
from ml.hybrid import HybridRecommender
from ml.interactions import Catalog, Interactions, truncate
from ml.llm.examples import catalog_facts, catalog_genres, catalog_label, matrix_stats
from ml.llm.prompts import ScoreRequest, preference_request

WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)


def _z(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    std = values.std()
    return (values - values.mean()) / (std if std > 0 else 1.0)


def blend(scores: np.ndarray, p_yes: np.ndarray, weight: float) -> np.ndarray:
    """Blended scores for one user's candidates (same order as given)."""
    p = np.clip(np.asarray(p_yes, dtype=np.float64), 1e-6, 1 - 1e-6)
    return _z(scores) + weight * _z(np.log(p / (1 - p)))


def reranked(candidates: np.ndarray, scores: np.ndarray, p_yes: np.ndarray, weight: float) -> np.ndarray:
    """``candidates`` reordered by the blend, best first (a stable order on ties)."""
    return candidates[np.argsort(-blend(scores, p_yes, weight), kind="stable")]


def ndcg_with_weight(
    lists: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    relevant: Sequence[np.ndarray],
    weight: float,
    k: int,
) -> float:
    """nDCG@k over users after reranking; ``lists`` holds (candidates, scores, p_yes) per user."""
    top = np.array([reranked(c, s, p, weight)[:k] for c, s, p in lists])
    return m.ndcg_at_k(top, relevant, k)


def choose_weight(
    lists: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    relevant: Sequence[np.ndarray],
    k: int,
    weights: Sequence[float] = WEIGHTS,
) -> tuple[float, dict[float, float]]:
    """The weight with the best nDCG@k on these (validation) users; 0 wins ties (no LLM cost)."""
    results = {w: ndcg_with_weight(lists, relevant, w, k) for w in weights}
    best = max(results, key=lambda w: (round(results[w], 6), -w))
    return best, results


# segment -> ratings a user's history is cut to (None: the whole history)
SEGMENTS: dict[str, int | None] = {"cold-1": 1, "cold-3": 3, "cold-5": 5, "warm": None}


def segment_of(rated: int) -> str:
    """The segment a user with ``rated`` ratings is served as: the smallest cold segment that
    holds them, else warm."""
    for name, cut in SEGMENTS.items():
        if cut is not None and rated <= cut:
            return name
    return "warm"


@dataclass
class SegmentReport:
    segment: str
    weight: float  # chosen on the validation half; 0 when the rerank does not win there
    validation: dict[float, float]
    ndcg_without: float  # on the test half
    ndcg_with: float
    gain: float
    gain_low: float  # 95% bootstrap interval of the mean per-user gain
    gain_high: float
    users_validation: int
    users_test: int

    @property
    def wins(self) -> bool:
        return self.weight > 0 and self.gain_low > 0


def _lists(
    model: HybridRecommender,
    history: sp.csr_matrix,
    users: np.ndarray,
    test: sp.csr_matrix,
    catalog: Catalog,
    score: Callable[[list[ScoreRequest]], list[np.ndarray]],
    item_stats: dict[int, tuple[float, int]],
    pool: int,
) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], list[np.ndarray]]:
    top, values = model.recommend(history, users, pool)
    genres_of = catalog_genres(catalog)
    requests = [
        preference_request(
            [(int(catalog.item_ids[j]), float(v)) for j, v in zip(row.indices, row.data, strict=True)],
            [catalog_facts(catalog, int(j), item_stats) for j in top[i]],
            lambda movie: catalog_label(catalog, int(catalog.index([movie])[0])),
            genres_of=genres_of,
        )
        for i, row in enumerate(history)
    ]
    lists = [(top[i], values[i], p) for i, p in enumerate(score(requests))]
    return lists, [test[i].indices for i in range(test.shape[0])]


def evaluate_segments(
    model: HybridRecommender,
    train: Interactions,
    test: Interactions,
    catalog: Catalog,
    score: Callable[[list[ScoreRequest]], list[np.ndarray]],
    rows: np.ndarray,
    *,
    k: int = 10,
    pool: int = 20,
    batch: int = 8,
    seed: int = 0,
    resamples: int = 2000,
    progress: bool = True,
) -> list[SegmentReport]:
    """nDCG@k with and without the rerank per segment, for the users at ``rows``. Cold
    segments score their cut histories as users the recommender never saw (folded in), as a
    new user is served; warm users keep their trained rows."""
    item_stats = matrix_stats(catalog, train.matrix)
    reports = []
    for name, cut in SEGMENTS.items():
        lists: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        relevant: list[np.ndarray] = []
        chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]
        for chunk in tqdm(chunks, desc=f"rerank {name}", disable=not progress or None):
            history = train.matrix[chunk]
            users = np.asarray(chunk)
            if cut is not None:
                history = truncate(history, cut, seed + int(chunk[0]))
                users = np.full(len(chunk), -1)
            found, rel = _lists(model, history, users, test.matrix[chunk], catalog, score, item_stats, pool)
            lists += found
            relevant += rel
        half = len(lists) // 2
        weight, validation = choose_weight(lists[:half], relevant[:half], k)
        test_lists, test_relevant = lists[half:], relevant[half:]
        without = m.ndcg_per_user(np.array([c[:k] for c, _, _ in test_lists]), test_relevant, k)
        chosen = np.array([reranked(c, s, p, weight)[:k] for c, s, p in test_lists])
        with_rerank = m.ndcg_per_user(chosen, test_relevant, k)
        diff = with_rerank - without
        low, high = m.mean_interval(diff, resamples=resamples, seed=seed)
        reports.append(
            SegmentReport(
                name,
                weight,
                validation,
                float(without.mean()),
                float(with_rerank.mean()),
                float(diff.mean()),
                low,
                high,
                half,
                len(lists) - half,
            )
        )
    return reports
