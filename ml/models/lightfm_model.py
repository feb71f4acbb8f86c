"""LightFM (WARP) on implicit feedback with item and user features: the scalable backbone.

Serving keeps only the learned representations (user and item vectors and biases), so a
loaded model needs no LightFM object. Users the model has not seen are folded in: their
vector is the rating-weighted mean of the vectors of the items they rated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from ml.models.base import FitInputs


class LightFMModel:
    name = "lightfm"

    def __init__(
        self,
        components: int = 64,
        epochs: int = 30,
        learning_rate: float = 0.05,
        item_alpha: float = 1e-6,
        user_alpha: float = 1e-6,
        threads: int = 2,
        seed: int = 42,
    ) -> None:
        self.params = {
            "components": components,
            "epochs": epochs,
            "learning_rate": learning_rate,
            "item_alpha": item_alpha,
            "user_alpha": user_alpha,
        }
        self.threads = threads
        self.seed = seed
        self.user_vectors = np.zeros((0, components), dtype=np.float32)
        self.user_bias = np.zeros(0, dtype=np.float32)
        self.item_vectors = np.zeros((0, components), dtype=np.float32)
        self.item_bias = np.zeros(0, dtype=np.float32)

    @classmethod
    def train(cls, inputs: FitInputs) -> LightFMModel:
        config = inputs.config
        model = cls(
            components=config.components,
            epochs=config.epochs,
            learning_rate=config.learning_rate,
            threads=config.threads,
            seed=config.seed,
        )
        return model.fit(inputs.matrix, inputs.item_features, inputs.user_features, progress=config.progress)

    def fit(
        self,
        train: sp.csr_matrix,
        item_features: sp.csr_matrix | None = None,
        user_features: sp.csr_matrix | None = None,
        progress: bool = False,
    ) -> LightFMModel:
        from lightfm import LightFM

        p = self.params
        model = LightFM(
            no_components=p["components"],
            loss="warp",
            learning_rate=p["learning_rate"],
            item_alpha=p["item_alpha"],
            user_alpha=p["user_alpha"],
            random_state=np.random.RandomState(self.seed),
        )
        interactions = (train > 0).astype(np.float32).tocoo()
        model.fit(
            interactions,
            item_features=item_features,
            user_features=user_features,
            epochs=p["epochs"],
            num_threads=self.threads,
            verbose=progress,
        )
        self.item_bias, self.item_vectors = (
            a.astype(np.float32) for a in model.get_item_representations(item_features)
        )
        self.user_bias, self.user_vectors = (
            a.astype(np.float32) for a in model.get_user_representations(user_features)
        )
        return self

    def fold_in(self, history: sp.csr_matrix) -> np.ndarray:
        """(batch, components): rating-weighted mean of the rated items' vectors; a negative
        weight (a dismissal) pulls the user away from that item."""
        weights = history.astype(np.float32)
        totals = np.asarray(abs(weights).sum(axis=1)).ravel()
        return np.asarray(weights @ self.item_vectors) / np.where(totals == 0, 1, totals)[:, None]

    def score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        """(batch, n_items); ``users`` holds model user indices, -1 for users to fold in."""
        vectors = np.empty((len(users), self.item_vectors.shape[1]), dtype=np.float32)
        known = users >= 0
        vectors[known] = self.user_vectors[users[known]]
        if (~known).any():
            vectors[~known] = self.fold_in(history[np.flatnonzero(~known)])
        scores = vectors @ self.item_vectors.T
        scores += self.item_bias
        return scores

    def per_rating(
        self, rated: np.ndarray, values: np.ndarray, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """((len(items), len(rated)) r_j / sum|r| * V[j] . (V[i] - mean V), b[i] - mean b): the
        fold-in score split by rated column, and the item bias, centred over all columns
        (``ml.attribution``)."""
        vectors = np.asarray(self.item_vectors, dtype=np.float64)
        total = np.abs(values).sum()
        weights = values / total if total else values
        centred = vectors[items] - vectors.mean(axis=0)
        bias = np.asarray(self.item_bias, dtype=np.float64)
        return (centred @ vectors[rated].T) * weights, bias[items] - bias.mean()

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "user_vectors": self.user_vectors,
            "user_bias": self.user_bias,
            "item_vectors": self.item_vectors,
            "item_bias": self.item_bias,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LightFMModel:
        model = cls(components=arrays["item_vectors"].shape[1])
        model.user_vectors = arrays["user_vectors"]
        model.user_bias = arrays["user_bias"]
        model.item_vectors = arrays["item_vectors"]
        model.item_bias = arrays["item_bias"]
        return model
