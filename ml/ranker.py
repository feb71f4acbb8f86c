"""The learned ranker: every generator proposes, LightGBM's LambdaRank orders the union.

Generators are the blend's components (EASE, LightFM, popularity) and the content
embeddings (the user's liked movies' mean embedding against every movie's). Each proposes
its top ``per_generator`` unrated movies; their union, a few hundred per user, is ranked
by a gradient-boosted tree ensemble over features of the pair:

- each generator's standardised score, and its rank among the user's candidates;
- the movie's share of users who rated it, its mean rating (shrunk to the global mean) and
  its release year;
- the user's rating count and mean rating;
- genre taste: the user's like rate in the movie's genres (likes + 1) / (ratings + 2) and the
  share of the user's ratings that fall in them;
- similarity to the user's liked movies (the closest one, by content embedding) and to the
  movies they rated low (a 1-star rating is evidence against, not for).

Taught on the tuning split (components fitted on its inner part, labels from its
validation part: the evaluation split never sees it), starting from the blend's score
(LightGBM's ``init_score``) so that the trees learn corrections to it. ``Ranker.rank`` puts
the candidates in its order above every other movie and leaves the rest in blend order, so
filters, pages and diversity would work as before, with one ``predict`` per scoring batch.

Not served yet: on MovieLens 100K it does not beat the blend it starts from
(``python -m benchmarks.ranker``, docs/benchmarks.md), so ``cinerec train`` does not fit it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    import lightgbm as lgb

LIKED = 4.0  # a rating at or above this is a like
DISLIKED = 2.0  # at or below: evidence against
PER_GENERATOR = 100
CONTENT = "content"
SHRINK = 10.0  # ratings of prior weight on a movie's mean


@dataclass
class ItemStats:
    """What the ranker knows of each movie from the ratings its components were fitted on."""

    share: np.ndarray  # users who rated it / users
    mean: np.ndarray  # shrunk to the global mean
    year: np.ndarray  # 0 where unknown
    genres: np.ndarray  # (n_items, n_genres) float32 indicators

    @classmethod
    def of(cls, matrix: sp.csr_matrix, years: np.ndarray, genres: np.ndarray) -> ItemStats:
        rated = matrix > 0
        counts = np.asarray(rated.sum(axis=0)).ravel().astype(np.float64)
        positive = matrix.multiply(rated)
        sums = np.asarray(positive.sum(axis=0)).ravel()
        overall = float(sums.sum() / max(counts.sum(), 1))
        mean = (sums + SHRINK * overall) / (counts + SHRINK)
        n_users = max(matrix.shape[0], 1)
        return cls(
            (counts / n_users).astype(np.float32),
            mean.astype(np.float32),
            np.asarray(years, dtype=np.float32),
            np.asarray(genres, dtype=np.float32),
        )


def _top_unrated(scores: np.ndarray, rated: sp.csr_matrix, k: int) -> np.ndarray:
    """(batch, k) indices of each row's best unrated columns."""
    masked = np.array(scores, dtype=np.float32)
    rows, cols = rated.nonzero()
    masked[rows, cols] = -np.inf
    k = min(k, masked.shape[1])
    return np.argpartition(masked, masked.shape[1] - k, axis=1)[:, masked.shape[1] - k :]


def content_scores(history: sp.csr_matrix, embeddings: np.ndarray) -> np.ndarray:
    """(batch, n_items): each movie's embedding against the mean of the user's liked movies'
    minus, at half weight, the mean of the movies they rated low."""
    liked = (history >= LIKED).astype(np.float32)
    disliked = ((history > 0).multiply(history <= DISLIKED)).astype(np.float32)
    profile = _row_mean(liked) @ embeddings - 0.5 * (_row_mean(disliked) @ embeddings)
    return np.asarray(profile @ embeddings.T, dtype=np.float32)


def _row_mean(matrix: sp.csr_matrix) -> sp.csr_matrix:
    counts = np.asarray(matrix.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(counts, 1)) @ matrix, dtype=np.float32)


@dataclass
class Candidates:
    rows: np.ndarray  # batch row of each pair
    items: np.ndarray  # column of each pair
    features: np.ndarray  # (n_pairs, n_features) float32
    blend: np.ndarray  # the blend's score of each pair: where the trees start from


