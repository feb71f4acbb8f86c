"""The learned ranker (ml.ranker) against the blend it would replace, and what the candidate
generators find, on the real MovieLens 100K.

    python -m benchmarks.ranker [--config '{"objective": "rank_xendcg"}']

Protocol: `cinerec train`'s split (per-user 75/25, seed 42, the tuning split 80/20 of the
training part, seed 43), users' side features, 30 epochs. The components fitted on the tuning
split's inner part propose candidates for its validation users; the ranker is taught on 80%
of those users and compared with the blend on the other 20% ("dev", the decision a training
run could make without the held-out split). Then, with the components refitted on the whole
training part, EASE, the blend and the ranker on the held-out split ("test"), one table.
Candidate recall: the share of each test user's held-out movies among a generator's top 100
and top 300 unrated movies, and among the union of every generator's top k.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import SHARED, machine, save
from ml import embeddings
from ml import ranker as learned
from ml.data.movielens import read_users
from ml.features import embedding_clusters, item_features
from ml.hybrid import HybridRecommender, score_parts
from ml.interactions import Interactions, stratified_split
from ml.training import TrainConfig, TrainData, _frame, _split, evaluate_scorer, fit_components, tune_weights


def _ranked(components: dict, weights: dict[str, float], ranker: learned.Ranker, item_embeddings: np.ndarray):
    names = sorted(components)

    def score(history: Any, rows: np.ndarray) -> np.ndarray:
        parts = score_parts(components, names, history, rows)
        return ranker.rank(learned.blend_of(parts, weights), parts, history, item_embeddings)

    return score


def _recall(found: list[np.ndarray], held: list[np.ndarray]) -> float:
    return float(np.mean([np.isin(h, f).mean() for f, h in zip(found, held, strict=True) if len(h)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="{}", help="RankerConfig fields as JSON")
    a = ap.parse_args()
    import subprocess
    import sys
    import tempfile

    data_dir = Path(tempfile.mkdtemp(prefix="cinerec-ml100k-")) / "ml-100k"
    subprocess.run([sys.executable, str(SHARED / "ml100k.py"), str(data_dir)], check=True)
    from benchmarks.preference import load

    ratings, catalog = load(data_dir)
    config = TrainConfig(epochs=30, progress=False)
    data = TrainData(ratings, catalog, read_users(data_dir / "users.csv").frame)
    item_embeddings = embeddings.encode([catalog.text(i) for i in range(catalog.n_items)], progress=False)
    feats = item_features(catalog, embedding_clusters(item_embeddings, seed=config.seed))
    genres = catalog.genre_matrix()[0].toarray()
    train_part, test_part = _split(data, config.test_ratio, config.seed)
    inner_df, valid_df = stratified_split(_frame(train_part, catalog), 0.8, config.seed + 1)
    inner = Interactions.from_frame(inner_df, catalog, train_part.user_ids)
    valid = Interactions.from_frame(valid_df, catalog, train_part.user_ids)
    inner_components = fit_components(inner, data, config, feats)
    users = np.flatnonzero(np.diff(valid.matrix.indptr))
    weights, _ = tune_weights(inner_components, inner, valid, users, config)

    ranker_config = learned.RankerConfig(**json.loads(a.config))
    order = np.random.default_rng(0).permutation(users)
    dev, taught = np.sort(order[: len(order) // 5]), np.sort(order[len(order) // 5 :])
    started = time.perf_counter()
    ranker, info = learned.fit(
        lambda history, rows: score_parts(inner_components, sorted(inner_components), history, rows),
        weights,
        inner.matrix,
        valid.matrix,
        taught,
        item_embeddings,
        learned.ItemStats.of(inner.matrix, catalog.years, genres),
        sorted(inner_components),
        ranker_config,
    )
    fit_seconds = time.perf_counter() - started
    blend_inner = HybridRecommender(
        catalog.item_ids, train_part.user_ids, inner_components, weights, item_embeddings
    )
    out: dict[str, Any] = {
        "machine": machine(),
        "config": ranker_config.__dict__,
        "weights": weights,
        "ranker_fit_s": round(fit_seconds, 2),
        **info,
    }
    out["dev"] = {
        "users": len(dev),
        "blend": evaluate_scorer(blend_inner.score, inner, valid, dev, k=10, genre_vectors=genres),
        "ranker": evaluate_scorer(
            _ranked(inner_components, weights, ranker, item_embeddings),
            inner,
            valid,
            dev,
            k=10,
            genre_vectors=genres,
        ),
    }
    print("dev", json.dumps(out["dev"]), flush=True)

    components = fit_components(train_part, data, config, feats)
    test_users = np.flatnonzero(np.diff(test_part.matrix.indptr))
    served = ranker.with_stats(learned.ItemStats.of(train_part.matrix, catalog.years, genres))
    scorers = {
        "ease": HybridRecommender(
            catalog.item_ids, train_part.user_ids, components, {"ease": 1.0}, item_embeddings
        ).score,
        "blend": HybridRecommender(
            catalog.item_ids, train_part.user_ids, components, weights, item_embeddings
        ).score,
        "ranker": _ranked(components, weights, served, item_embeddings),
    }
    out["test"] = {"users": len(test_users)}
    for name, score in scorers.items():
        started = time.perf_counter()
        out["test"][name] = evaluate_scorer(
            score, train_part, test_part, test_users, k=10, genre_vectors=genres
        )
        out["test"][name]["seconds"] = round(time.perf_counter() - started, 2)
        print("test", name, json.dumps(out["test"][name]), flush=True)

    history = train_part.matrix[test_users]
    held = [
        test_part.matrix.indices[test_part.matrix.indptr[u] : test_part.matrix.indptr[u + 1]]
        for u in test_users
    ]
    parts = score_parts(components, sorted(components), history, test_users)
    parts[learned.CONTENT] = learned.content_scores(history, item_embeddings)
    rated = history != 0
    recall: dict[str, Any] = {}
    for name, values in parts.items():
        for k in (100, 300):
            top = learned._top_unrated(values, rated, k)
            recall[f"{name}_top_{k}"] = round(_recall(list(top), held), 4)
    for per in (30, 100):
        found = learned.candidates(
            {n: parts[n] for n in sorted(components)},
            learned.blend_of(parts, weights),
            history,
            item_embeddings,
            learned.ItemStats.of(train_part.matrix, catalog.years, genres),
            per,
        )
        union = [found.items[found.rows == r] for r in range(len(test_users))]
        recall[f"union_of_top_{per}_each"] = {
            "recall": round(_recall(union, held), 4),
            "mean_size": round(float(np.mean([len(u) for u in union])), 1),
        }
    out["candidate_recall"] = recall
    print("recall", json.dumps(recall), flush=True)
    save("ranker", out)


if __name__ == "__main__":
    main()
