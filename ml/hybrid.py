"""The hybrid recommender: standardised component scores blended with learned weights.

``score`` takes a batch of users' rating rows and returns (batch, n_items) in one matrix
product per component, so a request for 50 users is one call. Similarity and search
run over the content embeddings. A model may carry the rating matrix it was trained on
(``history``), so that serving reads from the database only the ratings made since.

A model saves to one ``.npy`` file per array plus ``meta.json``, and loads them
memory-mapped: several worker processes serving one version share those pages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ml.components import COMPONENTS
from ml.models.base import Component
from ml.ranker import Ranker

ARRAYS = "model.npz"  # the format before arrays were saved one .npy each (still read)
META = "meta.json"
RANKER = "ranker"  # the prefix of the learned ranker's arrays


def score_parts(
    components: dict[str, Component], names: list[str], history: sp.csr_matrix, users: np.ndarray
) -> dict[str, np.ndarray]:
    """Standardised (batch, n_items) scores of the named components, one matrix product each (a
    read-only broadcast row for a component that scores every user alike)."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        component = components[name]
        if getattr(component, "same_for_every_user", False):
            row = standardise(component.score(history[:1], users[:1]))
            out[name] = np.broadcast_to(row, (history.shape[0], row.shape[1]))
        else:
            out[name] = standardise(component.score(history, users), in_place=True)
    return out


def standardise(scores: np.ndarray, *, in_place: bool = False) -> np.ndarray:
    """Per-row z-scores in float32, so components on different scales blend by weight alone.

    With ``in_place`` a writable float32 ``scores`` is overwritten instead of copied.
    """
    writable = in_place and scores.dtype == np.float32 and scores.flags.writeable
    out = scores if writable else np.array(scores, dtype=np.float32)
    out -= out.mean(axis=1, keepdims=True)
    std = np.sqrt(np.einsum("ij,ij->i", out, out) / out.shape[1])[:, None]
    out /= np.where(std == 0, np.float32(1), std)
    return out


