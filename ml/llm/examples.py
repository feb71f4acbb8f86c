"""Instruction data from ratings, TALLRec-style: a user's liked and disliked titles, one
candidate they rated, and the answer Yes (rating above 3) or No.

Users are split before any pair is built, so evaluation users are never seen in training.
A user's candidates are held out of their own profile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ml.interactions import Catalog
from ml.llm.prompts import (
    LIKED_THRESHOLD,
    PROFILE_DISLIKED,
    PROFILE_LIKED,
    MovieFacts,
    ScoreRequest,
    movie_label,
    preference_request,
)


@dataclass(frozen=True)
class PreferenceExample:
    user_id: int
    request: ScoreRequest  # the profile and one question per candidate, as serving puts them
    movie_ids: list[int]
    labels: list[int]  # 1: liked (rating above 3)


def item_stats(ratings: pd.DataFrame, users: Sequence[int] | np.ndarray) -> dict[int, tuple[float, int]]:
    """(mean rating, count) per movie over the ratings of ``users``."""
    frame = ratings[ratings["user_id"].isin(set(int(u) for u in users))]
    grouped = frame.groupby("movie_id")["rating"].agg(["mean", "count"])
    return {int(m): (float(r["mean"]), int(r["count"])) for m, r in grouped.iterrows()}


def matrix_stats(catalog: Catalog, matrix: sp.csr_matrix) -> dict[int, tuple[float, int]]:
    """(mean rating, count) per movie id over the ratings in ``matrix`` (users x catalog columns)."""
    counts = np.diff(matrix.tocsc().indptr)
    means = np.asarray(matrix.sum(axis=0)).ravel() / np.maximum(counts, 1)
    return {int(catalog.item_ids[j]): (float(means[j]), int(counts[j])) for j in np.flatnonzero(counts)}


def split_users(user_ids: np.ndarray, eval_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training users, evaluation users), disjoint, by a seeded permutation of the sorted ids."""
    users = np.unique(user_ids)
    order = np.random.default_rng(seed).permutation(len(users))
    n_eval = round(len(users) * eval_fraction)
    return np.sort(users[order[n_eval:]]), np.sort(users[order[:n_eval]])


def catalog_label(catalog: Catalog, index: int) -> str:
    return movie_label(catalog.titles[index], int(catalog.years[index]))


def catalog_facts(
    catalog: Catalog, index: int, stats: Mapping[int, tuple[float, int]] | None = None
) -> MovieFacts:
    """What a prompt may say about the movie at ``index``; ``stats``: movie id -> (mean, count)."""
    mean, count = (stats or {}).get(int(catalog.item_ids[index]), (None, None))
    return MovieFacts(catalog_label(catalog, index), catalog.genres[index], mean, count)


def catalog_genres(catalog: Catalog) -> Callable[[int], Sequence[str]]:
    """A movie id's genres in ``catalog`` (none for a movie it does not hold)."""
    by_id = dict(zip(catalog.item_ids.tolist(), catalog.genres, strict=True))
    return lambda movie: by_id.get(int(movie), [])


def build_examples(
    ratings: pd.DataFrame,
    catalog: Catalog,
    users: Sequence[int] | np.ndarray,
    *,
    candidates_per_user: int,
    seed: int,
    n_liked: int = PROFILE_LIKED,
    n_disliked: int = PROFILE_DISLIKED,
    min_profile: int = 5,
    item_stats: Mapping[int, tuple[float, int]] | None = None,
) -> list[PreferenceExample]:
    """One example per user: ``candidates_per_user`` rated movies held out as questions, the
    rest of the user's ratings as the profile. ``item_stats`` (movie id -> mean rating,
    count) should come from training users only, so no answer leaks into a question."""
    stats = item_stats or {}
    rng = np.random.default_rng(seed)
    wanted = set(int(u) for u in users)
    frame = ratings[ratings["user_id"].isin(wanted)]
    genres_of = catalog_genres(catalog)
    examples = []
    for user_id, group in frame.groupby("user_id", sort=True):
        index = catalog.index(group["movie_id"].to_numpy())
        values = group["rating"].to_numpy(dtype=np.float64)
        keep = index >= 0
        index, values = index[keep], values[keep]
        if len(index) < min_profile + 1:
            continue
        order = rng.permutation(len(index))
        n_candidates = min(candidates_per_user, len(index) - min_profile)
        asked, known = order[:n_candidates], order[n_candidates:]
        request = preference_request(
            [(int(catalog.item_ids[index[j]]), float(values[j])) for j in known],
            [catalog_facts(catalog, int(index[j]), stats) for j in asked],
            lambda movie: catalog_label(catalog, int(catalog.index([movie])[0])),
            genres_of=genres_of,
            n_liked=n_liked,
            n_disliked=n_disliked,
        )
        examples.append(
            PreferenceExample(
                user_id=int(user_id),
                request=request,
                movie_ids=[int(catalog.item_ids[index[j]]) for j in asked],
                labels=[int(values[j] > LIKED_THRESHOLD) for j in asked],
            )
        )
    return examples
