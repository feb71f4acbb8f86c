"""Which "similar movies" would a person call similar? Content, the model's item representations
and blends, on the co-like lift of held-out users.

    python -m benchmarks.similar [--held-out 0.3] [--movies 40] [--k 10]

Protocol, on the real MovieLens 100K: a share of the users (seed 0) is held out; the model is
trained on the rest as `cinerec train` trains it (tuned). For each of the ``--movies`` most
rated movies X (in the training part), each method's ``--k`` nearest movies Y. Measured on the
held-out users only (their ratings were never seen by any method), likes being ratings of 4 or
more: the co-like lift P(likes Y | likes X) / P(likes Y), its median and mean over the pairs;
and, over the pairs, the share that shares a genre with X and the share released within a
year of it. Methods (``ml.similarity``): ``content`` (served before), ``lightfm`` (cosine of the
item vectors), ``ease`` (B[X, Y]: how much rating X raises Y), ``itemcos`` (cosine of the
training ratings' columns, the classic baseline), and ``blend`` (ml.similarity.similar_scores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from benchmarks.common import machine, save
from benchmarks.counterfactual import ml100k
from ml import similarity
from ml.hybrid import top_k
from ml.interactions import Interactions
from ml.training import TrainConfig, TrainData, train


def lift_table(
    neighbours: np.ndarray, anchors: np.ndarray, likes: np.ndarray, genres: np.ndarray, years: np.ndarray
) -> dict[str, float]:
    """Lift and shares over (anchor, neighbour) pairs; ``likes`` (users, items) booleans."""
    liked = likes.sum(axis=0).astype(np.float64)
    p = liked / likes.shape[0]
    lifts, shared, near = [], [], []
    for x, ys in zip(anchors, neighbours, strict=True):
        both = likes[likes[:, x]][:, ys].sum(axis=0)
        given = both / max(liked[x], 1)
        lifts += list(np.where(p[ys] > 0, given / np.where(p[ys] > 0, p[ys], 1), np.nan))
        shared += list((genres[ys] @ genres[x]) > 0)
        near += list(np.abs(years[ys] - years[x]) <= 1)
    values = np.asarray(lifts, dtype=np.float64)
    return {
        "lift_median": round(float(np.nanmedian(values)), 3),
        "lift_mean": round(float(np.nanmean(values)), 3),
        "shares_a_genre": round(float(np.mean(shared)), 3),
        "within_a_year": round(float(np.mean(near)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--held-out", type=float, default=0.3)
    parser.add_argument("--movies", type=int, default=40)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    ratings, data = ml100k()
    users = np.sort(ratings["user_id"].unique())
    held = np.random.default_rng(0).choice(users, size=int(len(users) * args.held_out), replace=False)
    rest = ratings[~ratings["user_id"].isin(held)]
    start = time.perf_counter()
    config = TrainConfig(ranker=False, progress=False, threads=1)
    model = train(TrainData(rest, data.catalog, data.users), config, refit=False).model
    assert model is not None
    trained_s = time.perf_counter() - start
    seen = Interactions.from_frame(rest, data.catalog).matrix
    others = Interactions.from_frame(ratings[ratings["user_id"].isin(held)], data.catalog).matrix
    likes = (others >= 4).toarray()
    anchors = np.argsort(-np.diff(seen.tocsc().indptr), kind="stable")[: args.movies]
    genres = data.catalog.genre_matrix()[0].toarray() > 0
    years = np.asarray(data.catalog.years, dtype=np.float64)
    methods = {
        "content": similarity.content(model, anchors),
        "lightfm": similarity.item_vectors(model, anchors),
        "ease": similarity.ease(model, anchors),
        "itemcos": similarity.rating_columns(seen, anchors),
        "blend": similarity.similar_scores(model, anchors),
        "lightfm+ease": similarity.similar_scores(model, anchors, ("lightfm", "ease")),
        "content+lightfm": similarity.similar_scores(model, anchors, ("content", "lightfm")),
    }
    result: dict[str, object] = {
        "held_out_users": len(held),
        "anchors": args.movies,
        "k": args.k,
        "weights": model.weights,
        "train_s": round(trained_s, 1),
        "machine": machine(),
    }
    for name, scores in methods.items():
        scores = np.array(scores, dtype=np.float64)
        scores[np.arange(len(anchors)), anchors] = -np.inf  # never the movie itself
        top, _ = top_k(scores, args.k)
        result[name] = lift_table(top, anchors, likes, genres, years)
    save("similar", result)  # prints it too
    print(pd.DataFrame({k: v for k, v in result.items() if isinstance(v, dict) and k != "weights"}).T)


if __name__ == "__main__":
    main()
