"""LightFM feature matrices: identity plus side information, rows normalised to sum 1."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from ml.interactions import Catalog

MAX_TAGS = 5
MAX_GENOME = 10


def _one_hot(values: list[list[str]], n_rows: int) -> sp.csr_matrix:
    vocabulary = sorted({v for row in values for v in row})
    col = {v: j for j, v in enumerate(vocabulary)}
    rows = [i for i, row in enumerate(values) for _ in row]
    cols = [col[v] for row in values for v in row]
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_rows, len(vocabulary)))


def item_features(catalog: Catalog, clusters: np.ndarray | None = None) -> sp.csr_matrix:
    """(n_items, n_items + n_side): identity, genres, release decade, most used tags, the tag
    genome's most relevant tags (weighted by relevance) and the item's content-embedding cluster.

    The side features give items without ratings a representation (cold start).
    """
    side = [
        [f"genre:{g}" for g in catalog.genres[i]]
        + ([f"decade:{catalog.years[i] // 10 * 10}"] if catalog.years[i] else [])
        + [f"tag:{t}" for t in (catalog.tags[i][:MAX_TAGS] if catalog.tags else [])]
        + ([f"embedding:{clusters[i]}"] if clusters is not None else [])
        for i in range(catalog.n_items)
    ]
    blocks = [sp.identity(catalog.n_items, dtype=np.float32, format="csr"), _one_hot(side, catalog.n_items)]
    if catalog.genome:
        blocks.append(_weighted([row[:MAX_GENOME] for row in catalog.genome], catalog.n_items))
    return normalize(sp.hstack(blocks).tocsr(), norm="l1")


def embedding_clusters(vectors: np.ndarray, n_clusters: int = 64, seed: int = 42) -> np.ndarray:
    """A k-means cluster id per item over the content embeddings: one cheap LightFM feature
    that carries the sentence-transformer's notion of content (384 dense features would not scale)."""
    from sklearn.cluster import MiniBatchKMeans

    k = max(1, min(n_clusters, len(vectors) // 10))
    return MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096).fit_predict(vectors)


def _weighted(values: list[list[tuple[str, float]]], n_rows: int) -> sp.csr_matrix:
    vocabulary = sorted({t for row in values for t, _ in row})
    col = {v: j for j, v in enumerate(vocabulary)}
    rows = [i for i, row in enumerate(values) for _ in row]
    cols = [col[t] for row in values for t, _ in row]
    data = [w for row in values for _, w in row]
    return sp.csr_matrix((np.asarray(data, np.float32), (rows, cols)), shape=(n_rows, len(vocabulary)))


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
