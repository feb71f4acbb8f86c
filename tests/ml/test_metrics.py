"""Ranking metrics against slow, obviously-correct reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml import metrics as m


def _ref_precision(rec, rel, k):
    return np.mean([len(set(r[:k]) & s) / k for r, s in zip(rec, rel, strict=True) if s])


def _ref_recall(rec, rel, k):
    return np.mean([len(set(r[:k]) & s) / len(s) for r, s in zip(rec, rel, strict=True) if s])


def _ref_ndcg(rec, rel, k):
    scores = []
    for r, s in zip(rec, rel, strict=True):
        if not s:
            continue
        dcg = sum(1 / math.log2(i + 2) for i, item in enumerate(r[:k]) if item in s)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(len(s), k)))
        scores.append(dcg / idcg)
    return np.mean(scores)


def _ref_map(rec, rel, k):
    scores = []
    for r, s in zip(rec, rel, strict=True):
        if not s:
            continue
        hits, total = 0, 0.0
        for i, item in enumerate(r[:k]):
            if item in s:
                hits += 1
                total += hits / (i + 1)
        scores.append(total / len(s))
    return np.mean(scores)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_references(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_items, k = 50, 10
    rec = np.array([rng.permutation(n_items)[:k] for _ in range(40)])
    rel = [set(rng.choice(n_items, rng.integers(0, 15), replace=False).tolist()) for _ in range(40)]
    assert m.precision_at_k(rec, rel, k) == pytest.approx(_ref_precision(rec, rel, k))
    assert m.recall_at_k(rec, rel, k) == pytest.approx(_ref_recall(rec, rel, k))
    assert m.ndcg_at_k(rec, rel, k) == pytest.approx(_ref_ndcg(rec, rel, k))
    assert m.map_at_k(rec, rel, k) == pytest.approx(_ref_map(rec, rel, k))


def test_perfect_and_empty_lists() -> None:
    rec = np.array([[0, 1, 2], [3, 4, 5]])
    assert m.ndcg_at_k(rec, [{0, 1, 2}, {3, 4, 5}], 3) == pytest.approx(1.0)
    assert m.ndcg_at_k(rec, [{9}, {8}], 3) == 0.0
    assert m.catalog_coverage(rec, 12) == 0.5


def test_diversity_and_novelty() -> None:
    vectors = np.array([[1, 0], [1, 0], [0, 1]], dtype=float)
    assert m.intra_list_diversity(np.array([[0, 1]]), vectors) == pytest.approx(0.0)
    assert m.intra_list_diversity(np.array([[0, 2]]), vectors) == pytest.approx(1.0)
    popularity = np.array([8, 4, 1])
    assert m.novelty(np.array([[0, 2]]), popularity, 8) == pytest.approx((0 + 3) / 2)
