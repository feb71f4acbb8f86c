"""Most-rated-first: the baseline and the prior."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from ml.models.base import FitInputs


class Popularity:
    name = "popularity"
    same_for_every_user = True

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.float32)

    @classmethod
    def train(cls, inputs: FitInputs) -> Popularity:
        return cls().fit(inputs.matrix)

    def fit(self, train: sp.csr_matrix) -> Popularity:
        self.counts = np.asarray((train > 0).sum(axis=0), dtype=np.float32).ravel()
        return self

    def score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        """(batch, n_items): log(1 + raters) for every user alike (a read-only broadcast view)."""
        return np.broadcast_to(np.log1p(self.counts), (history.shape[0], len(self.counts)))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Popularity:
        model = cls()
        model.counts = arrays["counts"]
        return model
