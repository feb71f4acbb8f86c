"""Rerank evaluation per user segment, on a real (small) hybrid recommender: histories are cut
for the cold segments, a scorer that knows each user's held-out movies wins in every segment
with an interval above 0, a scorer with no opinion changes nothing and is given weight 0, and
serving picks the weight by the user's rating count."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from app.serving.llm_holder import RerankWeights
from ml.hybrid import HybridRecommender
from ml.interactions import Catalog, Interactions, truncate
from ml.llm.prompts import ScoreRequest
from ml.llm.rerank import SEGMENTS, evaluate_segments, segment_of
from ml.models import EASE, Popularity

N_USERS, N_ITEMS = 80, 50


def _data() -> tuple[HybridRecommender, Interactions, Interactions, Catalog]:
    rng = np.random.default_rng(1)
    train = sp.random(N_USERS, N_ITEMS, density=0.25, format="csr", random_state=2, dtype=np.float32)
    train.data = rng.integers(1, 6, size=train.nnz).astype(np.float32)
    test = sp.lil_matrix((N_USERS, N_ITEMS), dtype=np.float32)
    for u in range(N_USERS):
        unrated = np.setdiff1d(np.arange(N_ITEMS), train[u].indices)
        for i in rng.choice(unrated, size=3, replace=False):
            test[u, i] = 5.0
    ids = np.arange(1, N_ITEMS + 1)
    catalog = Catalog(ids, [f"Film {m}" for m in ids], np.full(N_ITEMS, 1990), [["Drama"]] * N_ITEMS)
    components = {"popularity": Popularity().fit(train), "ease": EASE(5.0).fit(train)}
    model = HybridRecommender(
        ids,
        np.arange(1, N_USERS + 1),
        components,
        {"ease": 1.0, "popularity": 0.5},
        np.eye(N_ITEMS, 8, dtype=np.float32),
    )
    users = np.arange(1, N_USERS + 1)
    return model, Interactions(users, train), Interactions(users, test.tocsr()), catalog


def test_histories_are_cut_to_the_segments_size() -> None:
    history = sp.csr_matrix(np.arange(1, 13, dtype=np.float32).reshape(2, 6))
    cut = truncate(history, 3, seed=0)
    assert np.diff(cut.indptr).tolist() == [3, 3]
    assert set(cut[0].data) <= set(history[0].data) and set(cut[1].data) <= set(history[1].data)
    assert [segment_of(n) for n in (0, 1, 2, 3, 5, 6, 400)] == [
        "cold-1",
        "cold-1",
        "cold-3",
        "cold-3",
        "cold-5",
        "warm",
        "warm",
    ]


def test_a_scorer_that_knows_the_answers_wins_in_every_segment_and_one_without_an_opinion_in_none() -> None:
    model, train, test, catalog = _data()
    rows = np.arange(N_USERS)
    order = iter(np.tile(rows, len(SEGMENTS)))  # the scorer sees users in this order, segment by segment

    def oracle(requests: list[ScoreRequest]) -> list[np.ndarray]:
        out = []
        for request in requests:
            liked = {int(catalog.item_ids[i]) for i in test.matrix[next(order)].indices}
            movies = [int(c.split("Film ")[1].split(" ")[0]) for c in request.candidates]
            out.append(np.array([0.99 if m in liked else 0.01 for m in movies]))
        return out

    reports = evaluate_segments(model, train, test, catalog, oracle, rows, resamples=500, progress=False)
    assert [r.segment for r in reports] == list(SEGMENTS)
    for report in reports:
        assert report.weight > 0 and report.gain_low > 0 and report.wins, report
        assert report.ndcg_with > report.ndcg_without
        assert report.users_validation + report.users_test == N_USERS

    def indifferent(requests: list[ScoreRequest]) -> list[np.ndarray]:
        return [np.full(len(r.candidates), 0.5) for r in requests]

    for report in evaluate_segments(model, train, test, catalog, indifferent, rows, progress=False):
        assert report.weight == 0 and report.gain == 0 and not report.wins


def test_serving_reranks_a_user_with_the_weight_of_their_segment() -> None:
    weights = RerankWeights((("cold-1", 1.0), ("cold-3", 0.5), ("cold-5", 0.0), ("warm", 0.0)))
    assert [weights.weight_for(n) for n in (1, 3, 4, 200)] == [1.0, 0.5, 0.0, 0.0]
    assert weights.any and not RerankWeights.same(0.0).any
    assert RerankWeights.same(2.0).weight_for(1000) == 2.0
