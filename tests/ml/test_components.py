"""The component registry is the one place a recommender is added: training fits what it
lists, tuning tries its weights, and a saved model loads its components through it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from ml import components as registry
from ml import training
from ml.components import COMPONENTS, Spec
from ml.hybrid import HybridRecommender
from ml.models.base import FitInputs


class Constant:
    """A toy component: the same learned score for every user."""

    name = "constant"
    same_for_every_user = True

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    @classmethod
    def train(cls, inputs: FitInputs) -> Constant:
        return cls(np.asarray(inputs.matrix.mean(axis=0), dtype=np.float32).ravel())

    def score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.scores, (history.shape[0], len(self.scores)))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"scores": self.scores}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Constant:
        return cls(arrays["scores"])


def test_one_registration_adds_a_component_to_training_tuning_and_loading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(COMPONENTS, "constant", Spec(Constant.train, Constant.from_arrays, (0.0, 0.7)))
    rng = np.random.default_rng(0)
    x = sp.csr_matrix(((rng.random((40, 20)) < 0.3) * 4).astype(np.float32))
    config = training.TrainConfig(components=4, epochs=1, threads=1, progress=False, ease_max_items=10)
    train = SimpleNamespace(matrix=x, user_ids=np.arange(1, 41))
    fitted = training.fit_components(
        train, SimpleNamespace(users=None), config, sp.identity(20, format="csr")
    )  # type: ignore[arg-type]
    assert set(fitted) == {"popularity", "lightfm", "constant"}  # EASE does not fit 20 > 10 items
    grid = training._weight_grid(sorted(fitted))
    assert {g["constant"] for g in grid} == {0.0, 0.7}
    assert all(any(g[n] for n in ("constant", "lightfm")) for g in grid)  # popularity alone is a prior

    model = HybridRecommender(
        np.arange(100, 120),
        np.arange(1, 41),
        fitted,
        {"constant": 0.7, "lightfm": 1.0},
        np.eye(20, 4, dtype=np.float32),
    )
    model.save(tmp_path / "m")
    loaded = HybridRecommender.load(tmp_path / "m")
    assert isinstance(loaded.components["constant"], Constant)
    users = np.array([0, 3])
    np.testing.assert_allclose(loaded.score(x[users], users), model.score(x[users], users), rtol=1e-5)


def test_tuning_may_leave_any_registered_component_out() -> None:
    assert registry.COMPONENTS.keys() >= {"popularity", "ease", "lightfm"}
    for spec in registry.COMPONENTS.values():
        assert spec.weights[0] == 0.0 and len(spec.weights) >= 2  # tuning may leave any one out


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_every_registered_component_keeps_the_contract(name: str) -> None:
    """One contract for every entry of ``COMPONENTS`` (as implicit's RecommenderBaseTestMixin
    runs one suite over every model): trained from ``FitInputs``, it scores a batch of rating
    rows (users it saw, and rows it folds in) as (batch, n_items) finite floats, loads back from
    its arrays scoring the same, scores alike rows alike when it says so, and, when it splits
    its score by rating (``PerRating``), the parts add up to the centred score."""
    rng = np.random.default_rng(7)
    x = sp.csr_matrix(
        np.where(rng.random((50, 24)) < 0.3, rng.integers(1, 6, (50, 24)), 0).astype(np.float32)
    )
    config = training.TrainConfig(components=4, epochs=2, threads=1, progress=False, ease_max_items=100)
    component = COMPONENTS[name].train(FitInputs(x, sp.identity(24, format="csr"), None, config))
    assert component is not None, f"{name} does not fit 24 items"
    rows = x[[0, 5, 9]]
    users = np.array([0, 5, -1])  # the last row is folded in
    scores = np.asarray(component.score(rows, users))
    assert scores.shape == (3, 24) and np.isfinite(scores).all()
    again = COMPONENTS[name].load({k: np.asarray(v) for k, v in component.arrays().items()})
    np.testing.assert_allclose(np.asarray(again.score(rows, users)), scores, rtol=1e-5)
    if getattr(component, "same_for_every_user", False):
        assert (scores == scores[0]).all()
    split = getattr(component, "per_rating", None)
    if split is not None:
        row = rows[2]
        ratings, own = split(row.indices.astype(np.int64), row.data.astype(np.float64), np.arange(24))
        folded = np.asarray(component.score(row, np.array([-1])), dtype=np.float64)[0]
        np.testing.assert_allclose(ratings.sum(axis=1) + own, folded - folded.mean(), atol=1e-4)
