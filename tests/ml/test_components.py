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
from ml.components import COMPONENTS, FitInputs, Spec
from ml.hybrid import HybridRecommender


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
