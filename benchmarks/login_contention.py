"""An unrelated `movie` query's latency while 8 clients log in as fast as they can, against
the same query with no logins, in one run (one uvicorn worker, PostgreSQL).

    python -m benchmarks.login_contention [--seconds 15]

Before the security fix argon2 ran on the event loop: the review measured `movie` p50 going
from 3 ms to 326 ms (max 1.07 s) under 8 concurrent logins.
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
import uuid
from pathlib import Path

import httpx

from benchmarks.common import free_port, machine, pg_exec, pg_url, save, start
from tests.movielens_fixture import write_movielens

MOVIE = {"query": "query Movie { movie(movieId: 3) { movieId title genres ratingsCount } }"}
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"


async def _measure(url: str, seconds: float, logins: int) -> dict[str, float]:
    latencies: list[float] = []
    login_count = 0
    stop = time.monotonic() + seconds

    async def query_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            response = await client.post(url, json=MOVIE)
            assert response.status_code == 200 and "errors" not in response.json(), response.text
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    async def login_loop(client: httpx.AsyncClient, i: int) -> None:
        nonlocal login_count
        while time.monotonic() < stop:
            body = {"query": LOGIN, "variables": {"e": "bench@example.com", "p": "bench-password-1"}}
            response = await client.post(url, json=body, headers={"x-forwarded-for": f"10.0.0.{i}"})
            assert "token" in response.text, response.text
            login_count += 1

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(query_loop(client), *(login_loop(client, i) for i in range(logins)))
    ordered = sorted(latencies)
    return {
        "queries": len(latencies),
        "logins_per_s": round(login_count / seconds, 1),
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 2),
        "max_ms": round(1000 * ordered[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    name = f"cinerec_bench_login_{uuid.uuid4().hex[:8]}"
    pg_exec(f'CREATE DATABASE "{name}"')
    home = Path(tempfile.mkdtemp())
    env = {
        **os.environ,
        "CINEREC_HOME": str(home),
        "CINEREC_DATABASE_URL": pg_url(name),
        "CINEREC_LLM_BACKEND": "none",
        "CINEREC_TRUSTED_PROXIES": "127.0.0.1/32",
        "CINEREC_LOGIN_ATTEMPTS_PER_ADDRESS": "1000000",
    }
    try:
        write_movielens(home / "ml")
        for cmd in (
            ["data", "ingest", str(home / "ml")],
            ["users", "create", "--email", "bench@example.com", "--password", "bench-password-1"],
        ):
            subprocess.run([sys.executable, "-m", "app", *cmd], env=env, check=True, capture_output=True)
        port = free_port()
        server = start(
            [sys.executable, "-m", "app", "serve", "--port", str(port), "--no-access-log"],
            env,
            f"http://127.0.0.1:{port}/healthz",
        )
        try:
            url = f"http://127.0.0.1:{port}/graphql"
            asyncio.run(_measure(url, 2, 0))  # warm-up
            alone = asyncio.run(_measure(url, args.seconds, 0))
            with_logins = asyncio.run(_measure(url, args.seconds, 8))
        finally:
            server.terminate()
            server.wait(30)
    finally:
        pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    result = {"machine": machine(), "movie_alone": alone, "movie_with_8_logins": with_logins}
    save("login_contention", result)


if __name__ == "__main__":
    main()
