"""Components and the hybrid: closed forms, top-k, fold-in, save and load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from ml.hybrid import HybridRecommender, standardise, top_k
from ml.models import EASE, LightFMModel, Popularity


def _matrix(seed: int = 0, users: int = 60, items: int = 30) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((users, items)) < 0.3) * rng.integers(1, 6, (users, items))
    return sp.csr_matrix(dense.astype(np.float32))


def test_ease_matches_its_closed_form() -> None:
    x = _matrix()
    model = EASE(lam=10.0).fit(x)
    b = (x > 0).astype(float).toarray()
    gram = b.T @ b + 10.0 * np.eye(x.shape[1])
    p = np.linalg.inv(gram)
    expected = np.eye(x.shape[1]) - p / np.diag(p)
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(model.weights, expected, rtol=1e-4, atol=1e-6)
    assert np.all(np.diag(model.weights) == 0)
    with pytest.raises(ValueError, match="n_items"):
        EASE(max_items=10).fit(x)


def test_top_k_orders_and_handles_small_k() -> None:
    scores = np.array([[0.1, 0.9, 0.5, -np.inf], [3.0, 1.0, 2.0, 0.0]])
    top, values = top_k(scores, 2)
    assert top.tolist() == [[1, 2], [0, 2]] and values[0].tolist() == [0.9, 0.5]
    assert top_k(scores, 0)[0].shape == (2, 0)
    assert top_k(scores, 10)[0].shape == (2, 4)


def test_lightfm_folds_in_unknown_users_from_item_vectors() -> None:
    x = _matrix(1)
    model = LightFMModel(components=8, epochs=5, threads=1).fit(x)
    history = x[:3]
    known = model.score(history, np.array([0, 1, 2]))
    folded = model.score(history, np.array([-1, -1, -1]))
    assert known.shape == folded.shape == (3, x.shape[1])
    expected = (history @ model.item_vectors) / np.asarray(history.sum(axis=1))
    np.testing.assert_allclose(
        folded, expected @ model.item_vectors.T + model.item_bias, rtol=1e-4, atol=1e-5
    )


def test_hybrid_blends_saves_and_loads(tmp_path: Path) -> None:
    x = _matrix(2)
    components = {"popularity": Popularity().fit(x), "ease": EASE(5.0).fit(x)}
    embeddings = np.eye(x.shape[1], 4, dtype=np.float32)
    model = HybridRecommender(
        np.arange(100, 100 + x.shape[1]),
        np.arange(1, 61),
        components,
        {"ease": 1.0, "popularity": 0.5},
        embeddings,
    )
    users = np.array([0, 5])
    expected = standardise(components["ease"].score(x[users], users)) + 0.5 * standardise(
        components["popularity"].score(x[users], users)
    )
    np.testing.assert_allclose(model.score(x[users], users), expected, rtol=1e-5)
    top, _ = model.recommend(x[users], users, 5)
    assert not any(x[u, i] for u, row in zip(users, top, strict=True) for i in row)  # rated items excluded
    model.save(tmp_path / "m")
    loaded = HybridRecommender.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.score(x[users], users), model.score(x[users], users))
    assert loaded.item_index([100, 129, 5]).tolist() == [0, 29, -1]
    assert loaded.user_index([1, 60, 99]).tolist() == [0, 59, -1]


def test_unrated_items_get_a_representation_from_their_features() -> None:
    """Two movies nobody rated, with the same genres, end up close in LightFM's space; a third
    unrated movie of other genres does not: cold items are recommended from their features."""
    from ml.features import item_features
    from ml.interactions import Catalog

    rng = np.random.default_rng(3)
    n_items, n_users = 40, 120
    genres = [["Animation"] if i % 2 else ["Horror"] for i in range(n_items)]
    catalog = Catalog(
        np.arange(1, n_items + 1), [f"m{i}" for i in range(n_items)], np.zeros(n_items, int), genres
    )
    # users like one genre each; items 37, 38 and 39 are never rated
    rows, cols = [], []
    for u in range(n_users):
        liked = [i for i in range(37) if (i % 2) == (u % 2)]
        for i in rng.choice(liked, 8, replace=False):
            rows.append(u)
            cols.append(i)
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    model = LightFMModel(components=8, epochs=30, threads=1).fit(x, item_features(catalog))
    v = model.item_vectors / np.linalg.norm(model.item_vectors, axis=1, keepdims=True)
    assert v[37] @ v[39] > 0.8  # both Animation, both unrated
    assert v[37] @ v[38] < v[37] @ v[39] - 0.3  # Animation vs Horror
    animation_fan = model.score(x[1:2], np.array([1]))[0]  # user 1 likes the odd (Animation) items
    assert animation_fan[37] > animation_fan[38]
