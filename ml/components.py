"""The registry of scoring components: the one place a recommender is added.

Training fits every registered component that fits the data, tuning tries each one's
blend weights, and loading a saved model finds each component's class here. Adding a model
is one module (a class with ``train``, ``score``, ``arrays`` and ``from_arrays``) and one
line below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ml.models import EASE, LightFMModel, Popularity
from ml.models.base import Component, FitInputs

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Spec:
    """A registered component: how it is trained and loaded, and the blend weights tuning tries."""

    train: Callable[[FitInputs], Component | None]  # None: it does not fit this data
    load: Callable[[dict[str, np.ndarray]], Component]
    weights: tuple[float, ...]
    prior: bool = False  # only blended beside another component, never alone


COMPONENTS: dict[str, Spec] = {
    "popularity": Spec(Popularity.train, Popularity.from_arrays, (0.0, 0.1, 0.3), prior=True),
    "ease": Spec(EASE.train, EASE.from_arrays, (0.0, 0.5, 1.0)),
    "lightfm": Spec(LightFMModel.train, LightFMModel.from_arrays, (0.0, 0.25, 0.5, 1.0)),
}