def candidates(
    parts: dict[str, np.ndarray],
    blend: np.ndarray,
    history: sp.csr_matrix,
    embeddings: np.ndarray,
    stats: ItemStats,
    per_generator: int = PER_GENERATOR,
) -> Candidates:
    """Each generator's top unrated movies per row, their union, and the pair features.
    ``parts`` are the components' standardised (batch, n_items) scores; the content
    generator is added here."""
    parts = {**parts, CONTENT: content_scores(history, embeddings)}
    names = sorted(parts)
    rated = history != 0  # rated or dismissed: never a candidate
    batch = history.shape[0]
    proposed = np.concatenate([_top_unrated(parts[n], rated, per_generator) for n in names], axis=1)
    keyed = np.unique(proposed + (np.arange(batch)[:, None] * history.shape[1]))  # union per row, sorted
    rows, items = np.divmod(keyed, history.shape[1])
    blended = np.asarray(blend[rows, items], dtype=np.float32)
    columns: list[np.ndarray] = [blended, _rank_within(rows, blended)]
    for name in names:
        values = np.asarray(parts[name][rows, items], dtype=np.float32)
        columns += [values, _rank_within(rows, values)]
    columns += [stats.share[items], stats.mean[items], stats.year[items]]
    positive = history.multiply(history > 0).tocsr()
    counts = np.asarray((positive > 0).sum(axis=1)).ravel().astype(np.float32)
    sums = np.asarray(positive.sum(axis=1)).ravel()
    user_mean = np.where(counts > 0, sums / np.maximum(counts, 1), 0).astype(np.float32)
    columns += [np.log1p(counts)[rows], user_mean[rows]]
    liked = (positive >= LIKED).astype(np.float32)
    rated_genres = np.asarray((positive > 0).astype(np.float32) @ stats.genres)  # (batch, n_genres)
    liked_genres = np.asarray(liked @ stats.genres)
    like_rate = (liked_genres + 1) / (rated_genres + 2)
    share = rated_genres / np.maximum(counts, 1)[:, None]
    item_genres = stats.genres[items]
    n_genres = np.maximum(item_genres.sum(axis=1), 1)
    columns += [
        np.einsum("pg,pg->p", item_genres, like_rate[rows]) / n_genres,
        np.einsum("pg,pg->p", item_genres, share[rows]) / n_genres,
    ]
    disliked = positive.multiply(positive <= DISLIKED).tocsr()
    columns += [_closest(rows, items, liked.tocsr(), embeddings), _closest(rows, items, disliked, embeddings)]
    return Candidates(rows, items, np.column_stack(columns).astype(np.float32), blended)


def feature_names(generators: list[str]) -> list[str]:
    names = ["blend_score", "blend_rank"]
    for name in sorted([*generators, CONTENT]):
        names += [f"{name}_score", f"{name}_rank"]
    return [
        *names,
        "movie_share",
        "movie_mean",
        "movie_year",
        "user_log_count",
        "user_mean",
        "genre_like_rate",
        "genre_share",
        "closest_liked",
        "closest_disliked",
    ]


