"""Are a recommendation's reasons what made it? Delete them and ask again (PRINCE's test).

    python -m benchmarks.counterfactual [--held-out 100] [--tune] [--k 3]

Protocol, on the real MovieLens 100K: ``--held-out`` users (seed 0) are taken out; the model is
trained on everyone else (`cinerec train`'s components; with ``--tune`` its tuned blend
weights, else its defaults). Each held-out user is then a new account that rated what they
rated, folded in at request time. For each of their top 3 recommendations, the ratings that a
chooser names as its reasons are deleted and the list is ranked again: does the movie leave
the top 10? Choosers, in the same run on the same cases:

- ``attribution``: the ratings with the largest parts of the blended score (``ml.attribution``);
- ``content``: the evidence cinerec showed before: the liked movies nearest by content embedding;
- ``ease``: EASE's own largest contributors, ``sign(r_j) * B[j, i]`` (the issue's yardstick);
- ``random``: as many random ratings as the attribution named;
- ``greedy`` (with ``--greedy``, slow): the best any 3 deletions found one at a time can do:
  each step deletes the rating whose removal pushes the movie furthest down, scored again.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import SHARED, machine, save
from ml import attribution
from ml.hybrid import HybridRecommender
from ml.interactions import Interactions
from ml.training import TrainConfig, TrainData, train


def ml100k() -> tuple[pd.DataFrame, TrainData]:
    """The real MovieLens 100K (``../shared/data/ml100k.py``): its ratings and training data."""
    import subprocess
    import sys
    import tempfile

    from benchmarks.preference import load
    from ml.data.movielens import read_users

    data_dir = Path(tempfile.mkdtemp(prefix="cinerec-ml100k-")) / "ml-100k"
    subprocess.run([sys.executable, str(SHARED / "ml100k.py"), str(data_dir)], check=True)
    _, catalog = load(data_dir)
    ratings = pd.read_csv(data_dir / "ratings.csv").rename(
        columns={"userId": "user_id", "movieId": "movie_id"}
    )
    ratings = ratings[["user_id", "movie_id", "rating"]]
    return ratings, TrainData(ratings, catalog, read_users(data_dir / "users.csv").frame)


def ease_largest(model: HybridRecommender, row: Any, item: int, k: int) -> list[int]:
    weights = model.components["ease"].weights  # type: ignore[attr-defined]
    parts = np.sign(row.data) * np.asarray(weights[row.indices, item])
    return [int(c) for c in row.indices[np.argsort(-parts, kind="stable")[:k]]]


def greedy(model: HybridRecommender, row: Any, item: int, k: int) -> list[int]:
    users = np.full(1, -1, dtype=np.int64)
    chosen: list[int] = []
    current = row.copy()
    for _ in range(k):
        best, best_rank = -1, -1
        for column in current.indices:
            kept = current.copy()
            kept.data[kept.indices == column] = 0
            kept.eliminate_zeros()
            scores = model.score(kept, users)[0]
            scores[kept.indices] = -np.inf
            rank = int((scores > scores[item]).sum())
            if rank > best_rank:
                best, best_rank = int(column), rank
        chosen.append(best)
        current.data[current.indices == best] = 0
        current.eliminate_zeros()
    return chosen


def held_out_study(
    ratings: pd.DataFrame, data: TrainData, n_held_out: int, *, tune: bool, seed: int = 0
) -> tuple[HybridRecommender, Any]:
    """(model trained without the held-out users, their rating rows over its columns)."""
    users = np.sort(ratings["user_id"].unique())
    held = np.random.default_rng(seed).choice(users, size=n_held_out, replace=False)
    rest = ratings[~ratings["user_id"].isin(held)]
    config = TrainConfig(tune=tune, ranker=False, progress=False, threads=1)
    trained = train(TrainData(rest, data.catalog, data.users), config, refit=False)
    assert trained.model is not None
    rows = Interactions.from_frame(ratings[ratings["user_id"].isin(held)], data.catalog).matrix
    return trained.model, rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--held-out", type=int, default=100)
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--greedy", action="store_true", help="add the greedy deletions (minutes)")
    args = parser.parse_args()
    ratings, data = ml100k()
    start = time.perf_counter()
    model, rows = held_out_study(ratings, data, args.held_out, tune=args.tune)
    trained_s = time.perf_counter() - start
    choose = {
        "attribution": attribution.attributed,
        "content": attribution.content_nearest,
        "ease": ease_largest,
        **({"greedy": greedy} if args.greedy else {}),
    }
    start = time.perf_counter()
    found = attribution.counterfactual(model, rows, choose, k=args.k)
    result = {
        "held_out_users": args.held_out,
        "k": args.k,
        "weights": model.weights,
        "train_s": round(trained_s, 1),
        "counterfactual_s": round(time.perf_counter() - start, 1),
        "machine": machine(),
        **{
            name: {
                "cases": c.cases,
                "left_top_10": c.left,
                "rate": round(c.rate, 3),
                "removed": round(c.removed, 2),
                "mean_rank_after": round(c.rank, 2),  # before: 1.0 (ranks 0, 1, 2)
            }
            for name, c in found.items()
        },
    }
    save("counterfactual", result)  # prints it too


if __name__ == "__main__":
    main()
