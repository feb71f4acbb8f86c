"""What the expensive fields cost, measured, in units of one `movie(movieId)` lookup: the
numbers behind the `@cost` declarations (``graphql_schema.costs``).

    python -m benchmarks.field_costs [--database cinerec_bench_ingest] [--home DIR] [--n 40]

One uvicorn worker, the in-process LLM on, requests one at a time (so each latency is the
field's own work, not queueing), nothing answered from a cache (a different user, movie
or query text every time). Reports the median latency of each query and its ratio to the
movie lookup.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from benchmarks.common import machine, pg_url, save, serve

ADMIN = ("bench-admin@example.com", "bench-admin-password")
WORDS = [
    "space",
    "war",
    "love",
    "robot",
    "heist",
    "ghost",
    "island",
    "king",
    "dragon",
    "music",
    "school",
    "ocean",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database", default="cinerec_bench_ingest")
    ap.add_argument("--home", type=Path, default=Path("/tmp/cinerec-bench/home-train"))
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--first-user", type=int, default=1000, help="users asked for: from here on (ML-100K: 1)")
    a = ap.parse_args()
    env = {
        "CINEREC_DATABASE_URL": pg_url(a.database),
        "CINEREC_HOME": str(a.home),
        "CINEREC_ENV": "test",
        "CINEREC_RATE_LIMITS": "false",
        "CINEREC_RESPONSE_CACHE_SECONDS": "0",
        "CINEREC_REDIS_PREFIX": f"cinerec-costs-{uuid.uuid4().hex[:6]}",
        "HF_HUB_OFFLINE": "1",
    }
    subprocess.run(
        [sys.executable, "-m", "app", "users", "create-admin", "--email", ADMIN[0], "--password", ADMIN[1]],
        env={**os.environ, **env},
        capture_output=True,
        check=False,
    )
    server, url = serve(env, timeout=600)
    try:
        login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
        token = httpx.post(
            f"{url}/graphql", json={"query": login, "variables": {"e": ADMIN[0], "p": ADMIN[1]}}
        ).json()["data"]["login"]["token"]
        headers = {"authorization": f"Bearer {token}"}
        queries = {
            "movie": lambda i: ("query($x: Int!) { movie(movieId: $x) { title } }", {"x": 100 + i}),
            "recommendations_10": lambda i: (
                "query($x: Int!) { recommendations(userId: $x, first: 10) { rank } }",
                {"x": a.first_user + i},
            ),
            # 8: the most explanations one request may ask for (CINEREC_LLM_MAX_EXPLANATIONS)
            "recommendations_8_explained": lambda i: (
                "query($x: Int!) { recommendations(userId: $x, first: 8) { rank explanation } }",
                {"x": a.first_user + 200 + i},
            ),
            "search_10": lambda i: (
                "query($q: String!) { searchMovies(query: $q, first: 10) { score } }",
                {"q": f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7) % len(WORDS)]} {i}"},
            ),
            "similar_10": lambda i: (
                "query($x: Int!) { similarMovies(movieId: $x, first: 10) { movieId } }",
                {"x": 300 + i},
            ),
        }
        medians: dict[str, float] = {}
        with httpx.Client(timeout=300, headers=headers) as client:
            for name, make in queries.items():
                n = 6 if name.endswith("explained") else a.n
                times = []
                for i in range(n + 1):
                    query, variables = make(i)
                    started = time.perf_counter()
                    body = client.post(f"{url}/graphql", json={"query": query, "variables": variables}).json()
                    assert "errors" not in body, body
                    if i:  # the first of each is a warm-up
                        times.append((time.perf_counter() - started) * 1000)
                medians[name] = round(statistics.median(times), 2)
                print(name, medians[name], "ms")
    finally:
        server.terminate()
        server.wait(60)
    unit = medians["movie"]
    ratios = {k: round(v / unit, 1) for k, v in medians.items()}
    per_explanation = (medians["recommendations_8_explained"] - medians["recommendations_10"]) / 8
    ratios["one_explanation"] = round(per_explanation / unit, 1)
    save("field_costs", {"machine": machine(), "median_ms": medians, "in_movie_lookups": ratios})
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