def _rank_within(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each pair's rank (0 = best) among its row's candidates, by ``values``; ``rows`` sorted."""
    order = np.lexsort((-values, rows))
    starts = np.searchsorted(rows, rows[order])
    ranks = np.empty(len(rows), dtype=np.float32)
    ranks[order] = np.arange(len(rows)) - starts
    return ranks


def _closest(
    rows: np.ndarray, items: np.ndarray, chosen: sp.csr_matrix, embeddings: np.ndarray
) -> np.ndarray:
    """Each pair's highest cosine similarity to the row's ``chosen`` movies (0 when none)."""
    out = np.zeros(len(rows), dtype=np.float32)
    bounds = np.searchsorted(rows, np.arange(chosen.shape[0] + 1))
    for r in range(chosen.shape[0]):
        mine = chosen.indices[chosen.indptr[r] : chosen.indptr[r + 1]]
        lo, hi = bounds[r], bounds[r + 1]
        if len(mine) and hi > lo:
            out[lo:hi] = (embeddings[items[lo:hi]] @ embeddings[mine].T).max(axis=1)
    return out


class Ranker:
    """A LambdaRank model over the candidates' features, with the movie statistics it reads."""

    name = "ranker"

    def __init__(
        self,
        booster: lgb.Booster,
        generators: list[str],
        stats: ItemStats,
        per_generator: int,
        start: float,
    ) -> None:
        self.booster = booster
        self.generators = sorted(generators)
        self.stats = stats
        self.per_generator = per_generator
        self.start = start  # the trees correct ``start`` x the blend score

    def with_stats(self, stats: ItemStats) -> Ranker:
        """The same trees reading the statistics of the ratings the serving components saw."""
        return Ranker(self.booster, self.generators, stats, self.per_generator, self.start)

    def rank(
        self, blend: np.ndarray, parts: dict[str, np.ndarray], history: sp.csr_matrix, embeddings: np.ndarray
    ) -> np.ndarray:
        """(batch, n_items): the candidates above every other movie in the ranker's order, the
        rest in blend order below them. Writes into ``blend``."""
        found = candidates(
            {n: parts[n] for n in self.generators}, blend, history, embeddings, self.stats, self.per_generator
        )
        if not len(found.rows):
            return blend
        predicted = np.asarray(self.booster.predict(found.features, num_threads=1), dtype=np.float32)
        predicted += np.float32(self.start) * found.blend
        floor = np.float32(np.nanmax(np.where(np.isfinite(blend), blend, -np.inf)) + 1 - predicted.min())
        blend[found.rows, found.items] = predicted + floor
        return blend

    def arrays(self) -> dict[str, np.ndarray]:
        text = self.booster.model_to_string()
        return {
            "booster": np.frombuffer(text.encode(), dtype=np.uint8),
            "generators": np.frombuffer(json.dumps(self.generators).encode(), dtype=np.uint8),
            "per_generator": np.array(self.per_generator),
            "start": np.array(self.start),
            "share": self.stats.share,
            "mean": self.stats.mean,
            "year": self.stats.year,
            "genres": self.stats.genres,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Ranker:
        import lightgbm as lgb

        booster = lgb.Booster(model_str=bytes(np.asarray(arrays["booster"])).decode())
        generators = json.loads(bytes(np.asarray(arrays["generators"])).decode())
        stats = ItemStats(
            np.asarray(arrays["share"]),
            np.asarray(arrays["mean"]),
            np.asarray(arrays["year"]),
            np.asarray(arrays["genres"]),
        )
        return cls(booster, generators, stats, int(arrays["per_generator"]), float(arrays["start"]))


@dataclass(frozen=True)
class RankerConfig:
    per_generator: int = PER_GENERATOR
    trees: int = 300
    learning_rate: float = 0.05
    leaves: int = 31
    min_child_samples: int = 50
    early_stopping: int = 30
    objective: str = "lambdarank"
    start: float = 1.0  # the trees start from this times the blend score (LightGBM's init_score)
    seed: int = 42
    threads: int = 2


def fit(
    parts_of: Callable[[sp.csr_matrix, np.ndarray], dict[str, np.ndarray]],
    weights: dict[str, float],
    train: sp.csr_matrix,
    valid: sp.csr_matrix,
    users: np.ndarray,
    embeddings: np.ndarray,
    stats: ItemStats,
    generators: list[str],
    config: RankerConfig | None = None,
    batch: int = 256,
) -> tuple[Ranker, dict[str, float]]:
    """LambdaRank on the candidates of ``users`` (rows of ``train``/``valid``): a candidate the
    user rated in ``valid`` is relevant. ``parts_of(history, rows)`` gives the components'
    standardised scores. A fifth of the users decide when to stop adding trees."""
    import lightgbm as lgb

    config = config or RankerConfig()
    features, labels, groups, starts = [], [], [], []
    for start in range(0, len(users), batch):
        rows = users[start : start + batch]
        history = train[rows]
        parts = parts_of(history, rows)
        found = candidates(parts, blend_of(parts, weights), history, embeddings, stats, config.per_generator)
        held = valid[rows]
        label = np.asarray(held[found.rows, found.items]).ravel() > 0
        counts = np.bincount(found.rows, minlength=len(rows))
        positives = np.bincount(found.rows, weights=label, minlength=len(rows))
        keep_rows = positives > 0  # a user with no held-out movie among the candidates teaches nothing
        keep = keep_rows[found.rows]
        features.append(found.features[keep])
        labels.append(label[keep].astype(np.float32))
        starts.append(config.start * found.blend[keep])
        groups.append(counts[keep_rows])
    x, y, g = np.concatenate(features), np.concatenate(labels), np.concatenate(groups)
    init = np.concatenate(starts)
    n_fit = int(len(g) * 0.8)
    cut = int(g[:n_fit].sum())
    names = feature_names(generators)
    params = {
        "objective": config.objective,
        "metric": "ndcg",
        "eval_at": [10],
        "learning_rate": config.learning_rate,
        "num_leaves": config.leaves,
        "min_child_samples": config.min_child_samples,
        "lambdarank_truncation_level": 20,
        "num_threads": config.threads,
        "seed": config.seed,
        "deterministic": True,
        "verbosity": -1,
    }
    fit_set = lgb.Dataset(x[:cut], y[:cut], group=g[:n_fit], init_score=init[:cut], feature_name=names)
    stop_set = lgb.Dataset(x[cut:], y[cut:], group=g[n_fit:], init_score=init[cut:], reference=fit_set)
    booster = lgb.train(
        params,
        fit_set,
        num_boost_round=config.trees,
        valid_sets=[stop_set],
        callbacks=[lgb.early_stopping(config.early_stopping, verbose=False)],
    )
    info = {
        "ranker_pairs": float(len(y)),
        "ranker_users": float(len(g)),
        "ranker_trees": float(booster.best_iteration or config.trees),
        "ranker_stop_ndcg_at_10": float(booster.best_score["valid_0"]["ndcg@10"]),
    }
    return Ranker(booster, generators, stats, config.per_generator, config.start), info


def blend_of(parts: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """The blend's (batch, n_items) scores from the components' standardised ones."""
    shape = next(iter(parts.values())).shape
    out = np.zeros(shape, dtype=np.float32)
    for name, weight in weights.items():
        if weight and name in parts:
            out += np.float32(weight) * parts[name]
    return out
