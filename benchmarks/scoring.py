"""Scoring latency of the served model, and recommendations over GraphQL under load.

    python -m benchmarks.scoring --database cinerec_bench_ingest --home /tmp/cinerec-bench/home-train

In process: the champion model scores 1 user and a batch of 50 users (their histories
read from the database once beforehand), including the top-10 selection; p50 and p99 over
repeated calls. Over HTTP: `recommendations(userId, first: 10)` for random users at 64
connections (wrk), one uvicorn worker, with an admin token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from app.infra.database import create_engine, session_factory
from app.infra.model_registry import registry_for
from app.infra.settings import Settings
from app.serving.llm_inputs import history_matrix, rated_by
from benchmarks.common import free_port, machine, pg_url, save, start
from benchmarks.http_load import wrk
from ml.hybrid import HybridRecommender
from ml.registry import CHAMPION, RECOMMENDER


def _latencies(fn, repeats: int) -> dict[str, float]:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p99_ms": round(float(np.percentile(times, 99)), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database", default="cinerec_bench_ingest")
    ap.add_argument("--home", type=Path, default=Path("/tmp/cinerec-bench/home-train"))
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args()
    settings = Settings(database_url=pg_url(a.database), home=a.home, env="test")
    registry = registry_for(settings)
    version = registry.alias_version(RECOMMENDER, CHAMPION)
    if version is None:
        raise SystemExit("no champion: run python -m benchmarks.train first")
    model = HybridRecommender.load(registry.download(RECOMMENDER, version, settings.home / "models"))
    rng = np.random.default_rng(0)
    users = rng.choice(model.user_ids, 50, replace=False).tolist()

    async def histories() -> dict:
        engine = create_engine(settings)
        try:
            async with session_factory(engine)() as session:
                return await rated_by(session=session, user_ids=users)
        finally:
            await engine.dispose()

    rated = asyncio.run(histories())
    one = history_matrix(model, users[:1], rated)
    fifty = history_matrix(model, users, rated)
    idx1, idx50 = model.user_index(users[:1]), model.user_index(users)
    results: dict[str, object] = {"model_version": version, "n_items": model.n_items}
    results["score_1_user"] = _latencies(lambda: model.recommend(one, idx1, 10), a.repeats)
    results["score_50_users"] = _latencies(lambda: model.recommend(fifty, idx50, 10), a.repeats)

    env = {
        "CINEREC_DATABASE_URL": settings.database_url,
        "CINEREC_HOME": str(settings.home),
        "CINEREC_ENV": "test",
    }
    email, password = "bench-admin@example.com", "bench-admin-password"
    subprocess.run(
        [sys.executable, "-m", "app", "users", "create-admin", "--email", email, "--password", password],
        env={**os.environ, **env},
        capture_output=True,
        check=False,
    )
    port = free_port()
    server = start(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--no-access-log"],
        env,
        f"http://127.0.0.1:{port}/healthz",
    )
    try:
        import httpx

        login = httpx.post(
            f"http://127.0.0.1:{port}/graphql",
            json={"query": f'mutation {{ login(email: "{email}", password: "{password}") {{ token }} }}'},
        ).json()
        token = login["data"]["login"]["token"]
        query = "query Rec($u: Int!) { recommendations(userId: $u, first: 10) { rank score movie { movieId title } } }"
        body = json.dumps({"query": query, "variables": {"u": 0}}).replace('"u": 0', '"u": {id}')
        results["graphql_recommendations_first10"] = wrk(
            f"http://127.0.0.1:{port}",
            path="/graphql",
            body=body,
            max_id=int(model.user_ids.max()),
            duration=a.duration,
            connections=64,
            headers={"Authorization": f"Bearer {token}"},
        )
    finally:
        server.terminate()
        server.wait()
    save("scoring", {"machine": machine(), **results})


if __name__ == "__main__":
    main()
