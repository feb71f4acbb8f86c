"""Instruction data from ratings, TALLRec-style: a user's liked and disliked titles, one
candidate they rated, and the answer Yes (rating above 3) or No.

Users are split before any pair is built, so evaluation users are never seen in training.
A user's candidates are held out of their own profile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.dataset import Catalog
from ml.llm.prompts import LIKED_THRESHOLD, Profile, candidate_text, profile_from_ratings


@dataclass(frozen=True)
class PreferenceExample:
    user_id: int
    profile: Profile
    candidates: list[str]  # candidate texts
    movie_ids: list[int]
    labels: list[int]  # 1: liked (rating above 3)


def item_stats(ratings: pd.DataFrame, users: Sequence[int] | np.ndarray) -> dict[int, tuple[float, int]]:
    """(mean rating, count) per movie over the ratings of ``users``."""
    frame = ratings[ratings["user_id"].isin(set(int(u) for u in users))]
    grouped = frame.groupby("movie_id")["rating"].agg(["mean", "count"])
    return {int(m): (float(r["mean"]), int(r["count"])) for m, r in grouped.iterrows()}


def split_users(user_ids: np.ndarray, eval_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training users, evaluation users), disjoint, by a seeded permutation of the sorted ids."""
    users = np.unique(user_ids)
    order = np.random.default_rng(seed).permutation(len(users))
    n_eval = round(len(users) * eval_fraction)
    return np.sort(users[order[n_eval:]]), np.sort(users[order[:n_eval]])


def movie_label(catalog: Catalog, index: int) -> str:
    year = int(catalog.years[index])
    title = catalog.titles[index]
    return title if not year or f"({year})" in title else f"{title} ({year})"


def build_examples(
    ratings: pd.DataFrame,
    catalog: Catalog,
    users: Sequence[int] | np.ndarray,
    *,
    candidates_per_user: int,
    seed: int,
    n_liked: int = 10,
    n_disliked: int = 5,
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
        profile = profile_from_ratings(
            [(movie_label(catalog, int(index[j])), float(values[j])) for j in known],
            n_liked=n_liked,
            n_disliked=n_disliked,
        )
        examples.append(
            PreferenceExample(
                user_id=int(user_id),
                profile=profile,
                candidates=[
                    candidate_text(
                        movie_label(catalog, int(index[j])),
                        catalog.genres[int(index[j])],
                        *stats.get(int(catalog.item_ids[index[j]]), (None, None)),
                    )
                    for j in asked
                ],
                movie_ids=[int(catalog.item_ids[index[j]]) for j in asked],
                labels=[int(values[j] > LIKED_THRESHOLD) for j in asked],
            )
        )
    return examples
