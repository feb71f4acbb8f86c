"""LightFM feature matrices: identity plus side information, rows normalised to sum 1."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from ml.dataset import Catalog

MAX_TAGS = 5


def _one_hot(values: list[list[str]], n_rows: int) -> sp.csr_matrix:
    vocabulary = sorted({v for row in values for v in row})
    col = {v: j for j, v in enumerate(vocabulary)}
    rows = [i for i, row in enumerate(values) for _ in row]
    cols = [col[v] for row in values for v in row]
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_rows, len(vocabulary)))


def item_features(catalog: Catalog) -> sp.csr_matrix:
    """(n_items, n_items + n_side): identity, genres, release decade, most used tags.

    The side features give items without ratings a representation (cold start).
    """
    side = [
        [f"genre:{g}" for g in catalog.genres[i]]
        + ([f"decade:{catalog.years[i] // 10 * 10}"] if catalog.years[i] else [])
        + [f"tag:{t}" for t in (catalog.tags[i][:MAX_TAGS] if catalog.tags else [])]
        for i in range(catalog.n_items)
    ]
    matrix = sp.hstack(
        [sp.identity(catalog.n_items, dtype=np.float32, format="csr"), _one_hot(side, catalog.n_items)]
    )
    return normalize(matrix.tocsr(), norm="l1")


def user_features(user_ids: np.ndarray, users: pd.DataFrame | None) -> sp.csr_matrix | None:
    """(n_users, n_users + n_side): identity and demographics where the data set has them, else None."""
    if users is None or users.empty or users[["age", "gender", "occupation"]].isna().all().all():
        return None
    frame = users.set_index("user_id").reindex(user_ids)
    side = [
        [f"{c}:{v}" for c, v in (("age", _age_band(a)), ("gender", g), ("occupation", o)) if v is not None]
        for a, g, o in zip(frame["age"], frame["gender"], frame["occupation"], strict=True)
    ]
    n = len(user_ids)
    matrix = sp.hstack([sp.identity(n, dtype=np.float32, format="csr"), _one_hot(side, n)])
    return normalize(matrix.tocsr(), norm="l1")


def _age_band(age: Any) -> str | None:
    if age is None or pd.isna(age):
        return None
    return str(min(int(age) // 10 * 10, 60))
