"""A small, valid MovieLens data set in the ml-25m layout, generated with a fixed seed."""

from __future__ import annotations

import csv
import random
from pathlib import Path

GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Drama", "Horror", "Sci-Fi"]
N_MOVIES = 30
N_USERS = 40


def write_movielens(directory: Path, *, seed: int = 0) -> dict[str, int]:
    """Write movies, ratings, tags, links and users CSVs; returns the row counts."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "movies.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["movieId", "title", "genres"])
        for m in range(1, N_MOVIES + 1):
            year = 1980 + m
            title = f"Movie {m}, The ({year})" if m % 7 else f'"Quoted" Movie {m}'
            genres = (
                "|".join(sorted(rng.sample(GENRES, rng.randint(1, 3)))) if m % 10 else "(no genres listed)"
            )
            w.writerow([m, title, genres])
    ratings = 0
    with (directory / "ratings.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["userId", "movieId", "rating", "timestamp"])
        for u in range(1, N_USERS + 1):
            for m in sorted(rng.sample(range(1, N_MOVIES + 1), rng.randint(5, 15))):
                w.writerow([u, m, rng.randint(1, 10) / 2, 1_000_000_000 + rng.randint(0, 10**8)])
                ratings += 1
    with (directory / "tags.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["userId", "movieId", "tag", "timestamp"])
        for i in range(60):
            w.writerow(
                [
                    rng.randint(1, N_USERS),
                    1 + i % 5,
                    rng.choice(["funny", "dark", "classic"]),
                    1_100_000_000 + i,
                ]
            )
    with (directory / "links.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["movieId", "imdbId", "tmdbId"])
        for m in range(1, N_MOVIES + 1):
            w.writerow([m, f"{m:07d}", 1000 + m if m % 4 else ""])
    with (directory / "users.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["userId", "age", "gender", "occupation", "zip"])
        for u in range(1, N_USERS + 1):
            w.writerow([u, 18 + u, "MF"[u % 2], "student", f"{10000 + u}"])
    genome_tags = ["atmospheric", "funny", "dark", "space", "family"]
    with (directory / "genome-tags.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tagId", "tag"])
        w.writerows(enumerate(genome_tags, start=1))
    with (directory / "genome-scores.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["movieId", "tagId", "relevance"])
        for m in range(1, N_MOVIES + 1):
            for t in range(1, len(genome_tags) + 1):
                w.writerow([m, t, f"{rng.random():.5f}"])
    return {
        "movies": N_MOVIES,
        "ratings": ratings,
        "users": N_USERS,
        "links": N_MOVIES,
        "genome_scores": N_MOVIES * len(genome_tags),
    }
