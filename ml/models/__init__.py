"""Scoring components of the hybrid. Each fits on a (n_users, n_items) rating matrix and
scores a batch of users from their rating history rows (so new ratings count at once)."""

from ml.models.ease import EASE
from ml.models.lightfm_model import LightFMModel
from ml.models.popularity import Popularity

__all__ = ["EASE", "LightFMModel", "Popularity"]
