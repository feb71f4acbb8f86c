"""The learned ranker's parts (ml.ranker): rating-time features from known timestamps, and a
ranker taught on folds that orders the candidates it was taught on better than the blend."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from ml import ranker as learned

DAY = learned.DAY


def test_time_features_follow_the_timestamps() -> None:
    # user 0 rated movie 0 on day 10 and movie 1 on day 12; user 1 both on day 100; movie 2 was
    # never rated
    users, items = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    times = np.array([10, 12, 100, 100]) * DAY
    t = learned.RatingTimes.of(users, items, times, n_users=2, n_items=3)
    assert t.user_first.tolist() == [10 * DAY, 100 * DAY] and t.user_last.tolist() == [12 * DAY, 100 * DAY]
    cols = t.columns(np.array([0, 0, 1]), np.array([0, 2, 1]))
    # movie 0's first rating came 2 days before user 0's last; movie 2 has none: the latest time;
    # movie 1's first (day 12) came 88 days before user 1's last
    assert cols[:, 0].tolist() == pytest.approx([-2.0, 88.0, -88.0])
    # movie 0's median (55) against user 0's (11)
    assert cols[0, 1] == pytest.approx(44.0)
    # user 0's window (day 3 to 19) holds 2 ratings, 1 of movie 0; user 1's (93 to 107) 2, 1 of movie 1
    assert cols[:, 2].tolist() == pytest.approx([500.0, 0.0, 500.0])
    assert cols[:, 3].tolist() == pytest.approx([2.0, 2.0, 0.0])


def test_a_ranker_taught_on_folds_learns_what_the_blend_misses() -> None:
    """A signal the blend has no weight for (the content generator's score) decides which
    candidates were rated: the ranker, taught on two folds and stopped on a third, puts them
    first on a fourth; the blend alone does not."""
    rng = np.random.default_rng(3)
    n_users, n_items, dims = 120, 60, 8
    embeddings = rng.normal(size=(n_items, dims)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    genres = (rng.random((n_items, 3)) < 0.3).astype(np.float32)
    stats = learned.ItemStats.of(
        sp.csr_matrix((n_users, n_items), dtype=np.float32), np.zeros(n_items), genres
    )

    def fold(seed: int) -> learned.Fold:
        r = np.random.default_rng(seed)
        history = sp.lil_matrix((n_users, n_items), dtype=np.float32)
        labels = sp.lil_matrix((n_users, n_items), dtype=np.float32)
        for u in range(n_users):
            liked = r.choice(n_items, 4, replace=False)
            history[u, liked] = 5.0
            taste = embeddings[liked].mean(axis=0)
            near = np.argsort(-(embeddings @ taste))
            fresh = [i for i in near if i not in liked][:3]  # the closest unrated by content: rated next
            labels[u, fresh] = 4.0
        history_csr = history.tocsr()

        def parts_of(h: sp.csr_matrix, rows: np.ndarray) -> dict[str, np.ndarray]:
            noise = np.random.default_rng(seed + 100).normal(size=(len(rows), n_items)).astype(np.float32)
            return {"noise": noise}

        return learned.Fold(parts_of, history_csr, labels.tocsr(), np.arange(n_users), stats)

    taught, stop, test = [fold(1), fold(2)], fold(3), fold(4)
    config = learned.RankerConfig(
        per_generator=20, trees=60, min_child_samples=10, early_stopping=60, threads=1
    )
    ranker, info = learned.fit(taught, [stop], {"noise": 1.0}, embeddings, ["noise"], config)
    assert info["ranker_users"] > 0

    history = test.history
    parts = test.parts_of(history, test.users)
    blend = learned.blend_of(parts, {"noise": 1.0})

    def hits(scores: np.ndarray) -> float:
        scores = np.array(scores)
        scores[history.nonzero()] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :3]
        return float(np.mean([test.labels[u, top[u]].getnnz() / 3 for u in range(n_users)]))

    before = hits(blend)
    after = hits(ranker.rank(np.array(blend), parts, history, embeddings, test.users))
    assert before < 0.2 and after > 0.6, (before, after)


def test_a_ranker_taught_with_times_is_not_saved() -> None:
    stats = learned.ItemStats.of(sp.csr_matrix((1, 2), dtype=np.float32), np.zeros(2), np.zeros((2, 1)))
    times = learned.RatingTimes.of(np.array([0]), np.array([0]), np.array([1.0]), 1, 2)
    ranker = learned.Ranker(None, ["ease"], stats, 10, 1.0, times)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not saved"):
        ranker.arrays()
    with pytest.raises(ValueError, match="time features"):
        ranker.with_stats(stats)


def _world(n_users: int = 120, n_items: int = 60, seed: int = 3) -> tuple[np.ndarray, learned.ItemStats]:
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(n_items, 8)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    genres = (rng.random((n_items, 3)) < 0.3).astype(np.float32)
    stats = learned.ItemStats.of(
        sp.csr_matrix((n_users, n_items), dtype=np.float32), np.zeros(n_items), genres
    )
    return embeddings, stats


def _content_fold(
    embeddings: np.ndarray, stats: learned.ItemStats, parts_of, seed: int, liked_per_user: int = 4
) -> learned.Fold:
    """Each user liked a few random movies; the ones they rated next are the closest by content."""
    r = np.random.default_rng(seed)
    n_items = len(embeddings)
    n_users = 120
    history = sp.lil_matrix((n_users, n_items), dtype=np.float32)
    labels = sp.lil_matrix((n_users, n_items), dtype=np.float32)
    for u in range(n_users):
        liked = r.choice(n_items, liked_per_user, replace=False)
        history[u, liked] = 5.0
        near = np.argsort(-(embeddings @ embeddings[liked].mean(axis=0)))
        labels[u, [i for i in near if i not in liked][:3]] = 4.0
    return learned.Fold(parts_of, history.tocsr(), labels.tocsr(), np.arange(n_users), stats)


def popularity_with_content_ranker() -> tuple[Any, Any, np.ndarray, learned.ItemStats]:
    """(model, parts_of, embeddings, stats): a blend of popularity alone (the same list for
    everyone) with a ranker taught on content, serving users with 1 to 5 ratings."""
    from ml.hybrid import HybridRecommender, score_parts
    from ml.models.popularity import Popularity

    embeddings, stats = _world()
    n_items = len(embeddings)
    popularity = Popularity()
    popularity.counts = np.random.default_rng(5).integers(1, 500, n_items).astype(np.float32)
    components = {"popularity": popularity}

    def parts_of(history: sp.csr_matrix, rows: np.ndarray) -> dict[str, np.ndarray]:
        return score_parts(components, ["popularity"], history, rows)

    config = learned.RankerConfig(
        per_generator=30, trees=60, min_child_samples=10, early_stopping=60, threads=1
    )
    ranker, _ = learned.fit(
        [_content_fold(embeddings, stats, parts_of, s) for s in (1, 2)],
        [_content_fold(embeddings, stats, parts_of, 3)],
        {"popularity": 1.0},
        embeddings,
        ["popularity"],
        config,
    )
    model = HybridRecommender(
        np.arange(1, n_items + 1),
        np.zeros(0, dtype=np.int64),
        components,
        {"popularity": 1.0},
        embeddings,
        ranker=ranker,
        ranker_up_to=5,
    )
    return model, parts_of, embeddings, stats


def test_a_served_model_lets_the_ranker_order_only_users_with_few_ratings(tmp_path) -> None:
    """A model whose one component is popularity (the same list for everyone) with a ranker
    taught on content: users with 1 to ``ranker_up_to`` ratings get the ranker's order, dealt
    the blend's own values; a user with more keeps the blend exactly; save and load keep both,
    and a model saved without a ranker loads without one."""
    from ml.hybrid import HybridRecommender, top_k

    model, parts_of, embeddings, stats = popularity_with_content_ranker()
    new = _content_fold(embeddings, stats, parts_of, 4).history[:40]  # 4 ratings each
    veteran = _content_fold(embeddings, stats, parts_of, 5, liked_per_user=8).history[:1]
    history = sp.vstack([new, veteran]).tocsr()
    unseen = np.full(history.shape[0], -1)
    assert model.ranked_rows(history).tolist() == list(range(40))

    scores, blend = model.score(history, unseen), model.blend(history, unseen)
    assert np.array_equal(scores[40], blend[40])  # the veteran: the blend, exactly
    for row in range(40):  # the same values, in another order
        assert np.array_equal(np.sort(scores[row]), np.sort(blend[row]))
    labels = _content_fold(embeddings, stats, parts_of, 4).labels[:40]

    def hits(values: np.ndarray) -> float:
        values = np.where(history[:40].toarray() > 0, -np.inf, values[:40])
        top = top_k(values, 3)[0]
        return float(np.mean([labels[u, top[u]].getnnz() / 3 for u in range(40)]))

    assert hits(blend) < 0.2 and hits(scores) > 0.6, (hits(blend), hits(scores))

    model.save(tmp_path / "with")
    loaded = HybridRecommender.load(tmp_path / "with")
    assert loaded.ranker is not None and loaded.ranker_up_to == 5
    assert np.array_equal(loaded.score(history, unseen), scores)
    model.ranker, model.ranker_up_to = None, 0
    model.save(tmp_path / "without")
    plain = HybridRecommender.load(tmp_path / "without")
    assert plain.ranker is None and np.array_equal(plain.score(history, unseen), blend)


def _gain(ratings: int, low: float) -> learned.SegmentGain:
    return learned.SegmentGain(f"cold-{ratings}", ratings, 100, 0.1, 0.1 + low + 0.01, low, low + 0.02)


def test_the_ranker_serves_up_to_the_last_cut_whose_gain_and_every_smaller_ones_is_above_zero() -> None:
    assert learned.served_up_to([_gain(1, 0.01), _gain(3, 0.002), _gain(5, 0.001)]) == 5
    assert learned.served_up_to([_gain(5, -0.001), _gain(1, 0.01), _gain(3, 0.002)]) == 3
    assert learned.served_up_to([_gain(1, 0.0), _gain(3, 0.02), _gain(5, 0.02)]) == 0
    assert learned.served_up_to([]) == 0
