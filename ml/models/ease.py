"""EASE (Steck 2019): a closed-form item-item model, strong on small dense catalogs.

B = I - P / diag(P) with P = (X'X + lambda I)^-1 and a zero diagonal. Memory is
n_items^2 floats, so it is used only where the catalog fits (``max_items``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from ml.models.base import FitInputs


class EASE:
    name = "ease"

    def __init__(self, lam: float = 500.0, max_items: int = 12_000) -> None:
        self.lam = lam
        self.max_items = max_items
        self.weights = np.zeros((0, 0), dtype=np.float32)

    def fits(self, n_items: int) -> bool:
        return n_items <= self.max_items

    @classmethod
    def train(cls, inputs: FitInputs) -> EASE | None:
        """Fitted on the ratings, or None where the catalog is too large for an n_items^2 matrix."""
        model = cls(inputs.config.ease_lambda, inputs.config.ease_max_items)
        return model.fit(inputs.matrix) if model.fits(inputs.matrix.shape[1]) else None

    def fit(self, train: sp.csr_matrix) -> EASE:
        if not self.fits(train.shape[1]):
            raise ValueError(f"EASE needs n_items <= {self.max_items}, got {train.shape[1]}")
        x = (train > 0).astype(np.float64)
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += self.lam
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)
        b[np.diag_indices_from(b)] = 0.0
        self.weights = b.astype(np.float32)
        return self

    def score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        """(batch, n_items) = signed binary history @ B: one matrix product for the batch. A rated
        item counts +1; a negative entry (a dismissal) counts -1, so what is like it falls."""
        return np.asarray(history.sign().astype(np.float32) @ self.weights)

    def per_rating(
        self, rated: np.ndarray, values: np.ndarray, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """((len(items), len(rated)) sign(r_j) * (B[j, i] - mean_k B[j, k]), zeros): each rated
        column's part of ``score``, centred over all columns (``ml.attribution``)."""
        rows = np.asarray(self.weights[rated], dtype=np.float64)  # (m, n_items)
        centred = rows[:, items] - rows.mean(axis=1, keepdims=True)
        return (np.sign(values)[:, None] * centred).T, np.zeros(len(items))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "lam": np.array(self.lam)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> EASE:
        model = cls(float(arrays["lam"]))
        model.weights = arrays["weights"]
        return model
