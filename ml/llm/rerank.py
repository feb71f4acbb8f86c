"""Blend the recommender's candidate scores with the LLM's P(Yes), and choose the weight.

Both signals are standardised over one user's candidate list, so the weight alone sets how
much the LLM moves the order; P(Yes) enters as its log-odds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from ml import metrics as m
from ml.hybrid import HybridRecommender
from ml.interactions import Catalog, Interactions
from ml.llm.examples import catalog_facts, catalog_label
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


@dataclass
class RerankReport:
    """nDCG@k of the recommender's top list with and without the LLM rerank.

    The weight is chosen on the first half of the users and reported on the other half.
    """

    weight: float
    validation: dict[float, float]
    ndcg_without: float
    ndcg_with: float
    test_by_weight: dict[float, float]
    users_validation: int
    users_test: int
    seconds: float


def evaluate_rerank(
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
    progress: bool = True,
) -> RerankReport:
    """Rerank the top ``pool`` of ``model`` for the users at ``rows`` (shared by train and test)."""
    started = time.perf_counter()
    lists: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    relevant: list[np.ndarray] = []
    chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    counts = np.diff(train.matrix.tocsc().indptr)
    means = np.asarray(train.matrix.sum(axis=0)).ravel() / np.maximum(counts, 1)
    stats = {int(catalog.item_ids[j]): (float(means[j]), int(counts[j])) for j in np.flatnonzero(counts)}
    for chunk in tqdm(chunks, desc="rerank evaluation", disable=not progress or None):
        history = train.matrix[chunk]
        top, values = model.recommend(history, chunk, pool)
        requests = []
        for i in range(len(chunk)):
            seen = history[i]
            requests.append(
                preference_request(
                    [
                        (int(catalog.item_ids[j]), float(v))
                        for j, v in zip(seen.indices, seen.data, strict=True)
                    ],
                    [catalog_facts(catalog, int(j), stats) for j in top[i]],
                    lambda movie: catalog_label(catalog, int(catalog.index([movie])[0])),
                )
            )
        for i, p_yes in enumerate(score(requests)):
            lists.append((top[i], values[i], p_yes))
        test_rows = test.matrix[chunk]
        relevant += [test_rows[i].indices for i in range(len(chunk))]
    half = len(lists) // 2
    weight, validation = choose_weight(lists[:half], relevant[:half], k)
    test_by_weight = {w: ndcg_with_weight(lists[half:], relevant[half:], w, k) for w in WEIGHTS}
    return RerankReport(
        weight=weight,
        validation=validation,
        ndcg_without=test_by_weight[0.0],
        ndcg_with=test_by_weight[weight],
        test_by_weight=test_by_weight,
        users_validation=half,
        users_test=len(lists) - half,
        seconds=time.perf_counter() - started,
    )
