"""The learned ranker (ml.ranker) against the blend it would replace, and what the candidate
generators find, on the real MovieLens 100K.

    python -m benchmarks.ranker [--folds 4] [--times] [--config '{"objective": "rank_xendcg"}']

Protocol: `cinerec train`'s split (per-user 75/25, seed 42, the tuning split 80/20 of the
training part, seed 43), users' side features, 30 epochs; the blend's weights are tuned on
the tuning split as `cinerec train` tunes them. With ``--folds 1`` the components fitted on
the tuning split's inner part propose candidates for its validation users; the ranker is
taught on 80% of those users and stopped on the other 20% ("dev"). With ``--folds K`` the
training part's ratings are cut into K random folds; for each, components fitted on the
other K-1 propose candidates labelled by the fold; the ranker is taught on the first K-1
folds and stopped on the last ("dev": blend and ranker on that fold's users). ``--times``
adds the rating-time features (``ml.ranker.RatingTimes``). Neither decision sees the
held-out split. Then, with the components refitted on the whole training part, EASE, the
blend and the ranker on the held-out split ("test"), one table.
Candidate recall: the share of each test user's held-out movies among a generator's top 100
and top 300 unrated movies, and among the union of every generator's top k.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmarks.common import SHARED, machine, save
from ml import embeddings
from ml import metrics as m
from ml import ranker as learned
from ml.data.movielens import read_users
from ml.features import embedding_clusters, item_features
from ml.hybrid import HybridRecommender, rank_unrated, score_parts
from ml.interactions import Catalog, Interactions, stratified_split, truncate
from ml.training import TrainConfig, TrainData, _frame, _split, evaluate_scorer, fit_components, tune_weights


def _ranked(components: dict, weights: dict[str, float], ranker: learned.Ranker, item_embeddings: np.ndarray):
    names = sorted(components)

    def score(history: Any, rows: np.ndarray) -> np.ndarray:
        parts = score_parts(components, names, history, rows)
        return ranker.rank(learned.blend_of(parts, weights), parts, history, item_embeddings, rows)

    return score


def _parts_of(components: dict) -> Any:
    return lambda history, rows: score_parts(components, sorted(components), history, rows)


@dataclass
class Study:
    """`cinerec train`'s split of the real MovieLens 100K and what the ranker studies share:
    the components fitted on the tuning split's inner part and the blend's weights tuned on its
    validation part, as `cinerec train` tunes them (30 epochs, users' side features)."""

    catalog: Catalog
    ratings: pd.DataFrame  # with timestamps
    config: TrainConfig
    data: TrainData
    item_embeddings: np.ndarray
    feats: Any
    genres: np.ndarray  # (n_items, n_genres)
    train_part: Interactions
    test_part: Interactions
    inner_df: pd.DataFrame
    valid_df: pd.DataFrame
    inner: Interactions
    valid: Interactions
    inner_components: dict
    weights: dict[str, float]
    train_df: pd.DataFrame  # the training part with its ratings' times

    @classmethod
    def prepare(cls) -> Study:
        import subprocess
        import sys
        import tempfile

        from benchmarks.preference import load

        data_dir = Path(tempfile.mkdtemp(prefix="cinerec-ml100k-")) / "ml-100k"
        subprocess.run([sys.executable, str(SHARED / "ml100k.py"), str(data_dir)], check=True)
        _, catalog = load(data_dir)
        ratings = pd.read_csv(data_dir / "ratings.csv").rename(
            columns={"userId": "user_id", "movieId": "movie_id"}
        )
        ratings = ratings[["user_id", "movie_id", "rating", "timestamp"]]
        config = TrainConfig(epochs=30, progress=False)
        data = TrainData(ratings, catalog, read_users(data_dir / "users.csv").frame)
        item_embeddings = embeddings.encode([catalog.text(i) for i in range(catalog.n_items)], progress=False)
        feats = item_features(catalog, embedding_clusters(item_embeddings, seed=config.seed))
        train_part, test_part = _split(data, config.test_ratio, config.seed)
        inner_df, valid_df = stratified_split(_frame(train_part, catalog), 0.8, config.seed + 1)
        inner = Interactions.from_frame(inner_df, catalog, train_part.user_ids)
        valid = Interactions.from_frame(valid_df, catalog, train_part.user_ids)
        inner_components = fit_components(inner, data, config, feats)
        users = np.flatnonzero(np.diff(valid.matrix.indptr))
        weights, _ = tune_weights(inner_components, inner, valid, users, config)
        train_df, _ = stratified_split(ratings, 1 - config.test_ratio, config.seed)  # _split's, with times
        if (Interactions.from_frame(train_df, catalog, train_part.user_ids).matrix != train_part.matrix).nnz:
            raise RuntimeError("the split with times is not cinerec train's split")
        return cls(
            catalog,
            ratings,
            config,
            data,
            item_embeddings,
            feats,
            catalog.genre_matrix()[0].toarray(),
            train_part,
            test_part,
            inner_df,
            valid_df,
            inner,
            valid,
            inner_components,
            weights,
            train_df,
        )

    def fit_components_on_training(self) -> dict:
        """The components refitted on the whole training part, as the served version's are."""
        return fit_components(self.train_part, self.data, self.config, self.feats)

    def fold(self, fit: Interactions, labels: Interactions, components: dict) -> learned.Fold:
        """A teaching fold without rating times: ``components`` fitted on ``fit`` score the users
        who have ``labels``."""
        return learned.Fold(
            _parts_of(components),
            fit.matrix,
            labels.matrix,
            np.flatnonzero(np.diff(labels.matrix.indptr)),
            learned.ItemStats.of(fit.matrix, self.catalog.years, self.genres),
        )


def _with_times(frame: pd.DataFrame, stamps: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each rating's timestamp (the tuning split's frames have none)."""
    return frame if "timestamp" in frame else frame.merge(stamps, on=["user_id", "movie_id"])


def _times(frame: pd.DataFrame, users: np.ndarray, catalog: Any) -> learned.RatingTimes:
    items = catalog.index(frame["movie_id"].to_numpy())
    rows = np.searchsorted(users, frame["user_id"].to_numpy())
    return learned.RatingTimes.of(rows, items, frame["timestamp"].to_numpy(), len(users), catalog.n_items)


SEGMENTS = {"cold-1": 1, "cold-3": 3, "cold-5": 5, "warm": None}


def _segments(
    components: dict,
    weights: dict[str, float],
    ranker: learned.Ranker,
    item_embeddings: np.ndarray,
    train: Interactions,
    test: Interactions,
    users: np.ndarray,
    train_df: pd.DataFrame,
    user_ids: np.ndarray,
    catalog: Any,
) -> dict[str, dict[str, float]]:
    """nDCG@10 of the blend and the ranker per segment, with a 95% bootstrap interval of the
    mean per-user difference. Cold segments cut each test user's training ratings to 1, 3 or
    5 (seeded) and score them as users the components never saw, as a new user is served;
    their rating times are those of the ratings kept."""
    stamps = sp.csr_matrix(
        (
            train_df["timestamp"].to_numpy(np.float64),
            (
                np.searchsorted(user_ids, train_df["user_id"].to_numpy()),
                catalog.index(train_df["movie_id"].to_numpy()),
            ),
        ),
        shape=train.matrix.shape,
    )
    names = sorted(components)
    relevant = [test.matrix.indices[test.matrix.indptr[u] : test.matrix.indptr[u + 1]] for u in users]
    out: dict[str, dict[str, float]] = {}
    for name, keep in SEGMENTS.items():
        history = train.matrix[users]
        if keep is not None:
            history = truncate(history, keep, seed=0)
        rows = np.full(len(users), -1) if keep is not None else users
        seg_ranker = ranker
        if ranker.times is not None:
            coo = history.tocoo()
            when = np.asarray(stamps[users[coo.row], coo.col]).ravel()
            seg_ranker = ranker.with_stats(ranker.stats, ranker.times.for_users(coo.row, when, len(users)))
        lists: dict[str, list[np.ndarray]] = {"blend": [], "ranker": []}
        for start in range(0, len(users), 256):
            part = slice(start, start + 256)
            batch = history[part]
            parts = score_parts(components, names, batch, rows[part])
            blend = learned.blend_of(parts, weights)
            lists["blend"].append(rank_unrated(np.array(blend), batch, 10)[0])
            ranked = seg_ranker.rank(blend, parts, batch, item_embeddings, np.arange(len(users))[part])
            lists["ranker"].append(rank_unrated(ranked, batch, 10)[0])
        ndcg = {k: m.ndcg_per_user(np.concatenate(v), relevant, 10) for k, v in lists.items()}
        diff = ndcg["ranker"] - ndcg["blend"]
        low, high = m.mean_interval(diff)
        out[name] = {
            "users": len(users),
            "blend": round(float(ndcg["blend"].mean()), 4),
            "ranker": round(float(ndcg["ranker"].mean()), 4),
            "difference": round(float(diff.mean()), 4),
            "low": round(low, 4),
            "high": round(high, 4),
        }
    return out


def _recall(found: list[np.ndarray], held: list[np.ndarray]) -> float:
    return float(np.mean([np.isin(h, f).mean() for f, h in zip(found, held, strict=True) if len(h)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="{}", help="RankerConfig fields as JSON")
    ap.add_argument(
        "--folds", type=int, default=1, help="teaching folds of the training part (1: the tuning split)"
    )
    ap.add_argument("--times", action="store_true", help="add the rating-time features")
    ap.add_argument(
        "--cold", action="store_true", help="also teach on each fold with histories cut to 1, 3 or 5 ratings"
    )
    a = ap.parse_args()
    study = Study.prepare()
    catalog, ratings, config, data = study.catalog, study.ratings, study.config, study.data
    item_embeddings, feats, genres = study.item_embeddings, study.feats, study.genres
    train_part, test_part, inner_df, valid_df = (
        study.train_part,
        study.test_part,
        study.inner_df,
        study.valid_df,
    )
    inner_components, weights, train_df = study.inner_components, study.weights, study.train_df
    ranker_config = learned.RankerConfig(**json.loads(a.config))
    user_ids = train_part.user_ids

    stamps = ratings[["user_id", "movie_id", "timestamp"]]

    def fold_of(
        fit_df: pd.DataFrame, label_df: pd.DataFrame, components: dict | None = None
    ) -> tuple[learned.Fold, dict]:
        fitted = Interactions.from_frame(fit_df, catalog, user_ids)
        labels = Interactions.from_frame(label_df, catalog, user_ids)
        components = components or fit_components(fitted, data, config, feats)
        fold = learned.Fold(
            _parts_of(components),
            fitted.matrix,
            labels.matrix,
            np.flatnonzero(np.diff(labels.matrix.indptr)),
            learned.ItemStats.of(fitted.matrix, catalog.years, genres),
            _times(_with_times(fit_df, stamps), user_ids, catalog) if a.times else None,
        )
        return fold, components

    started = time.perf_counter()
    if a.folds <= 1:  # the tuning split's components: its validation users, 80% taught, 20% to stop
        whole, stop_components = fold_of(inner_df, valid_df, inner_components)
        order = np.random.default_rng(0).permutation(whole.users)
        teach = [replace(whole, users=np.sort(order[len(order) // 5 :]))]
        stop = replace(whole, users=np.sort(order[: len(order) // 5]))
    else:
        cut = np.random.default_rng(config.seed + 2).integers(0, a.folds, len(train_df))
        made = [fold_of(train_df[cut != f], train_df[cut == f]) for f in range(a.folds)]
        teach = [fold for fold, _ in made[:-1]]
        stop, stop_components = made[-1]
        if a.cold:  # each teaching fold again, its histories cut to 1, 3 or 5 ratings
            teach += [
                learned.cold_copy(fold, keep, seed)
                for seed, (fold, keep) in enumerate(zip(teach, (1, 3, 5) * a.folds, strict=False))
            ]
    folds_seconds = time.perf_counter() - started
    started = time.perf_counter()
    stops = [stop]
    if a.cold:  # stop where the cold copies of the stopping fold stop rising too
        stops += [learned.cold_copy(stop, keep, 100 + keep) for keep in (1, 3, 5)]
    ranker, info = learned.fit(
        teach, stops, weights, item_embeddings, sorted(inner_components), ranker_config
    )
    fit_seconds = time.perf_counter() - started
    out: dict[str, Any] = {
        "machine": machine(),
        "config": ranker_config.__dict__,
        "folds": a.folds,
        "times": a.times,
        "weights": weights,
        "folds_s": round(folds_seconds, 2),
        "ranker_fit_s": round(fit_seconds, 2),
        **info,
    }
    stop_train = Interactions(user_ids, stop.history)
    stop_labels = Interactions(user_ids, stop.labels)
    out["dev"] = {
        "users": len(stop.users),
        "blend": evaluate_scorer(
            HybridRecommender(catalog.item_ids, user_ids, stop_components, weights, item_embeddings).score,
            stop_train,
            stop_labels,
            stop.users,
            k=10,
            genre_vectors=genres,
        ),
        "ranker": evaluate_scorer(
            _ranked(stop_components, weights, ranker.with_stats(stop.stats, stop.times), item_embeddings),
            stop_train,
            stop_labels,
            stop.users,
            k=10,
            genre_vectors=genres,
        ),
    }
    print("dev", json.dumps(out["dev"]), flush=True)

    components = study.fit_components_on_training()
    test_users = np.flatnonzero(np.diff(test_part.matrix.indptr))
    served = ranker.with_stats(
        learned.ItemStats.of(train_part.matrix, catalog.years, genres),
        _times(train_df, user_ids, catalog) if a.times else None,
    )
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

    out["segments"] = _segments(
        components,
        weights,
        served,
        item_embeddings,
        train_part,
        test_part,
        test_users,
        train_df,
        user_ids,
        catalog,
    )
    print("segments", json.dumps(out["segments"]), flush=True)

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
