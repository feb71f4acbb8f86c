"""Drift: do the ratings arriving now look like the ratings the serving model learned from?

Each rating is described by five columns:

- ``rating``: its value;
- ``genre``: one of the movie's genres, picked by a hash of (user, movie), so that a movie
  with several genres spreads its ratings evenly over them: the column's distribution is
  the share of each genre;
- ``user_activity``: log1p of how many of this user's ratings the model learned from;
- ``item_popularity``: log1p of how many ratings of this movie the model learned from;
- ``new_user``: the model learned nothing of this user.

The reference is a random sample of the training ratings, described with the training
counts, stored beside the model version (``drift_reference.parquet``, ``drift_counts.npz``).
The current window is the ratings made since the model's data cut-off, described with the
same counts. Evidently's ``DataDriftPreset`` compares them and decides, per column, whether
it drifted (on samples over 1,000 rows by a distance with a threshold, Wasserstein for
numbers and Jensen-Shannon for categories; on smaller ones by a test's p-value), and
whether the dataset did (the share of drifted columns reaching ``drift_share``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

    from ml.interactions import Catalog

REFERENCE = "drift_reference.parquet"
COUNTS = "drift_counts.npz"
NUMERICAL = ["rating", "user_activity", "item_popularity"]
CATEGORICAL = ["genre", "new_user"]
COLUMNS = ["rating", "genre", "user_activity", "item_popularity", "new_user"]
NO_GENRE = "(no genres listed)"


@dataclass(frozen=True)
class Counts:
    """How many training ratings each user and each movie had (ids sorted)."""

    user_ids: np.ndarray
    user_counts: np.ndarray
    item_ids: np.ndarray
    item_counts: np.ndarray

    @classmethod
    def of(cls, ratings: pd.DataFrame) -> Counts:
        users, user_counts = np.unique(ratings["user_id"].to_numpy(dtype=np.int64), return_counts=True)
        items, item_counts = np.unique(ratings["movie_id"].to_numpy(dtype=np.int64), return_counts=True)
        return cls(users, user_counts, items, item_counts)

    @staticmethod
    def _lookup(ids: np.ndarray, counts: np.ndarray, keys: np.ndarray) -> np.ndarray:
        if not len(ids):
            return np.zeros(len(keys), dtype=np.int64)
        pos = np.searchsorted(ids, keys).clip(0, len(ids) - 1)
        return np.where(ids[pos] == keys, counts[pos], 0)

    def users(self, keys: np.ndarray) -> np.ndarray:
        return self._lookup(self.user_ids, self.user_counts, keys)

    def items(self, keys: np.ndarray) -> np.ndarray:
        return self._lookup(self.item_ids, self.item_counts, keys)

    def save(self, path: Path) -> None:
        np.savez(
            path,
            user_ids=self.user_ids,
            user_counts=self.user_counts,
            item_ids=self.item_ids,
            item_counts=self.item_counts,
        )

    @classmethod
    def load(cls, path: Path) -> Counts:
        with np.load(path) as data:
            return cls(data["user_ids"], data["user_counts"], data["item_ids"], data["item_counts"])


def pick_genre(user_ids: np.ndarray, movie_ids: np.ndarray, genres: list[list[str]]) -> list[str]:
    """One genre per rating: the movie's genres (sorted) indexed by a hash of (user, movie)."""
    mixed = (
        user_ids.astype(np.uint64) * np.uint64(0x9E3779B1)
        + movie_ids.astype(np.uint64) * np.uint64(0x85EBCA77)
    ) >> np.uint64(7)
    out = []
    for h, names in zip(mixed.tolist(), genres, strict=True):
        ordered = sorted(names)
        out.append(ordered[h % len(ordered)] if ordered else NO_GENRE)
    return out


def describe(ratings: pd.DataFrame, counts: Counts, genres_of: dict[int, list[str]]) -> pd.DataFrame:
    """The five drift columns of ``ratings`` (user_id, movie_id, rating)."""
    users = ratings["user_id"].to_numpy(dtype=np.int64)
    movies = ratings["movie_id"].to_numpy(dtype=np.int64)
    user_counts = counts.users(users)
    return pd.DataFrame(
        {
            "rating": ratings["rating"].to_numpy(dtype=np.float64),
            "genre": pick_genre(users, movies, [genres_of.get(int(m), []) for m in movies]),
            "user_activity": np.log1p(user_counts),
            "item_popularity": np.log1p(counts.items(movies)),
            "new_user": np.where(user_counts == 0, "yes", "no"),
        }
    )


