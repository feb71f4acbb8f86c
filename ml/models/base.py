"""What a scoring component is: the types every model in ``ml/models`` and the registry share.

A component is fitted from ``FitInputs`` (its ``train`` classmethod, registered in
``ml.components.COMPONENTS``), scores a batch of users' rating rows, and saves to and loads
from named arrays. One that can say what each rating added to a score implements
``PerRating`` too, which ``ml.attribution`` reads; one that scores every user alike (the
popularity prior) sets ``same_for_every_user``. ``tests/ml/test_components.py`` runs the same
contract over every registered component.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class FitInputs:
    """What a component may learn from: the training ratings, content features of the items
    and side features of the users (rows as the matrix's), and the training settings."""

    matrix: sp.csr_matrix  # (n_users, n_items), ratings
    item_features: sp.csr_matrix
    user_features: sp.csr_matrix | None
    config: Any  # ml.training.TrainConfig


class Component(Protocol):
    name: str

    def score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        """(batch, n_items), a new array the caller may overwrite (or a read-only broadcast
        view for components marked ``same_for_every_user``)."""
        ...

    def arrays(self) -> dict[str, np.ndarray]: ...


class PerRating(Protocol):
    def per_rating(
        self, rated: np.ndarray, values: np.ndarray, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """((len(items), len(rated)) parts of each rated column, (len(items),) the items' own
        parts), both centred over all columns, in the component's raw units."""
        ...
