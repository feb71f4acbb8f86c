"""Fit, tune, evaluate and refit the hybrid: the whole of `cinerec train` and `cinerec evaluate`.

Protocol: a per-user stratified 75/25 split (seeded); top-k lists exclude the user's
training items; every held-out rating is relevant. Blending weights are chosen on a
validation split carved out of the training part, never on the test part.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm import tqdm

from ml import embeddings
from ml import metrics as m
from ml import ranker as learned
from ml.components import COMPONENTS
from ml.features import embedding_clusters, item_features, user_features
from ml.hybrid import HybridRecommender, rank_unrated, score_parts, standardise
from ml.interactions import Catalog, Interactions, stratified_split, truncate
from ml.models.base import Component, FitInputs

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    seed: int = 42
    test_ratio: float = 0.25
    k: int = 10
    components: int = 64
    epochs: int = 30
    learning_rate: float = 0.05
    ease_lambda: float = 500.0
    ease_max_items: int = 12_000
    threads: int = 2
    tune: bool = True
    validation_users: int = 3000
    eval_users: int | None = None
    batch_users: int = 512
    progress: bool = True
    ranker: bool = True  # fit the learned ranker for new users (only when tuning)
    ranker_users: int = 3000  # users it is taught on (and measured on), sampled beyond this
    embeddings_cache: Path | None = None  # where the catalog's content embeddings are kept


@dataclass
class TrainData:
    ratings: pd.DataFrame  # user_id, movie_id, rating
    catalog: Catalog
    users: pd.DataFrame | None = None  # user_id, age, gender, occupation
    read_at: float | None = None  # seconds since the epoch when the ratings were read


@dataclass
class TrainResult:
    model: HybridRecommender | None
    metrics: dict[str, dict[str, float]]
    weights: dict[str, float]
    params: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    # (model fitted on the training part, training part, held-out part), when asked for
    evaluation: tuple[HybridRecommender, Interactions, Interactions] | None = None
    ranker: RankerReport | None = None


@dataclass
class RankerReport:
    """The learned ranker as fitted and measured: its gain per cold segment on the held-out
    split, and the most ratings a user may have for it to serve them (0: it serves no one)."""

    gains: list[learned.SegmentGain]
    up_to: int
    info: dict[str, float]

    def metrics(self) -> dict[str, float]:
        out = {**self.info, "up_to": float(self.up_to)}
        for g in self.gains:
            key = g.segment.replace("-", "_")
            out.update(
                {
                    f"{key}_ndcg_blend": g.without,
                    f"{key}_ndcg_ranker": g.with_ranker,
                    f"{key}_gain_low": g.low,
                    f"{key}_gain_high": g.high,
                }
            )
        return out

    def describe(self) -> dict[str, Any]:
        """What the model's meta.json keeps (and ``extensions.recommender`` can show)."""
        return {
            "up_to": self.up_to,
            "segments": {
                g.segment: {
                    "blend": round(g.without, 4),
                    "ranker": round(g.with_ranker, 4),
                    "interval": [round(g.low, 4), round(g.high, 4)],
                }
                for g in self.gains
            },
        }


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Log a step and record its wall time (seconds) under ``name``."""
    log.info("%s ...", name)
    started = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - started, 2)
    log.info("%s: %.1f s", name, timings[name])


def fit_components(
    train: Interactions, data: TrainData, config: TrainConfig, item_feats: sp.csr_matrix
) -> dict[str, Component]:
    """Every registered component that fits this data (``ml.components``)."""
    inputs = FitInputs(train.matrix, item_feats, user_features(train.user_ids, data.users), config)
    fitted = {name: spec.train(inputs) for name, spec in COMPONENTS.items()}
    return {name: component for name, component in fitted.items() if component is not None}


def _batches(users: np.ndarray, size: int, progress: bool, desc: str) -> Iterator[np.ndarray]:
    chunks = [users[i : i + size] for i in range(0, len(users), size)]
    yield from tqdm(chunks, desc=desc, disable=not progress or None, leave=False)


def _relevant(test: Interactions, rows: np.ndarray) -> list[np.ndarray]:
    matrix = test.matrix
    return [matrix.indices[matrix.indptr[r] : matrix.indptr[r + 1]] for r in rows]


def evaluate_scorer(
    score: Callable[[sp.csr_matrix, np.ndarray], np.ndarray],
    train: Interactions,
    test: Interactions,
    users: np.ndarray,
    *,
    k: int,
    genre_vectors: np.ndarray,
    batch: int = 512,
    progress: bool = False,
    desc: str = "evaluate",
) -> dict[str, float]:
    """All metrics for one scorer over ``users`` (row indices shared by train and test)."""
    lists = []
    for rows in _batches(users, batch, progress, desc):
        history = train.matrix[rows]
        lists.append(rank_unrated(score(history, rows), history, k)[0])
    recommended = np.concatenate(lists)
    relevant = _relevant(test, users)
    popularity = np.asarray((train.matrix > 0).sum(axis=0)).ravel()
    return {
        f"ndcg_at_{k}": m.ndcg_at_k(recommended, relevant, k),
        f"precision_at_{k}": m.precision_at_k(recommended, relevant, k),
        f"recall_at_{k}": m.recall_at_k(recommended, relevant, k),
        f"map_at_{k}": m.map_at_k(recommended, relevant, k),
        "coverage": m.catalog_coverage(recommended, train.matrix.shape[1]),
        "diversity": m.intra_list_diversity(recommended, genre_vectors),
        "novelty": m.novelty(recommended, popularity, train.n_users),
    }


Scorer = Callable[[sp.csr_matrix, np.ndarray], np.ndarray]


def cold_gains(
    without: Scorer,
    with_ranker: Scorer,
    history: sp.csr_matrix,
    relevant: list[np.ndarray],
    *,
    k: int = 10,
    seed: int = 0,
    batch: int = 256,
) -> list[learned.SegmentGain]:
    """nDCG@k of two scorers for users cut to 1, 3 and 5 of their ``history`` ratings and scored
    as users the components never saw (as a new user is served); ``relevant``: each row's
    held-out columns. Rows with no held-out movie should be left out by the caller."""
    out = []
    for keep in learned.COLD_CUTS:
        cut = truncate(history, keep, seed + keep)
        lists: dict[str, list[np.ndarray]] = {"without": [], "with": []}
        for first in range(0, cut.shape[0], batch):
            rows = cut[first : first + batch]
            unseen = np.full(rows.shape[0], -1)
            lists["without"].append(rank_unrated(without(rows, unseen), rows, k)[0])
            lists["with"].append(rank_unrated(with_ranker(rows, unseen), rows, k)[0])
        ndcg = {name: m.ndcg_per_user(np.concatenate(found), relevant, k) for name, found in lists.items()}
        low, high = m.mean_interval(ndcg["with"] - ndcg["without"], seed=seed)
        out.append(
            learned.SegmentGain(
                f"cold-{keep}",
                keep,
                len(relevant),
                float(ndcg["without"].mean()),
                float(ndcg["with"].mean()),
                low,
                high,
            )
        )
    return out


def _weight_grid(names: list[str]) -> list[dict[str, float]]:
    """Every combination of the components' registered weights in which a component that is
    not only a prior counts."""
    grid = []
    for values in itertools.product(*(COMPONENTS[n].weights for n in names)):
        if any(v for n, v in zip(names, values, strict=True) if not COMPONENTS[n].prior):
            grid.append(dict(zip(names, values, strict=True)))
    return grid


def tune_weights(
    components: dict[str, Component],
    train: Interactions,
    valid: Interactions,
    users: np.ndarray,
    config: TrainConfig,
) -> tuple[dict[str, float], float]:
    """The blend with the best validation nDCG@k, from one pass over the validation users
    (every one of whom has validation ratings)."""
    names = sorted(components)
    grid = _weight_grid(names)
    total = np.zeros(len(grid))
    counted = 0
    for rows in _batches(users, config.batch_users, config.progress, "tune weights"):
        history = train.matrix[rows]
        parts = {n: standardise(components[n].score(history, rows)) for n in names}
        relevant = _relevant(valid, rows)
        counted += len(rows)
        for g, weights in enumerate(grid):
            scores = np.sum([w * parts[n] for n, w in weights.items() if w], axis=0)
            top = rank_unrated(scores, history, config.k)[0]
            total[g] += m.ndcg_at_k(top, relevant, config.k) * len(rows)  # a mean over this batch
    best = int(np.argmax(total))
    return grid[best], float(total[best] / max(counted, 1))


def _split(data: TrainData, ratio: float, seed: int) -> tuple[Interactions, Interactions]:
    train_df, test_df = stratified_split(data.ratings, 1 - ratio, seed)
    users = np.unique(data.ratings["user_id"].to_numpy())
    return (
        Interactions.from_frame(train_df, data.catalog, users),
        Interactions.from_frame(test_df, data.catalog, users),
    )


def _sample(users: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or len(users) <= limit:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, limit, replace=False))


def ratings_fingerprint(ratings: pd.DataFrame) -> str:
    """SHA-256 of the ratings (user, movie, rating), whatever their order: what names the data
    a model was trained on in its MLflow run (and the DVC pipeline's reports)."""
    rows = ratings[["user_id", "movie_id", "rating"]].sort_values(["user_id", "movie_id"], kind="stable")
    hashed = pd.util.hash_pandas_object(rows, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def train(
    data: TrainData,
    config: TrainConfig,
    *,
    refit: bool = True,
    evaluate_only: bool = False,
    keep_evaluation: bool = False,
) -> TrainResult:
    """Tune on validation, evaluate every model on the held-out split, then refit on everything."""
    timings: dict[str, float] = {}
    catalog = data.catalog
    with _timed(timings, "embeddings"):
        item_embeddings = embeddings.encode_cached(
            [catalog.text(i) for i in range(catalog.n_items)],
            config.embeddings_cache,
            progress=config.progress,
        )
    item_feats = item_features(catalog, embedding_clusters(item_embeddings, seed=config.seed))
    genre_vectors = catalog.genre_matrix()[0].toarray()

    with _timed(timings, "split"):
        train_part, test_part = _split(data, config.test_ratio, config.seed)
    weights = {"lightfm": 1.0, "ease": 1.0, "popularity": 0.1}
    validation_ndcg = float("nan")
    ranker: learned.Ranker | None = None
    ranker_info: dict[str, float] = {}
    if config.tune:
        inner_df, valid_df = stratified_split(_frame(train_part, catalog), 0.8, config.seed + 1)
        inner = Interactions.from_frame(inner_df, catalog, train_part.user_ids)
        valid = Interactions.from_frame(valid_df, catalog, train_part.user_ids)
        with _timed(timings, "fit (validation)"):
            inner_components = fit_components(inner, data, config, item_feats)
        users = _sample(np.flatnonzero(np.diff(valid.matrix.indptr)), config.validation_users, config.seed)
        with _timed(timings, "tune weights"):
            weights, validation_ndcg = tune_weights(inner_components, inner, valid, users, config)
        if config.ranker:
            with _timed(timings, "fit ranker"):
                ranker, ranker_info = _fit_ranker(
                    inner_components, inner, valid, weights, item_embeddings, genre_vectors, catalog, config
                )
        del inner_components
    with _timed(timings, "fit (evaluation)"):
        components = fit_components(train_part, data, config, item_feats)
    weights = {n: w for n, w in weights.items() if n in components}

    test_users = _sample(np.flatnonzero(np.diff(test_part.matrix.indptr)), config.eval_users, config.seed)
    scorers = {name: {name: 1.0} for name in components}
    scorers["hybrid"] = weights
    results: dict[str, dict[str, float]] = {}
    with _timed(timings, "evaluate"):
        for name, blend in scorers.items():
            model = HybridRecommender(
                catalog.item_ids, train_part.user_ids, components, blend, item_embeddings
            )
            results[name] = evaluate_scorer(
                model.score,
                train_part,
                test_part,
                test_users,
                k=config.k,
                genre_vectors=genre_vectors,
                batch=config.batch_users,
                progress=config.progress,
                desc=f"evaluate {name}",
            )
    results["hybrid"]["validation_ndcg"] = validation_ndcg
    report = None
    if ranker is not None:
        with _timed(timings, "evaluate ranker"):
            report = _measure_ranker(
                ranker,
                ranker_info,
                components,
                weights,
                item_embeddings,
                genre_vectors,
                catalog,
                train_part,
                test_part,
                config,
            )
    evaluation = None
    if keep_evaluation:
        held_out_model = HybridRecommender(
            catalog.item_ids, train_part.user_ids, components, weights, item_embeddings
        )
        evaluation = (held_out_model, train_part, test_part)
    params = {**asdict(config), "n_users": int(train_part.n_users), "n_items": int(catalog.n_items)}
    params.pop("embeddings_cache")  # where, not how: no parameter of the model
    params["n_ratings"] = len(data.ratings)
    params["ratings_sha256"] = ratings_fingerprint(data.ratings)
    final: HybridRecommender | None = None
    if not evaluate_only:
        everything = Interactions.from_frame(data.ratings, catalog)
        fitted_on = train_part
        if refit:
            with _timed(timings, "fit (all ratings)"):
                components = fit_components(everything, data, config, item_feats)
            fitted_on = everything
        user_ids = fitted_on.user_ids
        meta = {
            "params": params,
            "metrics": results,
            "refit": refit,
            "trained_at": time.time(),
            # serving reads from the database only the ratings made after this
            "data_cutoff": data.read_at,
        }
        final = HybridRecommender(
            catalog.item_ids,
            user_ids,
            components,
            weights,
            item_embeddings,
            meta,
            history=everything.matrix if data.read_at is not None else None,
            history_user_ids=everything.user_ids if data.read_at is not None else None,
        )
        if ranker is not None and report is not None:
            # the same trees, reading the statistics of the ratings the served components saw
            final.ranker = ranker.with_stats(
                learned.ItemStats.of(fitted_on.matrix, catalog.years, genre_vectors)
            )
            final.ranker_up_to = report.up_to
            final.meta["ranker"] = report.describe()
    return TrainResult(final, results, weights, params, timings, evaluation, report)


def _fit_ranker(
    components: dict[str, Component],
    inner: Interactions,
    valid: Interactions,
    weights: dict[str, float],
    item_embeddings: np.ndarray,
    genre_vectors: np.ndarray,
    catalog: Catalog,
    config: TrainConfig,
) -> tuple[learned.Ranker, dict[str, float]]:
    """The ranker taught on the tuning split (``ml.ranker.fit_for_new_users``): the held-out
    split never sees it."""
    names = sorted(components)
    fold = learned.Fold(
        lambda history, rows: score_parts(components, names, history, rows),
        inner.matrix,
        valid.matrix,
        _sample(np.flatnonzero(np.diff(valid.matrix.indptr)), config.ranker_users, config.seed),
        learned.ItemStats.of(inner.matrix, catalog.years, genre_vectors),
    )
    ranker_config = replace(learned.FOR_NEW_USERS, threads=config.threads, seed=config.seed)
    return learned.fit_for_new_users(fold, weights, item_embeddings, names, ranker_config, seed=config.seed)


def _measure_ranker(
    ranker: learned.Ranker,
    info: dict[str, float],
    components: dict[str, Component],
    weights: dict[str, float],
    item_embeddings: np.ndarray,
    genre_vectors: np.ndarray,
    catalog: Catalog,
    train: Interactions,
    test: Interactions,
    config: TrainConfig,
) -> RankerReport:
    """The ranker against the blend for the held-out split's users cut to 1, 3 and 5 ratings,
    with the components fitted on the training part: where its interval is above zero, it serves."""
    model = HybridRecommender(catalog.item_ids, train.user_ids, components, weights, item_embeddings)
    ranked = replace(
        model,
        ranker=ranker.with_stats(learned.ItemStats.of(train.matrix, catalog.years, genre_vectors)),
        ranker_up_to=max(learned.COLD_CUTS),
    )
    users = np.flatnonzero(np.diff(test.matrix.indptr) * np.diff(train.matrix.indptr))
    users = _sample(users, config.ranker_users, config.seed)
    gains = cold_gains(
        model.score, ranked.score, train.matrix[users], _relevant(test, users), k=config.k, seed=config.seed
    )
    return RankerReport(gains, learned.served_up_to(gains), info)


def _frame(interactions: Interactions, catalog: Catalog) -> pd.DataFrame:
    coo = interactions.matrix.tocoo()
    return pd.DataFrame(
        {
            "user_id": interactions.user_ids[coo.row],
            "movie_id": catalog.item_ids[coo.col],
            "rating": coo.data,
        }
    )