@dataclass
class HybridRecommender:
    item_ids: np.ndarray  # public movie ids of the columns
    user_ids: np.ndarray  # public ids of the users the components were trained on
    components: dict[str, Component]
    weights: dict[str, float]
    item_embeddings: np.ndarray  # (n_items, d), L2-normalised
    meta: dict[str, Any] = field(default_factory=dict)
    # the ratings the model was trained on: (n_history_users, n_items) over history_user_ids
    history: sp.csr_matrix | None = None
    history_user_ids: np.ndarray | None = None
    # the learned ranker, which orders the lists of users with 1 to ``ranker_up_to`` ratings
    ranker: Ranker | None = None
    ranker_up_to: int = 0

    @property
    def data_cutoff(self) -> float | None:
        """Seconds since the epoch when the training ratings were read: ratings made since then
        are not in ``history``."""
        cutoff = self.meta.get("data_cutoff")
        return float(cutoff) if cutoff is not None else None

    def trained_rows(self, user_ids: list[int]) -> sp.csr_matrix:
        """(len(user_ids), n_items): the users' ratings as trained on, straight from the stored
        matrix (a slice, no Python objects); empty rows for users it never saw."""
        n = len(user_ids)
        if self.history is None or self.history_user_ids is None or not len(self.history_user_ids):
            return sp.csr_matrix((n, self.n_items), dtype=np.float32)
        ids = np.asarray(user_ids, dtype=np.int64)
        pos = np.searchsorted(self.history_user_ids, ids).clip(0, len(self.history_user_ids) - 1)
        found = self.history_user_ids[pos] == ids
        # unknown users take an empty row: point them at row 0 and zero the result below
        rows = self.history[np.where(found, pos, 0)]
        if not found.all():
            rows = sp.diags(found.astype(np.float32)) @ rows
            rows.eliminate_zeros()
        return sp.csr_matrix(rows, dtype=np.float32)

    def trained_ratings(self, user_ids: list[int]) -> dict[int, list[tuple[int, float]]]:
        """Each user's (movie id, rating) pairs as trained on (empty for users it never saw)."""
        out: dict[int, list[tuple[int, float]]] = {u: [] for u in user_ids}
        if self.history is None or self.history_user_ids is None or not len(self.history_user_ids):
            return out
        ids = np.asarray(user_ids, dtype=np.int64)
        pos = np.searchsorted(self.history_user_ids, ids).clip(0, len(self.history_user_ids) - 1)
        indptr, indices, data = self.history.indptr, self.history.indices, self.history.data
        for user, row, found in zip(user_ids, pos, self.history_user_ids[pos] == ids, strict=True):
            if found:
                start, end = indptr[row], indptr[row + 1]
                out[user] = list(
                    zip(self.item_ids[indices[start:end]].tolist(), data[start:end].tolist(), strict=True)
                )
        return out

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_index(self, movie_ids: np.ndarray | list[int]) -> np.ndarray:
        ids = np.asarray(movie_ids, dtype=np.int64)
        pos = np.searchsorted(self.item_ids, ids).clip(0, self.n_items - 1)
        return np.where(self.item_ids[pos] == ids, pos, -1)

    def user_index(self, user_ids: np.ndarray | list[int]) -> np.ndarray:
        ids = np.asarray(user_ids, dtype=np.int64)
        if not len(self.user_ids):
            return np.full(len(ids), -1)
        pos = np.searchsorted(self.user_ids, ids).clip(0, len(self.user_ids) - 1)
        return np.where(self.user_ids[pos] == ids, pos, -1)

    def score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        """(batch, n_items) scores; ``users`` are model indices (-1: not trained on). The
        blend's, and for rows with 1 to ``ranker_up_to`` ratings, the blend's values with each
        row's candidates reordered by the learned ranker (``Ranker.rank``)."""
        total = self.blend(history, users)
        new = self.ranked_rows(history)
        if len(new):
            assert self.ranker is not None
            rows = history[new]
            parts = score_parts(self.components, self.ranker.generators, rows, users[new])
            total[new] = self.ranker.rank(total[new], parts, rows, self.item_embeddings)
        return total

    def ranked_rows(self, history: sp.csr_matrix) -> np.ndarray:
        """The rows the ranker orders: those with 1 to ``ranker_up_to`` ratings."""
        if self.ranker is None or not self.ranker_up_to:
            return np.zeros(0, dtype=np.int64)
        rated = np.diff((history > 0).tocsr().indptr)
        return np.flatnonzero((rated >= 1) & (rated <= self.ranker_up_to))

    def blend(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        """(batch, n_items) blended scores of the components."""
        total = np.zeros((history.shape[0], self.n_items), dtype=np.float32)
        for name, weight in self.weights.items():
            if not weight:
                continue
            component = self.components[name]
            if getattr(component, "same_for_every_user", False):  # one row, broadcast over the batch
                total += np.float32(weight) * standardise(component.score(history[:1], users[:1]))
            else:
                part = standardise(component.score(history, users), in_place=True)  # a fresh array
                part *= np.float32(weight)
                total += part
        return total

    def recommend(
        self,
        history: sp.csr_matrix,
        users: np.ndarray,
        k: int,
        *,
        exclude_rated: bool | np.ndarray = True,
        rows: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores per row, best first: (batch, k) each. What serving,
        evaluation, rerank evaluation and the benchmarks all call (see ``rank_unrated``).

        With ``rows``, each user is scored once and ranked once per entry of ``rows`` (a user
        asked for twice in one batch, with and without rated movies, say). ``allowed``, one
        boolean per column (or per row and column), keeps the rest out before the top."""
        scores = self.score(history, users)
        if rows is not None:
            scores, history = scores[rows], history[rows]
        return rank_unrated(scores, history, k, exclude_rated=exclude_rated, allowed=allowed)

    def similar(self, item: int, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.search(self.item_embeddings[item], k, allowed, leave_out=item)

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None, leave_out: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` columns whose content embedding is closest to ``query`` (cosine), among the
        ``allowed`` ones, best first; -inf scores (nothing allowed left) are dropped."""
        similarity = self.item_embeddings @ query
        if allowed is not None:
            similarity = np.where(allowed, similarity, -np.inf)
        if leave_out is not None:
            similarity[leave_out] = -np.inf
        top, values = top_k(similarity[None, :], k)
        keep = np.isfinite(values[0])
        return top[0][keep], values[0][keep]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {
            "item_ids": self.item_ids,
            "user_ids": self.user_ids,
            "item_embeddings": self.item_embeddings,
        }
        for name, component in self.components.items():
            arrays.update({f"{name}.{key}": value for key, value in component.arrays().items()})
        if self.history is not None and self.history_user_ids is not None:
            history = self.history.tocsr()
            arrays.update(
                {
                    "history.data": history.data.astype(np.float32),
                    # int32 where it fits, so that scipy takes the mapped arrays without a copy
                    "history.indices": history.indices.astype(np.int32),
                    "history.indptr": history.indptr.astype(np.int32 if history.nnz < 2**31 else np.int64),
                    "history.user_ids": self.history_user_ids.astype(np.int64),
                }
            )
        if self.ranker is not None:
            arrays.update({f"{RANKER}.{key}": value for key, value in self.ranker.arrays().items()})
        for key, value in arrays.items():
            value = np.asarray(value)
            np.save(directory / f"{key}.npy", value if value.ndim == 0 else np.ascontiguousarray(value))
        meta = {
            **self.meta,
            "weights": self.weights,
            "components": sorted(self.components),
            "arrays": sorted(arrays),
            "ranker_up_to": self.ranker_up_to if self.ranker is not None else 0,
        }
        (directory / META).write_text(json.dumps(meta, indent=2, default=float))

    @classmethod
    def load(cls, directory: Path, *, mmap: bool = True) -> HybridRecommender:
        """A saved model; with ``mmap`` its arrays are memory-mapped read-only (pages shared by
        every process that maps the same files)."""
        meta = json.loads((directory / META).read_text())
        if (directory / ARRAYS).exists():
            with np.load(directory / ARRAYS) as data:
                arrays = {key: data[key] for key in data.files}
        else:
            arrays = {key: _load_array(directory / f"{key}.npy", mmap) for key in meta["arrays"]}
        history = history_users = None
        if "history.indptr" in arrays:
            history_users = arrays["history.user_ids"]
            history = sp.csr_matrix(
                (arrays["history.data"], arrays["history.indices"], arrays["history.indptr"]),
                shape=(len(history_users), len(arrays["item_ids"])),
            )
        components: dict[str, Component] = {}
        for name in meta["components"]:
            prefix = f"{name}."
            parts = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            components[name] = COMPONENTS[name].load(parts)
        ranker = None
        if any(key.startswith(f"{RANKER}.") for key in arrays):
            ranker = Ranker.from_arrays(
                {k[len(RANKER) + 1 :]: v for k, v in arrays.items() if k.startswith(f"{RANKER}.")}
            )
        return cls(
            item_ids=arrays["item_ids"],
            user_ids=arrays["user_ids"],
            components=components,
            weights={k: float(v) for k, v in meta["weights"].items()},
            item_embeddings=arrays["item_embeddings"],
            meta=meta,
            history=history,
            history_user_ids=history_users,
            ranker=ranker,
            ranker_up_to=int(meta.get("ranker_up_to", 0)),
        )


MMAP_MIN_BYTES = 1 << 20  # smaller arrays are read into memory: a mapping costs more than it shares


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    if mmap and path.stat().st_size >= MMAP_MIN_BYTES:
        return np.load(path, mmap_mode="r")
    return np.load(path)


def rank_unrated(
    scores: np.ndarray,
    history: sp.csr_matrix,
    k: int,
    *,
    exclude_rated: bool | np.ndarray = True,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The one ranking path: mask each row's rated items (``history``'s positive entries) out of
    ``scores`` (overwritten in place), and what ``allowed`` does not allow, then take the top
    ``k``, best first: a filter applies to the whole vector, never to a short list after it.

    ``exclude_rated`` is one flag for every row or a boolean per row. A masked item scores
    -inf; when a row has fewer than ``k`` unrated items its tail is -inf, which callers drop.
    """
    if allowed is not None:
        np.putmask(scores, ~np.broadcast_to(allowed, scores.shape), -np.inf)
    rows, cols = (history > 0).nonzero()  # rated; a negative entry (dismissed) is ``allowed``'s to keep out
    if isinstance(exclude_rated, np.ndarray):
        keep = exclude_rated[rows]
        rows, cols = rows[keep], cols[keep]
    elif not exclude_rated:
        rows = cols = np.zeros(0, dtype=np.int64)
    scores[rows, cols] = -np.inf
    return top_k(scores, k)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest entries of each row, best first."""
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((scores.shape[0], 0), dtype=np.int64), np.zeros(
            (scores.shape[0], 0), dtype=scores.dtype
        )
    # the k largest sit at the end after partitioning at n - k: no negated copy of the scores
    part = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k :]
    values = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(values, order, axis=1)
