"""Why the blend scored a movie as it did: its score split into the user's ratings and the prior.

The hybrid's score of column ``i`` for one user is ``sum_c w_c * (s_c[i] - mean(s_c)) / std(s_c)``
over its components. Each component's centred score is a sum of parts, one per rated movie and
one that belongs to the movie alone:

- EASE: ``s[i] = sum_j sign(r_j) * B[j, i]``, so rated movie ``j`` adds
  ``sign(r_j) * (B[j, i] - mean_k B[j, k])``;
- LightFM, for a user folded in from their ratings: ``s[i] = v_u . V[i] + b[i]`` with
  ``v_u = sum_j r_j V[j] / sum_j |r_j|``, so ``j`` adds ``r_j / sum|r| * V[j] . (V[i] - mean V)``,
  and the item bias ``b[i] - mean b`` is the movie's own (a learned breadth of appeal). For a
  user the model was trained on, the learned vector is not a sum over ratings: the per-rating
  parts are those of the fold-in vector of the same ratings;
- popularity: the movie's own part only.

For folded-in users the parts sum to the blended score exactly (a test holds it). For a user the
learned ranker orders, ``served_parts`` splits the trees' score instead (``pred_contrib``).
A reason is a
positive part, and its share is the part over the sum of the positive parts: how much of what
pushed the movie up came from it. The counterfactual test (``benchmarks/counterfactual.py``)
deletes the ratings named as reasons and checks that the movie falls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

    from ml.hybrid import HybridRecommender

RATING = "rating"  # a movie the user rated (or dismissed) moved the score
PRIOR = "popularity"  # the movie's own part: popularity and LightFM's item bias


@dataclass(frozen=True)
class Reason:
    kind: str  # RATING or PRIOR
    column: int  # the rated movie's column; for PRIOR the scored movie's own
    value: float  # its part of the blended score (the score's own units)
    share: float  # value / the sum of the positive parts, in [0, 1]


@dataclass(frozen=True)
class Parts:
    """One user's score of some columns, split: ``ratings[i, j]`` is what rated column
    ``rated[j]`` added to column ``items[i]``, ``prior[i]`` what the movie added alone."""

    items: np.ndarray  # (n,) columns
    rated: np.ndarray  # (m,) rated columns, the user's history row's
    values: np.ndarray  # (m,) their entries (a dismissal is negative)
    ratings: np.ndarray  # (n, m)
    prior: np.ndarray  # (n,)
    # what belongs to neither (the ranker's user-level features and its trees' base value:
    # the same for every movie of the user, so it orders nothing); 0 for the blend
    rest: np.ndarray | None = None

    def total(self) -> np.ndarray:
        out = self.ratings.sum(axis=1) + self.prior
        return out if self.rest is None else out + self.rest


def parts(model: HybridRecommender, history: sp.csr_matrix, user: int, items: np.ndarray) -> Parts:
    """The blend's score of ``items`` for one user (a 1-row ``history`` over the model's columns;
    ``user`` their model row, -1 when folded in), split into per-rating and own parts."""
    row = history[:1].tocsr()
    rated, values = row.indices.astype(np.int64), row.data.astype(np.float64)
    items = np.asarray(items, dtype=np.int64)
    by_rating = np.zeros((len(items), len(rated)))
    prior = np.zeros(len(items))
    users = np.array([user], dtype=np.int64)
    for name, weight in model.weights.items():
        if not weight:
            continue
        component = model.components[name]
        scores = np.asarray(component.score(row, users), dtype=np.float64)[0]
        std = scores.std()
        scale = weight / std if std > 0 else 0.0
        split = getattr(component, "per_rating", None)
        if split is None:  # a component of the movie alone (popularity)
            prior += scale * (scores[items] - scores.mean())
            continue
        own_ratings, own = split(rated, values, items)
        by_rating += scale * own_ratings
        prior += scale * own
    return Parts(items, rated, values, by_rating, prior)


# The learned ranker's features, by where their part goes (ml.ranker.feature_names)
_PRIOR_FEATURES = ("popularity_", "movie_")
_CONTENT_FEATURES = ("content_", "closest_liked", "genre_")
_AGAINST_FEATURES = ("closest_disliked",)


def served_parts(model: HybridRecommender, history: sp.csr_matrix, user: int, items: np.ndarray) -> Parts:
    """``parts`` of the score that ordered this user's list: the blend's, or for a user the
    learned ranker orders (1 to ``ranker_up_to`` ratings), the ranker's: ``start`` times the
    blend's parts, plus each feature's contribution (LightGBM ``pred_contrib``) mapped back:
    the components' scores and ranks to the ratings in proportion to their blend parts, the
    movie's statistics and popularity to the movie's own part, content and genre taste to the
    liked movies in proportion to their content similarity, the closest disliked movie's
    similarity to the disliked ones. The user's own features and the base value go to
    ``rest``: the same for every movie of the user. A movie that was no candidate (the ranker
    never saw it) keeps the blend's parts."""
    blend = parts(model, history, user, items)
    row = history[:1].tocsr()
    if model.ranker is None or not len(model.ranked_rows(row)):
        return blend
    from ml.hybrid import score_parts
    from ml.ranker import DISLIKED, LIKED, candidates, feature_names

    ranker = model.ranker
    users = np.array([user], dtype=np.int64)
    scores = score_parts(model.components, ranker.generators, row, users)
    found = candidates(
        scores, model.blend(row, users), row, model.item_embeddings, ranker.stats, ranker.per_generator
    )
    contributions = np.asarray(ranker.booster.predict(found.features, pred_contrib=True, num_threads=1))
    names = feature_names(ranker.generators)
    group = np.array([_group(n) for n in names])
    where = {int(c): i for i, c in enumerate(found.items)}
    ratings = blend.ratings * ranker.start
    prior = blend.prior * ranker.start
    rest = np.zeros(len(items))
    values = blend.values
    liked, disliked = values >= LIKED, (values > 0) & (values <= DISLIKED)
    embeddings = model.item_embeddings
    for i, item in enumerate(blend.items):
        pair = where.get(int(item))
        if pair is None:  # not a candidate: the blend ordered it
            ratings[i], prior[i] = blend.ratings[i], blend.prior[i]
            continue
        c = contributions[pair]
        by = {g: float(c[:-1][group == g].sum()) for g in ("model", "prior", "content", "against", "user")}
        prior[i] += by["prior"]
        rest[i] = by["user"] + float(c[-1])
        similarity = np.clip(embeddings[blend.rated] @ embeddings[item], 0, None)
        for value, weights in (
            (by["model"], np.clip(blend.ratings[i], 0, None)),
            (by["content"], similarity * liked),
            (by["against"], similarity * disliked),
        ):
            total = weights.sum()
            if total > 0:
                ratings[i] += value * weights / total
            else:  # no rating to give it to (no liked movie, say): it stays with the user
                rest[i] += value
    return Parts(blend.items, blend.rated, values, ratings, prior, rest)