def save_reference(
    directory: Path, ratings: pd.DataFrame, catalog: Catalog, *, sample: int = 20_000, seed: int = 0
) -> int:
    """The training snapshot, written beside the model: a random sample of ``ratings``
    described with the counts of all of them. Returns the rows kept."""
    counts = Counts.of(ratings)
    rows = ratings if len(ratings) <= sample else ratings.sample(n=sample, random_state=seed)
    genres_of = {int(i): g for i, g in zip(catalog.item_ids.tolist(), catalog.genres, strict=True)}
    describe(rows, counts, genres_of).to_parquet(directory / REFERENCE, index=False)
    counts.save(directory / COUNTS)
    return len(rows)


def load_reference(directory: Path) -> tuple[pd.DataFrame, Counts] | None:
    """The snapshot stored with a model version; None for a version trained before drift
    snapshots existed."""
    if not (directory / REFERENCE).exists() or not (directory / COUNTS).exists():
        return None
    return pd.read_parquet(directory / REFERENCE), Counts.load(directory / COUNTS)


@dataclass(frozen=True)
class ColumnDrift:
    name: str
    method: str
    threshold: float
    statistic: float
    p_value: float | None  # for the methods that are tests; distances have none
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    dataset_drift: bool
    drift_share: float  # the share of columns that drifted
    threshold: float  # the share of drifted columns that makes the dataset drift
    reference_rows: int
    current_rows: int
    columns: list[ColumnDrift]

    def as_dict(self) -> dict[str, Any]:
        return {
            "datasetDrift": self.dataset_drift,
            "driftShare": self.drift_share,
            "threshold": self.threshold,
            "referenceRows": self.reference_rows,
            "currentRows": self.current_rows,
            "columns": [
                {
                    "name": c.name,
                    "method": c.method,
                    "threshold": c.threshold,
                    "statistic": c.statistic,
                    "pValue": c.p_value,
                    "drifted": c.drifted,
                }
                for c in self.columns
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftResult:
        return cls(
            dataset_drift=bool(data["datasetDrift"]),
            drift_share=float(data["driftShare"]),
            threshold=float(data["threshold"]),
            reference_rows=int(data["referenceRows"]),
            current_rows=int(data["currentRows"]),
            columns=[
                ColumnDrift(
                    c["name"],
                    c["method"],
                    float(c["threshold"]),
                    float(c["statistic"]),
                    c["pValue"],
                    bool(c["drifted"]),
                )
                for c in data["columns"]
            ],
        )


def compare(
    reference: pd.DataFrame, current: pd.DataFrame, *, drift_share: float
) -> tuple[DriftResult, Snapshot]:
    """Evidently's data drift report of ``current`` against ``reference`` (both from
    ``describe``), with its per-column and dataset decisions."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERICAL, categorical_columns=CATEGORICAL)
    report = Report([DataDriftPreset(columns=COLUMNS, drift_share=drift_share)], include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(current[COLUMNS], data_definition=definition),
        Dataset.from_pandas(reference[COLUMNS], data_definition=definition),
    )
    data = snapshot.dict()
    drifted = {
        test["metric_config"]["params"]["column"]: test["status"] == "FAIL"
        for test in data["tests"]
        if test["metric_config"]["params"].get("type", "").endswith("ValueDrift")
    }
    columns: list[ColumnDrift] = []
    share = 0.0
    for metric in data["metrics"]:
        config = metric["config"]
        if config["type"].endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif config["type"].endswith("ValueDrift"):
            value = float(metric["value"])
            method = str(config["method"])
            columns.append(
                ColumnDrift(
                    name=config["column"],
                    method=method,
                    threshold=float(config["threshold"]),
                    statistic=value,
                    p_value=value if "p_value" in method else None,
                    drifted=drifted[config["column"]],
                )
            )
    columns.sort(key=lambda c: COLUMNS.index(c.name))
    result = DriftResult(
        dataset_drift=share >= drift_share,
        drift_share=share,
        threshold=drift_share,
        reference_rows=len(reference),
        current_rows=len(current),
        columns=columns,
    )
    return result, snapshot
