"""Where search's relevance floor sits: the best hit's content cosine for real queries against
nonsense ones, on a trained home (ML-100K in docs/benchmarks.md).

    python -m benchmarks.search_floor --home HOME [--floor 0.30]

A floor keeps a query's hits at or above it: every real query should keep its best hit, and a
nonsense query should find nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.common import machine, save

REAL = [
    "toys that come alive", "heat", "star wars", "a heist that goes wrong", "space adventure",
    "romantic comedy", "horror", "jurassic park", "godfather", "animated musical", "war film",
    "detective mystery", "toy story", "sci-fi", "western", "batman", "titanic", "funny movie for kids",
    "scary", "mafia", "alien invasion", "fargo", "casablanca", "disney", "james bond",
    "love story in paris", "courtroom drama", "film noir", "documentary", "schindler",
]  # fmt: skip
NONSENSE = [
    "asdfghjkl", "qwertyuiop", "zzzz", "xkcd", "lorem ipsum dolor", "1234567", "!!!", "blorf",
    "kjhsd fkjh", "the", "aaaaaaa", "ppppp qqqq", "hello world", "my tax return", "python dataclass",
    "kitchen sink plumbing", "weather tomorrow", "bank account balance", "zxcvbnm", "ghjkl",
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, required=True, help="a CINEREC_HOME with a trained model")
    parser.add_argument("--floor", type=float, default=0.30)
    args = parser.parse_args()
    from ml import embeddings
    from ml.hybrid import HybridRecommender

    versions = sorted((args.home / "models" / "cinerec-recommender").iterdir(), key=lambda p: int(p.name))
    model = HybridRecommender.load(versions[-1])
    best = [float(model.search(np.asarray(v), 1)[1][0]) for v in embeddings.encode(REAL + NONSENSE)]
    real, nonsense = best[: len(REAL)], best[len(REAL) :]
    result = {
        "machine": machine(),
        "floor": args.floor,
        "real_queries": len(REAL),
        "real_keeping_their_best_hit": sum(b >= args.floor for b in real),
        "real_lowest_best": round(min(real), 3),
        "real_median_best": round(float(np.median(real)), 3),
        "nonsense_queries": len(NONSENSE),
        "nonsense_finding_nothing": sum(b < args.floor for b in nonsense),
        "nonsense_median_best": round(float(np.median(nonsense)), 3),
        "nonsense_above_the_floor": {
            q: round(b, 3) for q, b in zip(NONSENSE, nonsense, strict=True) if b >= args.floor
        },
    }
    save("search_floor", result)  # prints it too


if __name__ == "__main__":
    main()
