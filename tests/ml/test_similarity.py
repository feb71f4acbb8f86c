"""Similar movies: content and the model's item vectors, summed as z-scores; a movie the model
has not seen joins by content, on the same scale."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ml import similarity
from ml.hybrid import HybridRecommender, standardise
from ml.models import LightFMModel, Popularity


@pytest.fixture(scope="module")
def model() -> HybridRecommender:
    rng = np.random.default_rng(1)
    x = sp.csr_matrix(np.where(rng.random((60, 25)) < 0.3, 4.0, 0.0).astype(np.float32))
    components = {
        "lightfm": LightFMModel(components=6, epochs=5, threads=1).fit(x),
        "popularity": Popularity().fit(x),
    }
    vectors = rng.normal(size=(25, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return HybridRecommender(np.arange(1, 26), np.arange(1, 61), components, {"lightfm": 1.0}, vectors)


def test_the_served_scores_are_the_sum_of_the_parts_z_scores(model: HybridRecommender) -> None:
    items = np.array([0, 7])
    expected = standardise(similarity.content(model, items)) + standardise(
        np.asarray(similarity.item_vectors(model, items))
    )
    np.testing.assert_allclose(similarity.similar_scores(model, items), expected, rtol=1e-5, atol=1e-5)
    assert similarity.ease(model, items) is None  # no EASE in this model: no part of it


def test_neighbours_leave_out_the_movie_and_what_is_not_allowed(model: HybridRecommender) -> None:
    allowed = np.ones(25, dtype=bool)
    allowed[[3, 4]] = False
    top, values = similarity.neighbours(model, 5, 30, allowed)
    assert 5 not in top and not {3, 4} & set(top.tolist()) and len(top) == 22
    assert list(values) == sorted(values, reverse=True)
    scores = similarity.similar_scores(model, np.array([5]))[0]
    assert top[0] == max((i for i in range(25) if i not in (3, 4, 5)), key=lambda i: scores[i])


def test_an_unseen_movie_joins_on_the_served_scale(model: HybridRecommender) -> None:
    # an added movie whose content is the movie's own stands as high as content can put it
    own = model.item_embeddings[5] @ model.item_embeddings[5]
    [scaled] = similarity.on_served_scale(model, 5, np.array([own]))
    row = similarity.content(model, np.array([5]))[0]
    assert scaled == pytest.approx(2 * (own - row.mean()) / row.std(), rel=1e-5)
