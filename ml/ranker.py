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
  movies they rated low (a 1-star rating is evidence against, not for);
- optionally, when the ratings were made (``RatingTimes``): how long after the user's last
  rating the movie's first rating came, the distance between the two's median rating times,
  and the movie's share of the ratings made in the user's active weeks.

Taught on folds of the training part (each fold's labels are its held-out ratings, its
features come from components fitted on the rest: the evaluation split never sees any of
it), and stopped on a fold of its own, starting from the blend's score
(LightGBM's ``init_score``) so that the trees learn corrections to it. ``Ranker.rank``
reorders each row's candidates and deals them the blend's own values in its order, so
filters, pages, diversity and the LLM's rerank read scores on one scale, with one
``predict`` per scoring batch.

Served to new users only. `cinerec train` (when it tunes) fits it with
``fit_for_new_users`` on the tuning split's users cut to 1, 3 and 5 ratings, measures it
against the blend on the held-out split's users cut likewise, and the model serves it to
users with 1 to ``served_up_to`` ratings: the cuts whose gain's 95% interval is above zero.
For warm users it matched the blend without beating it (``python -m benchmarks.ranker
--folds 4 --cold``, docs/benchmarks.md), so their lists stay the blend's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ml.interactions import truncate

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


DAY = 86_400.0
WINDOW_DAYS = 7.0  # a user's active weeks: their first to last rating, widened by this on each side
TIME_FEATURES = [
    "movie_first_after_user_last_days",
    "movie_median_after_user_median_days",
    "movie_share_in_user_window",
    "user_span_days",
]


@dataclass
class RatingTimes:
    """When each user rated and each movie was rated, in the ratings the components saw
    (seconds since the epoch). A user or movie with no rating takes the latest time."""

    user_first: np.ndarray
    user_last: np.ndarray
    user_median: np.ndarray
    item_first: np.ndarray
    item_median: np.ndarray
    item_keys: np.ndarray  # item * _KEY + time, sorted: one item's times are a contiguous run
    all_times: np.ndarray  # sorted

    @classmethod
    def of(
        cls, users: np.ndarray, items: np.ndarray, times: np.ndarray, n_users: int, n_items: int
    ) -> RatingTimes:
        """From parallel arrays of model rows, columns and timestamps."""
        t = np.asarray(times, dtype=np.float64)
        latest = float(t.max()) if len(t) else 0.0
        user_first, user_last, user_median = _group_times(np.asarray(users), t, n_users, latest)
        item_first, _, item_median = _group_times(np.asarray(items), t, n_items, latest)
        return cls(
            user_first,
            user_last,
            user_median,
            item_first,
            item_median,
            np.sort(np.asarray(items, dtype=np.float64) * _KEY + t),
            np.sort(t),
        )

    def for_users(self, users: np.ndarray, times: np.ndarray, n_users: int) -> RatingTimes:
        """The same movies' times, with the users' taken from these ratings (rows 0..n_users-1:
        histories cut short, say)."""
        first, last, median = _group_times(
            np.asarray(users),
            np.asarray(times, dtype=np.float64),
            n_users,
            float(self.all_times[-1]) if len(self.all_times) else 0.0,
        )
        return replace(self, user_first=first, user_last=last, user_median=median)

    def columns(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(n_pairs, len(TIME_FEATURES)) for pairs of model rows and columns."""
        lo = self.user_first[users] - WINDOW_DAYS * DAY
        hi = self.user_last[users] + WINDOW_DAYS * DAY
        base = items.astype(np.float64) * _KEY
        inside = np.searchsorted(self.item_keys, base + hi, "right") - np.searchsorted(
            self.item_keys, base + lo
        )
        total = np.searchsorted(self.all_times, hi, "right") - np.searchsorted(self.all_times, lo)
        return np.column_stack(
            [
                (self.item_first[items] - self.user_last[users]) / DAY,
                (self.item_median[items] - self.user_median[users]) / DAY,
                inside / np.maximum(total, 1) * 1000,
                (self.user_last[users] - self.user_first[users]) / DAY,
            ]
        ).astype(np.float32)


_KEY = 1e10  # above any timestamp in seconds until the year 2286


def _group_times(
    keys: np.ndarray, times: np.ndarray, n: int, latest: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per key 0..n-1: its first, last and median time, ``latest`` where it has none."""
    if not len(times):
        return np.full(n, latest), np.full(n, latest), np.full(n, latest)
    order = np.lexsort((times, keys))
    keys, times = keys[order], times[order]
    starts = np.searchsorted(keys, np.arange(n))
    ends = np.searchsorted(keys, np.arange(n), "right")
    has = ends > starts
    top = len(times) - 1
    first = np.where(has, times[np.minimum(starts, top)], latest)
    last = np.where(has, times[np.clip(ends - 1, 0, top)], latest)
    low, high = np.clip((starts + ends - 1) // 2, 0, top), np.clip((starts + ends) // 2, 0, top)
    median = np.where(has, (times[low] + times[high]) / 2, latest)
    return first, last, median


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
    disliked = _ones_where(history, lambda r: (r > 0) & (r <= DISLIKED))
    profile = _row_mean(liked) @ embeddings - 0.5 * (_row_mean(disliked) @ embeddings)
    return np.asarray(profile @ embeddings.T, dtype=np.float32)


def _ones_where(matrix: sp.csr_matrix, keep: Callable[[np.ndarray], np.ndarray]) -> sp.csr_matrix:
    """1 at the stored entries whose value ``keep`` accepts, float32, nothing else stored."""
    out = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    out.data = keep(out.data).astype(np.float32)
    out.eliminate_zeros()
    return out


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
    times: RatingTimes | None = None,
    users: np.ndarray | None = None,
) -> Candidates:
    """Each generator's top unrated movies per row, their union, and the pair features.
    ``parts`` are the components' standardised (batch, n_items) scores; the content
    generator is added here. With ``times``, the time features of ``users`` (the batch's
    model rows) are added."""
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
    disliked = _ones_where(positive, lambda r: (r > 0) & (r <= DISLIKED))
    columns += [_closest(rows, items, liked.tocsr(), embeddings), _closest(rows, items, disliked, embeddings)]
    features = np.column_stack(columns).astype(np.float32)
    if times is not None:
        if users is None:
            raise ValueError("time features need the batch's model rows")
        features = np.hstack([features, times.columns(np.asarray(users)[rows], items)])
    return Candidates(rows, items, features, blended)


def feature_names(generators: list[str], times: bool = False) -> list[str]:
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
        *(TIME_FEATURES if times else []),
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
    """A LambdaRank model over the candidates' features, with the movie statistics (and, when
    it was taught with them, the rating times) it reads."""

    name = "ranker"

    def __init__(
        self,
        booster: lgb.Booster,
        generators: list[str],
        stats: ItemStats,
        per_generator: int,
        start: float,
        times: RatingTimes | None = None,
    ) -> None:
        self.booster = booster
        self.generators = sorted(generators)
        self.stats = stats
        self.per_generator = per_generator
        self.start = start  # the trees correct ``start`` x the blend score
        self.times = times

    def with_stats(self, stats: ItemStats, times: RatingTimes | None = None) -> Ranker:
        """The same trees reading the statistics (and times) of the ratings the serving
        components saw."""
        if (times is None) != (self.times is None):
            raise ValueError(
                "the ranker was taught with time features"
                if self.times
                else "the ranker was taught without time features"
            )
        return Ranker(self.booster, self.generators, stats, self.per_generator, self.start, times)

    def rank(
        self,
        blend: np.ndarray,
        parts: dict[str, np.ndarray],
        history: sp.csr_matrix,
        embeddings: np.ndarray,
        users: np.ndarray | None = None,
    ) -> np.ndarray:
        """(batch, n_items): each row's candidates reordered by the ranker, every other movie
        as the blend scored it. The candidates keep the blend's own values, dealt out in the
        ranker's order (its best candidate takes the highest of them), so a score stays on the
        blend's scale for filters, diversity and the LLM's rerank. Writes into ``blend``.
        ``users``: the batch's model rows, which the time features need."""
        found = candidates(
            {n: parts[n] for n in self.generators},
            blend,
            history,
            embeddings,
            self.stats,
            self.per_generator,
            self.times,
            users,
        )
        if not len(found.rows):
            return blend
        predicted = np.asarray(self.booster.predict(found.features, num_threads=1), dtype=np.float32)
        predicted += np.float32(self.start) * found.blend
        # both orders group by row (``found.rows`` is sorted), so position i is in the same row
        by_ranker = np.lexsort((-predicted, found.rows))
        by_blend = np.lexsort((-found.blend, found.rows))
        blend[found.rows[by_ranker], found.items[by_ranker]] = found.blend[by_blend]
        return blend

    def arrays(self) -> dict[str, np.ndarray]:
        if self.times is not None:
            raise ValueError("a ranker taught with rating times is not saved: serving holds no rating times")
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


@dataclass
class Fold:
    """One teaching fold: components fitted on ``history`` score its ``users`` (model rows);
    a candidate the user rated in ``labels`` is relevant."""

    parts_of: Callable[[sp.csr_matrix, np.ndarray], dict[str, np.ndarray]]
    history: sp.csr_matrix
    labels: sp.csr_matrix
    users: np.ndarray
    stats: ItemStats
    times: RatingTimes | None = None


@dataclass
class _Pairs:
    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    init: np.ndarray


def _pairs(
    fold: Fold, weights: dict[str, float], embeddings: np.ndarray, config: RankerConfig, batch: int
) -> _Pairs:
    features, labels, groups, starts = [], [], [], []
    for first in range(0, len(fold.users), batch):
        rows = fold.users[first : first + batch]
        history = fold.history[rows]
        parts = fold.parts_of(history, rows)
        found = candidates(
            parts,
            blend_of(parts, weights),
            history,
            embeddings,
            fold.stats,
            config.per_generator,
            fold.times,
            rows,
        )
        label = np.asarray(fold.labels[rows][found.rows, found.items]).ravel() > 0
        counts = np.bincount(found.rows, minlength=len(rows))
        positives = np.bincount(found.rows, weights=label, minlength=len(rows))
        keep_rows = positives > 0  # a user with no held-out movie among the candidates teaches nothing
        keep = keep_rows[found.rows]
        features.append(found.features[keep])
        labels.append(label[keep].astype(np.float32))
        starts.append(config.start * found.blend[keep])
        groups.append(counts[keep_rows])
    return _Pairs(
        np.concatenate(features), np.concatenate(labels), np.concatenate(groups), np.concatenate(starts)
    )


def _dataset(pairs: list[_Pairs], **options: Any) -> lgb.Dataset:
    import lightgbm as lgb

    return lgb.Dataset(
        np.concatenate([p.x for p in pairs]),
        np.concatenate([p.y for p in pairs]),
        group=np.concatenate([p.groups for p in pairs]),
        init_score=np.concatenate([p.init for p in pairs]),
        **options,
    )


def fit(
    folds: list[Fold],
    stop: list[Fold],
    weights: dict[str, float],
    embeddings: np.ndarray,
    generators: list[str],
    config: RankerConfig | None = None,
    batch: int = 256,
) -> tuple[Ranker, dict[str, float]]:
    """LambdaRank on the candidates of every teaching fold, trees added while the ``stop``
    folds' nDCG@10 rises (give them the kinds of users the ranker must serve: the stopping
    point is chosen for them). ``Fold.parts_of(history, rows)`` gives the components' standardised
    scores. The ranker reads the last teaching fold's statistics until ``with_stats``."""
    import lightgbm as lgb

    config = config or RankerConfig()
    taught = [_pairs(f, weights, embeddings, config, batch) for f in folds]
    held = [_pairs(f, weights, embeddings, config, batch) for f in stop]
    names = feature_names(generators, times=folds[-1].times is not None)
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
    fit_set = _dataset(taught, feature_name=names)
    stop_set = _dataset(held, reference=fit_set)
    booster = lgb.train(
        params,
        fit_set,
        num_boost_round=config.trees,
        valid_sets=[stop_set],
        callbacks=[lgb.early_stopping(config.early_stopping, verbose=False)],
    )
    info = {
        "ranker_pairs": float(sum(len(p.y) for p in taught)),
        "ranker_users": float(sum(len(p.groups) for p in taught)),
        "ranker_trees": float(booster.best_iteration or config.trees),
        "ranker_stop_ndcg_at_10": float(booster.best_score["valid_0"]["ndcg@10"]),
    }
    last = folds[-1]
    return Ranker(booster, generators, last.stats, config.per_generator, config.start, last.times), info


def blend_of(parts: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """The blend's (batch, n_items) scores from the components' standardised ones."""
    shape = next(iter(parts.values())).shape
    out = np.zeros(shape, dtype=np.float32)
    for name, weight in weights.items():
        if weight and name in parts:
            out += np.float32(weight) * parts[name]
    return out


def cold_copy(fold: Fold, keep: int, seed: int) -> Fold:
    """``fold``'s users as cold users: each history cut to ``keep`` ratings (seeded), scored as
    users the components never saw; the ratings cut away join the labels (the user did rate
    them). Only ``fold.users`` are cut and taught."""
    if fold.times is not None:
        raise ValueError("a cold copy with rating times is not built: the cut histories' times are not kept")
    cut = truncate(fold.history[fold.users], keep, seed)
    away = fold.history[fold.users] - cut
    away.eliminate_zeros()
    labels = (fold.labels[fold.users] + away).tocsr()
    base = fold.parts_of

    def parts_of(history: sp.csr_matrix, rows: np.ndarray) -> dict[str, np.ndarray]:
        return base(history, np.full(len(rows), -1))

    return Fold(parts_of, cut, labels, np.flatnonzero(np.diff(cut.indptr)), fold.stats)


COLD_CUTS = (1, 3, 5)  # the new users the ranker is taught for, measured on and served to


# what `cinerec train` fits: half the candidates and a faster learning rate than the study's
# settings; on MovieLens 100K the cold users' gain held and the fit took seconds instead of a
# minute or more (docs/benchmarks.md, the ranker's "Third step")
FOR_NEW_USERS = RankerConfig(per_generator=50, learning_rate=0.05)


def fit_for_new_users(
    fold: Fold,
    weights: dict[str, float],
    embeddings: np.ndarray,
    generators: list[str],
    config: RankerConfig = FOR_NEW_USERS,
    seed: int = 0,
) -> tuple[Ranker, dict[str, float]]:
    """What `cinerec train` fits, for new users only: on one fold (the tuning split: components
    fitted on its inner part, its validation ratings as labels), 80% of the users teach with
    their histories cut to 1, 3 and 5 ratings; the other 20%, cut likewise, stop the trees."""
    order = np.random.default_rng(seed).permutation(fold.users)
    teach = replace(fold, users=np.sort(order[len(order) // 5 :]))
    stop = replace(fold, users=np.sort(order[: len(order) // 5]))
    return fit(
        [cold_copy(teach, keep, seed + keep) for keep in COLD_CUTS],
        [cold_copy(stop, keep, seed + 100 + keep) for keep in COLD_CUTS],
        weights,
        embeddings,
        generators,
        config,
    )


@dataclass(frozen=True)
class SegmentGain:
    segment: str  # "cold-1", "cold-3", "cold-5"
    ratings: int  # the history each user was cut to
    users: int
    without: float  # nDCG@10 of the blend
    with_ranker: float
    low: float  # 95% bootstrap interval of the mean per-user difference
    high: float

    @property
    def gain(self) -> float:
        return self.with_ranker - self.without


def served_up_to(gains: list[SegmentGain]) -> int:
    """The most ratings a user may have for the ranker to order their list: the largest cut
    such that it and every smaller cut gained with an interval above zero (0: none)."""
    up_to = 0
    for gain in sorted(gains, key=lambda g: g.ratings):
        if gain.low <= 0:
            break
        up_to = gain.ratings
    return up_to
