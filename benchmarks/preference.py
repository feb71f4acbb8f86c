"""The preference side of the LLM on ML-100K: held-out AUC of a LoRA fine-tune against what the
prompt's own inputs give without a language model.

    python -m benchmarks.preference [--data DIR] [--steps 150] [--eval-users 100] [--no-finetune]

Users are split 80/20 as `cinerec llm finetune` splits them (seed 42); the questions are built
by the same ``build_examples`` (8 per user; the candidates' rating statistics from training
users only). Reported on the held-out questions:
- the AUC of each input the prompt states (the candidate's mean rating and count, the user's
  like rate, the user's like rate in the candidate's genres), alone;
- a logistic regression on those inputs, fitted on the training questions: what a model
  that reads the numbers perfectly, and nothing else, would reach;
- the base model and the LoRA-tuned model (``FinetuneConfig`` defaults, preference questions
  only, as `cinerec llm finetune --explain-batch 0` trains them), P(Yes) against No.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import SHARED, machine, save
from ml.data.movielens import read_movies
from ml.interactions import Catalog
from ml.llm.examples import PreferenceExample, build_examples, catalog_genres, item_stats, split_users
from ml.llm.prompts import LIKED_THRESHOLD, genre_taste
from ml.metrics import roc_auc

INPUTS = ["candidate mean rating", "candidate rating count (log)", "user like rate", "user genre like rate"]


def load(data: Path) -> tuple[pd.DataFrame, Catalog]:
    movies = read_movies(data / "movies.csv").frame
    genres = movies[["movie_id", "genres"]].explode("genres").dropna().rename(columns={"genres": "name"})
    catalog = Catalog.from_frames(movies[["movie_id", "title", "year"]], genres)
    ratings = pd.read_csv(data / "ratings.csv").rename(columns={"userId": "user_id", "movieId": "movie_id"})
    return ratings[["user_id", "movie_id", "rating"]], catalog


def inputs(
    examples: list[PreferenceExample],
    ratings: pd.DataFrame,
    catalog: Catalog,
    stats: dict[int, tuple[float, int]],
) -> tuple[np.ndarray, np.ndarray]:
    """(the numbers each question's prompt states, labels), one row per question."""
    genres_of = catalog_genres(catalog)
    by_user = {int(u): g for u, g in ratings.groupby("user_id")}
    rows, labels = [], []
    for ex in examples:
        mine = by_user[ex.user_id]
        known = mine[~mine.movie_id.isin(ex.movie_ids)]
        pairs = list(zip(known.movie_id.astype(int), known.rating, strict=True))
        like_rate = float(np.mean([r > LIKED_THRESHOLD for _, r in pairs]))
        for movie, label in zip(ex.movie_ids, ex.labels, strict=True):
            mean, count = stats.get(movie, (0.0, 0))
            taste = genre_taste(pairs, genres_of(movie), genres_of)  # as the prompt states it
            genre_rate = taste.liked / taste.rated if taste.rated else 0.5
            rows.append([mean, np.log1p(count), like_rate, genre_rate])
            labels.append(label)
    return np.asarray(rows), np.asarray(labels)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, help="ML-100K in the ml-25m layout (default: from ../shared)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-users", type=int, default=100)
    parser.add_argument("--no-finetune", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "cinerec-bench-pref")
    args = parser.parse_args()
    data = args.data
    if data is None:
        data = args.workdir / "ml-100k"
        if not (data / "ratings.csv").exists():
            subprocess.run([sys.executable, str(SHARED / "ml100k.py"), str(data)], check=True)
    ratings, catalog = load(data)

    from sklearn.linear_model import LogisticRegression

    from ml.llm.finetune import FinetuneConfig

    config = FinetuneConfig(max_steps=args.steps, explain_batch=0, progress=False, eval_users=args.eval_users)
    train_users, held_out = split_users(ratings["user_id"].to_numpy(), config.eval_fraction, config.seed)
    stats = item_stats(ratings, train_users)
    train = build_examples(
        ratings,
        catalog,
        train_users,
        candidates_per_user=config.candidates_per_user,
        seed=config.seed,
        item_stats=stats,
    )
    evaluation = build_examples(
        ratings,
        catalog,
        held_out[: config.eval_users],
        candidates_per_user=config.eval_candidates,
        seed=config.seed + 1,
        item_stats=stats,
    )
    x_train, y_train = inputs(train, ratings, catalog, stats)
    x_eval, y_eval = inputs(evaluation, ratings, catalog, stats)
    result: dict[str, object] = {
        "eval_pairs": len(y_eval),
        "eval_users": len(evaluation),
        "train_pairs": len(y_train),
        "inputs_alone_auc": {name: round(roc_auc(x_eval[:, j], y_eval), 4) for j, name in enumerate(INPUTS)},
    }
    regression = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    result["logistic_regression_on_the_inputs_auc"] = round(
        roc_auc(regression.decision_function(x_eval), y_eval), 4
    )
    print(result, flush=True)

    if not args.no_finetune:
        from ml.llm.base_model import DEFAULT_BASE, init_torch, load_base
        from ml.llm.finetune import finetune
        from ml.llm.prompts import PromptBuilder

        init_torch(2)
        model, tokenizer = load_base(DEFAULT_BASE, args.workdir / "llm")
        started = time.perf_counter()
        tuned = finetune(
            model, PromptBuilder(tokenizer), train, evaluation, config, args.workdir / "finetune"
        )
        result.update(
            {
                "auc_base": round(tuned.auc_base, 4),
                "auc_tuned": round(tuned.auc_tuned, 4),
                "steps": tuned.steps,
                "train_seconds": round(tuned.train_seconds),
                "wall_seconds": round(time.perf_counter() - started),
                "loss_by_25_steps": [
                    round(float(np.mean(tuned.losses[i : i + 25])), 3)
                    for i in range(0, len(tuned.losses), 25)
                ],
            }
        )
    result["machine"] = machine()
    save("preference", result)


if __name__ == "__main__":
    main()