def _group(feature: str) -> str:
    if feature.startswith(("user_",)):
        return "user"
    if feature.startswith(_PRIOR_FEATURES):
        return "prior"
    if feature.startswith(_CONTENT_FEATURES):
        return "content"
    if feature.startswith(_AGAINST_FEATURES):
        return "against"
    return "model"  # blend_, ease_, lightfm_ and any other generator's score and rank


def reasons(split: Parts, k: int = 3) -> list[list[Reason]]:
    """For each item, its ``k`` largest positive parts, largest first: ratings (not dismissals)
    and the movie's own part, each with its share of the positive parts."""
    out = []
    for i, column in enumerate(split.items):
        found = [
            (float(v), RATING, int(c))
            for v, c, r in zip(split.ratings[i], split.rated, split.values, strict=True)
            if v > 0 and r > 0
        ]
        if split.prior[i] > 0:
            found.append((float(split.prior[i]), PRIOR, int(column)))
        positive = float(np.clip(split.ratings[i], 0, None).sum() + max(split.prior[i], 0.0))
        found.sort(key=lambda f: (-f[0], f[2]))
        out.append([Reason(kind, c, v, v / positive) for v, kind, c in found[:k]])
    return out


def content_nearest(model: HybridRecommender, row: sp.csr_matrix, item: int, k: int) -> list[int]:
    """The evidence cinerec showed before attribution: the ``k`` liked movies (rated above 3)
    closest to ``item`` by content embedding. Kept to compare with, in the counterfactual."""
    liked = row.indices[row.data > 3.0]
    if not len(liked):
        return []
    similarity = model.item_embeddings[liked] @ model.item_embeddings[item]
    return [int(c) for c in liked[np.argsort(-similarity, kind="stable")[:k]]]


def attributed(model: HybridRecommender, row: sp.csr_matrix, item: int, k: int) -> list[int]:
    """The rated columns that are ``item``'s largest ``k`` reasons (the prior is no rating)."""
    found = reasons(served_parts(model, row, -1, np.array([item])), k)[0]
    return [r.column for r in found if r.kind == RATING]


Chooser = Callable[["HybridRecommender", "sp.csr_matrix", int, int], list[int]]


@dataclass(frozen=True)
class Counterfactual:
    """How often a recommendation leaves the top ``depth`` when its reasons' ratings go."""

    cases: int
    left: int
    removed: float  # ratings removed per case, on average
    rank: float  # the movie's mean rank after the removal (0 = first; unrated movies only)

    @property
    def rate(self) -> float:
        return self.left / self.cases if self.cases else float("nan")


def counterfactual(
    model: HybridRecommender,
    rows: sp.csr_matrix,
    choose: dict[str, Chooser],
    *,
    top: int = 3,
    depth: int = 10,
    k: int = 3,
    seed: int = 0,
) -> dict[str, Counterfactual]:
    """For each row (a user folded in from it) and each of its ``top`` recommendations, delete
    the ratings a chooser names and rank again: does the movie leave the top ``depth``?

    ``choose`` maps a name to ``f(model, row, column, k) -> rated columns``; ``"random"`` is
    added: as many random ratings as the attribution named, drawn from the row."""
    from ml.hybrid import rank_unrated

    rng = np.random.default_rng(seed)
    counts = {name: [0, 0, 0, 0] for name in [*choose, "random"]}
    users = np.full(1, -1, dtype=np.int64)
    for r in range(rows.shape[0]):
        row = rows[r]
        ranked, _ = rank_unrated(model.score(row, users), row, top)
        for item in ranked[0]:
            named = {name: list(f(model, row, int(item), k)) for name, f in choose.items()}
            n = len(next(iter(named.values()))) if named else k  # as many as the first chooser named
            named["random"] = [int(c) for c in rng.choice(row.indices, size=min(n, row.nnz), replace=False)]
            for name, columns in named.items():
                if not columns:
                    continue
                kept = row.copy()
                kept.data[np.isin(kept.indices, columns)] = 0
                kept.eliminate_zeros()
                scores = model.score(kept, users)[0]
                scores[kept.indices[kept.data > 0]] = -np.inf
                rank = int((scores > scores[item]).sum())
                counts[name][0] += 1
                counts[name][1] += int(rank >= depth)
                counts[name][2] += len(columns)
                counts[name][3] += rank
    return {
        name: Counterfactual(c, left, removed / c if c else 0.0, rank / c if c else 0.0)
        for name, (c, left, removed, rank) in counts.items()
    }
