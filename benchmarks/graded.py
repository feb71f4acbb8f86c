"""Ratings as graded feedback: what changes when a low rating counts against a movie, on the
real MovieLens 100K.

    python -m benchmarks.graded

Today EASE reads a user's history as signed binary (every rating counts +1, a dismissal
-1), and LightFM folds a new user in as the rating-weighted mean of the rated movies'
vectors (a 1-star rating pulls towards the movie with weight 1). So a new user whose one
rating is 1 star is recommended what is like the movie they hated. The graded reading here
makes ratings of 2 stars or less negative, as a dismissal is: EASE reads them as -1 and the
fold-in pulls away from them (the content generator and the ranker's features already read
the value: liked minus disliked).
The components are those of `cinerec train`'s split (``benchmarks.ranker.Study``: refitted
on the whole training part, the tuned blend weights). Both readings of the history are
scored for the same users: the held-out split's users with their training histories cut to
1, 3 and 5 ratings (scored as users the components never saw), or whole (warm); and, for
the question the change is about, the same users cut to one rating of 2 stars or less.

nDCG@10 two ways, with 95% bootstrap intervals of the per-user paired difference:
- "rated": every held-out rating is relevant, as the project's evaluation counts (a movie
  the user rated 1 star is a hit: they did watch it);
- "liked": only held-out ratings of 4 or 5 are relevant (what a person means by a good pick).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks.common import machine, save
from benchmarks.ranker import Study
from ml import metrics as m
from ml import ranker as learned
from ml.hybrid import rank_unrated, score_parts
from ml.interactions import truncate

LOW = 2.0  # a rating of this or less counts against the movie in the graded reading


def graded(history: sp.csr_matrix) -> sp.csr_matrix:
    """``history`` with every rating of ``LOW`` or less made negative (read as -1, like a dismissal)."""
    out = history.copy().astype(np.float32)
    low = (out.data > 0) & (out.data <= LOW)
    out.data[low] = -out.data[low]
    return out


def _one_low(history: sp.csr_matrix, seed: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Each row cut to one of its ratings of ``LOW`` or less (the rows that have one)."""
    rng = np.random.default_rng(seed)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    kept: list[int] = []
    for r in range(history.shape[0]):
        lo, hi = history.indptr[r], history.indptr[r + 1]
        low = np.flatnonzero((history.data[lo:hi] > 0) & (history.data[lo:hi] <= LOW))
        if len(low):
            j = lo + int(rng.choice(low))
            rows.append(len(kept))
            cols.append(history.indices[j])
            vals.append(history.data[j])
            kept.append(r)
    cut = sp.csr_matrix((vals, (rows, cols)), shape=(len(kept), history.shape[1]), dtype=np.float32)
    return cut, np.asarray(kept)


def main() -> None:
    started = time.perf_counter()
    study = Study.prepare()
    components = study.fit_components_on_training()
    names = sorted(components)
    test = study.test_part.matrix
    users = np.flatnonzero(np.diff(test.indptr))
    rated = [test.indices[test.indptr[u] : test.indptr[u + 1]] for u in users]
    liked = [
        test.indices[test.indptr[u] : test.indptr[u + 1]][test.data[test.indptr[u] : test.indptr[u + 1]] >= 4]
        for u in users
    ]
    scorers = {"ease": {"ease": 1.0}, "blend": study.weights}
    out: dict[str, Any] = {"machine": machine(), "weights": study.weights, "users": len(users)}
    segments: dict[str, tuple[sp.csr_matrix, np.ndarray]] = {}
    whole = study.train_part.matrix[users]
    for keep in learned.COLD_CUTS:
        segments[f"cold-{keep}"] = (truncate(whole, keep, seed=keep), np.arange(len(users)))
    segments["one low rating"] = _one_low(whole, seed=9)
    segments["warm"] = (whole, np.arange(len(users)))
    table: dict[str, Any] = {}
    for segment, (history, index) in segments.items():
        cold = segment != "warm"
        model_rows = np.full(len(index), -1) if cold else users[index]
        row: dict[str, Any] = {"users": len(index)}
        for scorer, weights in scorers.items():
            found = {}
            for reading, h in (("binary", history), ("graded", graded(history))):
                parts = score_parts(components, names, h, model_rows)
                top = rank_unrated(learned.blend_of(parts, weights), h, 10)[0]
                found[reading] = {
                    "rated": m.ndcg_per_user(top, [rated[i] for i in index], 10),
                    "liked": m.ndcg_per_user(top, [liked[i] for i in index], 10),
                }
            for relevance in ("rated", "liked"):
                before, after = found["binary"][relevance], found["graded"][relevance]
                low, high = m.mean_interval(after - before)
                row[f"{scorer} {relevance}"] = {
                    "binary": round(float(before.mean()), 4),
                    "graded": round(float(after.mean()), 4),
                    "difference": [round(float((after - before).mean()), 4), round(low, 4), round(high, 4)],
                }
        table[segment] = row
        print(segment, json.dumps(row), flush=True)
    out["segments"] = table
    out["seconds"] = round(time.perf_counter() - started)
    save("graded", out)


if __name__ == "__main__":
    main()
