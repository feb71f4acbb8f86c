"""A recommendation's reasons are the parts of its score: they add up to the score, and
deleting them moves the movie down far more than deleting other ratings does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ml import attribution
from ml.data.movielens import read_movies, read_users
from ml.hybrid import HybridRecommender
from ml.interactions import Catalog, Interactions
from ml.models import EASE, LightFMModel, Popularity
from ml.training import TrainConfig, TrainData, train


@pytest.fixture(scope="module")
def small() -> HybridRecommender:
    rng = np.random.default_rng(0)
    ratings = np.where(rng.random((80, 30)) < 0.3, rng.integers(1, 6, (80, 30)), 0).astype(np.float32)
    x = sp.csr_matrix(ratings)
    components = {
        "ease": EASE(lam=5.0).fit(x),
        "lightfm": LightFMModel(components=8, epochs=5, threads=1).fit(x),
        "popularity": Popularity().fit(x),
    }
    weights = {"ease": 0.7, "lightfm": 1.0, "popularity": 0.3}
    embeddings = rng.normal(size=(30, 4)).astype(np.float32)
    return HybridRecommender(np.arange(1, 31), np.arange(1, 81), components, weights, embeddings)


def test_the_parts_of_a_folded_in_users_score_add_up_to_it(small: HybridRecommender) -> None:
    row = sp.csr_matrix(
        np.array([[5, 0, 1, 0, 4, 0, 0, 3, 0, -1] + [0] * 20], dtype=np.float32)  # -1: dismissed
    )
    items = np.arange(30)
    split = attribution.parts(small, row, -1, items)
    served = small.blend(row, np.array([-1]))[0]
    np.testing.assert_allclose(split.total(), served, atol=1e-4)
    assert split.ratings.shape == (30, 5) and set(split.rated) == {0, 2, 4, 7, 9}


def test_reasons_are_the_largest_positive_parts_with_their_shares(small: HybridRecommender) -> None:
    row = sp.csr_matrix(np.array([[5, 0, 1, 0, 4, 0, 0, 3, 0, -1] + [0] * 20], dtype=np.float32))
    items = np.arange(10, 30)
    split = attribution.parts(small, row, -1, items)
    named_any = 0
    for i, found in enumerate(attribution.reasons(split, k=3)):
        if not found:  # a movie nothing raised: every part is at most 0
            assert split.prior[i] <= 0 and all(
                v <= 0 for v, r in zip(split.ratings[i], split.values, strict=True) if r > 0
            )
            continue
        named_any += 1
        assert len(found) <= 3
        values = [r.value for r in found]
        assert values == sorted(values, reverse=True) and values[-1] > 0
        assert 0 < sum(r.share for r in found) <= 1 + 1e-9
        for reason in found:
            if reason.kind == attribution.RATING:
                assert reason.column != 9  # a dismissal is never a reason
                j = list(split.rated).index(reason.column)
                assert reason.value == pytest.approx(split.ratings[i, j])
            else:
                assert reason.column == items[i] and reason.value == pytest.approx(split.prior[i])
        # nothing left out is larger than what was named
        named = {r.column for r in found if r.kind == attribution.RATING}
        rest = [
            v
            for v, c, r in zip(split.ratings[i], split.rated, split.values, strict=True)
            if c not in named and r > 0
        ]
        assert max(rest, default=0) <= values[-1] + 1e-12
    assert named_any >= 10


def test_deleting_the_reasons_moves_a_recommendation_down_far_more_than_random_ratings(
    ml100k_dir: Path,
) -> None:
    """The counterfactual (PRINCE's test), on 60 ML-100K users the model never saw, folded in
    as new accounts: for each one's top 3, delete the reasons' ratings and rank again."""
    movies = read_movies(ml100k_dir / "movies.csv").frame
    genres = movies[["movie_id", "genres"]].explode("genres").dropna().rename(columns={"genres": "name"})
    catalog = Catalog.from_frames(movies[["movie_id", "title", "year"]], genres)
    ratings = pd.read_csv(ml100k_dir / "ratings.csv").rename(
        columns={"userId": "user_id", "movieId": "movie_id"}
    )
    ratings = ratings[["user_id", "movie_id", "rating"]]
    held = np.random.default_rng(0).choice(np.sort(ratings["user_id"].unique()), size=60, replace=False)
    rest = ratings[~ratings["user_id"].isin(held)]
    users = read_users(ml100k_dir / "users.csv").frame
    config = TrainConfig(tune=False, ranker=False, progress=False, threads=1)
    model = train(TrainData(rest, catalog, users), config, refit=False).model
    assert model is not None
    rows = Interactions.from_frame(ratings[ratings["user_id"].isin(held)], catalog).matrix
    found = attribution.counterfactual(
        model, rows, {"attribution": attribution.attributed, "content": attribution.content_nearest}
    )
    before = 1.0  # the mean rank of a top 3 (0, 1, 2)
    moved = {name: c.rank - before for name, c in found.items()}
    assert found["attribution"].cases == found["random"].cases == 180
    assert found["attribution"].removed == found["random"].removed  # as many ratings each
    assert moved["attribution"] >= 3 * moved["random"] and moved["attribution"] > moved["content"]
    assert found["attribution"].left >= max(3 * found["random"].left, 1)


def test_a_user_the_ranker_orders_gets_the_ranker_s_reasons() -> None:
    """A blend of popularity alone (the same for everyone) and a ranker taught on content: the
    blend's parts name no rating, but the ranker ordered the list by the user's liked movies,
    so its parts (pred_contrib mapped back) name them, and add up to what the trees scored."""
    from ml import ranker as learned
    from tests.ml.test_ranker import _content_fold, popularity_with_content_ranker

    model, parts_of, embeddings, stats = popularity_with_content_ranker()
    ranker = model.ranker
    assert ranker is not None
    row = _content_fold(embeddings, stats, parts_of, 4).history[:1]  # 4 liked movies
    scores = model.score(row, np.array([-1]))[0]
    scores[row.indices] = -np.inf
    items = np.argsort(-scores)[:3]
    assert all(
        r.kind == attribution.PRIOR
        for found in attribution.reasons(attribution.parts(model, row, -1, items))
        for r in found
    )

    split = attribution.served_parts(model, row, -1, items)
    found = learned.candidates(
        parts_of(row, np.array([-1])),
        model.blend(row, np.array([-1])),
        row,
        embeddings,
        ranker.stats,
        ranker.per_generator,
    )
    raw = ranker.booster.predict(found.features, num_threads=1) + ranker.start * found.blend
    expected = [raw[list(found.items).index(i)] for i in items]
    np.testing.assert_allclose(split.total(), expected, rtol=1e-4, atol=1e-4)
    for found_reasons in attribution.reasons(split):
        rated = [r.column for r in found_reasons if r.kind == attribution.RATING]
        assert rated and set(rated) <= set(row.indices.tolist())
