"""The product API's numbers: filters before the top against filtering a short list after it,
diversity's cost in relevance, how soon an added movie is found, and a home page's latency
beside plain recommendations.

    python -m benchmarks.product [--section quality] [--section added] [--section home]

- quality (in process, the real MovieLens 100K, the project's held-out split: `cinerec
  train`'s per-user 75/25 split, seed 42, the hybrid fitted on the training part, 10 epochs):
  nDCG@10 for three genres, where a movie is relevant when it is held out *and* of the genre,
  ranking the whole catalog under the filter against taking the unfiltered top 100 and
  filtering it; then nDCG@10, intra-list diversity (mean cosine distance of the content
  embeddings) and genre coverage (distinct genres in a top 10) at diversity 0, 0.2, 0.5, 0.8.
- added (a server on ML-100K in SQLite with that model): wall time from sending `addMovie` to
  the movie answering in search, in similar and in recommendations (median of 5).
- home (2 workers, PostgreSQL): `homePage` at 50 requests/s open loop, then
  `recommendations(first: 10)` at the same rate, in one run, each user once per query (neither
  answer is cached before its first request). By default on MovieLens 100K (all 943 users,
  about 19 s each) in a database of its own; `--database D --home H` points it at a prepared
  set instead, such as the ML-25M-shaped one of `benchmarks.ingest` and `benchmarks.train`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.common import SHARED, free_port, machine, pg_exec, pg_url, save, start
from benchmarks.openloop import Request, run
from ml import metrics as m
from ml.diversity import intra_list_diversity, mmr
from ml.hybrid import rank_unrated

GENRES = ["Comedy", "Horror", "Documentary"]
DIVERSITY = [0.0, 0.2, 0.5, 0.8]


def quality(data_dir: Path) -> dict[str, Any]:
    from benchmarks.preference import load
    from ml.training import TrainConfig, TrainData, train

    ratings, catalog = load(data_dir)
    config = TrainConfig(epochs=10, tune=False, progress=False)
    result = train(TrainData(ratings, catalog), config, refit=False, evaluate_only=True, keep_evaluation=True)
    assert result.evaluation is not None
    model, train_part, test_part = result.evaluation
    users = np.flatnonzero(np.diff(test_part.matrix.indptr))
    history = train_part.matrix[users]
    scores = model.score(history, users)
    genre_matrix, names = catalog.genre_matrix()
    held = [
        test_part.matrix.indices[test_part.matrix.indptr[u] : test_part.matrix.indptr[u + 1]] for u in users
    ]
    out: dict[str, Any] = {"users": len(users), "filtered": {}, "diversity": []}
    for genre in GENRES:
        column = names.index(genre)
        in_genre = np.asarray(genre_matrix[:, column].toarray()).ravel() > 0
        relevant = [h[in_genre[h]] for h in held]
        keep = np.array([len(r) > 0 for r in relevant])
        rows = np.flatnonzero(keep)
        wanted = [relevant[i] for i in rows]
        before, _ = rank_unrated(scores[rows].copy(), history[rows], 10, allowed=in_genre)
        top100, _ = rank_unrated(scores[rows].copy(), history[rows], 100)
        after = np.full((len(rows), 10), -1, dtype=np.int64)
        for i, row in enumerate(top100):
            kept = row[in_genre[row]][:10]
            after[i, : len(kept)] = kept
        out["filtered"][genre] = {
            "users_with_held_out_movies_of_the_genre": len(rows),
            "ndcg_at_10_filter_before_top": round(m.ndcg_at_k(before, wanted, 10), 4),
            "ndcg_at_10_filter_after_top_100": round(m.ndcg_at_k(after, wanted, 10), 4),
            "lists_short_of_10_after_top_100": int((after < 0).any(axis=1).sum()),
        }
        print(genre, out["filtered"][genre], flush=True)
    pool, pool_scores = rank_unrated(scores.copy(), history, 100)
    embeddings = np.asarray(model.item_embeddings)
    for diversity in DIVERSITY:
        lists = np.stack(
            [
                row[mmr(embeddings[row], values, 10, diversity)]
                for row, values in zip(pool, pool_scores, strict=True)
            ]
        )
        coverage = [len({g for i in row for g in catalog.genres[i]}) for row in lists]
        out["diversity"].append(
            {
                "diversity": diversity,
                "ndcg_at_10": round(m.ndcg_at_k(lists, held, 10), 4),
                "intra_list_diversity": round(
                    float(np.mean([intra_list_diversity(r, embeddings) for r in lists])), 4
                ),
                "genres_in_top_10": round(float(np.mean(coverage)), 2),
            }
        )
        print(out["diversity"][-1], flush=True)
    return out


ADD = "mutation($m: MovieInput!) { addMovie(movie: $m) { movieId } }"
SEARCH = "query($q: String!) { searchMovies(query: $q, first: 10) { movie { movieId } } }"
SIMILAR = "{ similarMovies(movieId: 1, first: 20) { movieId } }"
RECS = (
    "query($y: Int!) { recommendations(userId: 1, first: 5, filter: {yearFrom: $y}) { movie { movieId } } }"
)
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"


def added(data_dir: Path) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="cinerec-added-"))
    env = {
        "CINEREC_HOME": str(home),
        "CINEREC_ENV": "test",
        "CINEREC_LLM_BACKEND": "none",
        "HF_HUB_OFFLINE": "1",
    }
    full = {**os.environ, **env}
    cli = [sys.executable, "-m", "app"]
    subprocess.run([*cli, "db", "upgrade"], env=full, check=True, capture_output=True)
    subprocess.run([*cli, "data", "ingest", str(data_dir)], env=full, check=True, capture_output=True)
    subprocess.run(
        [*cli, "train", "--epochs", "10", "--no-tune", "--no-refit"],
        env=full,
        check=True,
        capture_output=True,
    )
    admin = ("bench-admin@example.com", "a-bench-passphrase")
    subprocess.run(
        [*cli, "users", "create-admin", "--email", admin[0], "--password", admin[1]], env=full, check=True
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(
        [*cli, "serve", "--port", str(port), "--no-access-log"], env, f"{url}/healthz", timeout=300
    )
    seen: dict[str, list[float]] = {"search": [], "similar": [], "recommendations": []}
    try:
        with httpx.Client(timeout=60) as client:

            def gql(query: str, variables: dict | None = None, token: str | None = None) -> dict:
                headers = {"authorization": f"Bearer {token}"} if token else {}
                return client.post(
                    f"{url}/graphql", json={"query": query, "variables": variables or {}}, headers=headers
                ).json()

            token = gql(LOGIN, {"e": admin[0], "p": admin[1]})["data"]["login"]["token"]
            for n in range(5):
                year = 2040 + n
                movie = {
                    "title": f"Toy Story {n + 5}",
                    "year": year,
                    "genres": ["Animation", "Children's", "Comedy"],
                    "tags": ["toys that come alive"],
                }
                started = time.perf_counter()
                movie_id = gql(ADD, {"m": movie}, token)["data"]["addMovie"]["movieId"]
                query = f"Toy Story {n + 5} toys that come alive"
                checks = {
                    "search": lambda m=movie_id, q=query: (
                        m in [h["movie"]["movieId"] for h in gql(SEARCH, {"q": q})["data"]["searchMovies"]]
                    ),
                    "similar": lambda m=movie_id: (
                        m in [h["movieId"] for h in gql(SIMILAR)["data"]["similarMovies"]]
                    ),
                    "recommendations": lambda m=movie_id, y=year: (
                        m
                        in [
                            h["movie"]["movieId"]
                            for h in gql(RECS, {"y": y}, token)["data"]["recommendations"]
                        ]
                    ),
                }
                pending = dict(checks)
                while pending:
                    for name, check in list(pending.items()):
                        if check():
                            seen[name].append(round(time.perf_counter() - started, 3))
                            del pending[name]
                    if time.perf_counter() - started > 30:
                        raise RuntimeError(f"not found within 30 s: {list(pending)}")
    finally:
        server.terminate()
        server.wait(60)
    return {k: {"median_s": statistics.median(v), "all_s": v} for k, v in seen.items()}


HOME = """query($u: Int!) { homePage(userId: $u) { rows { title items(first: 10) { rank movie { movieId title } } } } }"""
RECOMMENDATIONS = (
    "query($u: Int!) { recommendations(userId: $u, first: 10) { rank score movie { movieId title } } }"
)


def prepare_100k(data_dir: Path) -> tuple[str, Path]:
    """A PostgreSQL database with MovieLens 100K and a model trained on it (10 epochs)."""
    database = "cinerec_bench_product"
    pg_exec(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    pg_exec(f"CREATE DATABASE {database}")
    model_home = Path(tempfile.mkdtemp(prefix="cinerec-product-home-"))
    env = {
        **os.environ,
        "CINEREC_DATABASE_URL": pg_url(database),
        "CINEREC_HOME": str(model_home),
        "CINEREC_ENV": "test",
        "HF_HUB_OFFLINE": "1",
    }
    cli = [sys.executable, "-m", "app"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([*cli, "data", "ingest", str(data_dir)], env=env, check=True, capture_output=True)
    subprocess.run(
        [*cli, "train", "--epochs", "10", "--no-tune", "--no-refit"], env=env, check=True, capture_output=True
    )
    return database, model_home


def home(database: str, model_home: Path, users: np.ndarray) -> dict[str, Any]:
    env = {
        "CINEREC_DATABASE_URL": pg_url(database),
        "CINEREC_HOME": str(model_home),
        "CINEREC_ENV": "test",
        "CINEREC_LLM_BACKEND": "none",
        "CINEREC_RATE_LIMITS": "false",
        "HF_HUB_OFFLINE": "1",
    }
    admin = ("bench-admin@example.com", "bench-admin-password")
    subprocess.run(
        [sys.executable, "-m", "app", "users", "create-admin", "--email", admin[0], "--password", admin[1]],
        env={**os.environ, **env},
        capture_output=True,
        check=False,
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--no-access-log", "--workers", "2"],
        env,
        f"{url}/healthz",
        timeout=600,
    )
    try:
        token = httpx.post(
            f"{url}/graphql", json={"query": LOGIN, "variables": {"e": admin[0], "p": admin[1]}}
        ).json()["data"]["login"]["token"]
        auth = {"Authorization": f"Bearer {token}"}
        for query in (HOME, RECOMMENDATIONS):  # a status 200 could carry errors: see one answer whole
            answer = httpx.post(
                f"{url}/graphql", json={"query": query, "variables": {"u": int(users[0])}}, headers=auth
            ).json()
            if answer.get("errors") or not answer.get("data"):
                raise RuntimeError(f"the benchmark's query fails: {answer}")
        order = np.random.default_rng(3).permutation(users[1:])[: 50 * 30]  # users[0] was asked above
        out: dict[str, Any] = {"users": len(order)}
        for name, query in (("home_page", HOME), ("recommendations_first_10", RECOMMENDATIONS)):
            result = asyncio.run(
                run(
                    lambda i, o=order, q=query: Request(
                        "POST", f"{url}/graphql", {"query": q, "variables": {"u": int(o[i])}}, auth
                    ),
                    rate=50,
                    seconds=len(order) / 50,
                )
            )
            out[name] = result.summary()
            print(name, out[name], flush=True)
    finally:
        server.terminate()
        server.wait(60)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--section", action="append", choices=["quality", "added", "home"])
    ap.add_argument("--database", help="a prepared PostgreSQL database (default: ML-100K, made here)")
    ap.add_argument("--home", type=Path, help="the CINEREC_HOME with the model trained on --database")
    ap.add_argument("--users", type=int, default=943, help="user ids 1..N to ask for (each once)")
    a = ap.parse_args()
    sections = a.section or ["quality", "added", "home"]
    data_dir = Path(tempfile.mkdtemp(prefix="cinerec-ml100k-")) / "ml-100k"
    subprocess.run([sys.executable, str(SHARED / "ml100k.py"), str(data_dir)], check=True)
    results: dict[str, Any] = {"machine": machine()}
    if "quality" in sections:
        results["quality"] = quality(data_dir)
    if "added" in sections:
        results["added_movie"] = added(data_dir)
        print(results["added_movie"], flush=True)
    if "home" in sections:
        if a.database is None:
            database, model_home = prepare_100k(data_dir)
        else:
            database, model_home = a.database, a.home
        results["home_vs_recommendations_50_per_s"] = home(database, model_home, np.arange(1, a.users + 1))
        if a.database is None:
            pg_exec(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    save("product", results)


if __name__ == "__main__":
    main()
