"""Serving at production load on the ML-25M-shaped set: every target of the serving issue,
each against its baseline in the same run.

    python -m benchmarks.serving [--database cinerec_bench_ingest] [--home /tmp/cinerec-bench/home-train]

Needs `python -m benchmarks.ingest --keep` and `python -m benchmarks.train` first (the
database and a trained champion), wrk (Debian package) and the machine's Redis (a prefix of
its own, deleted after). LLM off: explanations are priced, never generated, here.

1. `movie(movieId)`: the app's bare route (/healthz), a persisted GET answered from the
   response cache, and the query executed (POST, nothing cached but the catalog rows);
   one worker, wrk 64 connections.
2. `recommendations(first: 10)` at a fixed offered 200 req/s (open loop), each user once.
3. `recommendations` max throughput (wrk, 32 connections), 1 worker then 2 workers.
4. Another client's p99 while one client floods at 10x its rate limit (open loop both).
5. The refusal of 64 aliases x `recommendations(first: 100) { explanation }`.
6. Cache hit ratios per kind and level under a Zipf mix of users and movies.
7. RSS per worker with 2 workers (model arrays memory-mapped: shared pages).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from benchmarks.common import free_port, machine, persisted_get, pg_url, save, start
from benchmarks.http_load import wrk
from benchmarks.openloop import Request, run

MOVIE = (
    "query Movie($id: Int!) { movie(movieId: $id) { movieId title year genres ratingsCount averageRating } }"
)
RECS = (
    "query Recs($u: Int!) { recommendations(userId: $u, first: 10) { rank score movie { movieId title } } }"
)
ADMIN = ("bench-admin@example.com", "bench-admin-password")


class Server:
    def __init__(self, env: dict[str, str], workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "app",
            "serve",
            "--port",
            str(self.port),
            "--no-access-log",
            "--workers",
            str(workers),
        ]
        self.process = start(cmd, env, f"{self.url}/healthz", timeout=600)
        deadline = time.monotonic() + 600
        while httpx.get(f"{self.url}/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics").text


def _token(url: str) -> str:
    body = {
        "query": "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
        "variables": {"e": ADMIN[0], "p": ADMIN[1]},
    }
    return httpx.post(f"{url}/graphql", json=body).json()["data"]["login"]["token"]


def _rss(pid: int) -> dict[str, float]:
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss", "Shared_Clean", "Private_Dirty", "Private_Clean"):
            fields[name] = round(int(rest.split()[0]) / 1024, 1)  # KiB -> MiB
    return fields


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def _hit_ratios(text: str) -> dict[str, dict[str, float]]:
    counts: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("cinerec_cache_requests_total{"):
            labels = dict(part.split("=") for part in line[line.index("{") + 1 : line.index("}")].split(","))
            key = (labels["kind"].strip('"'), labels["level"].strip('"'), labels["result"].strip('"'))
            counts[key] = counts.get(key, 0.0) + float(line.split()[-1])
    out: dict[str, dict[str, float]] = {}
    for kind, level in {(k, lv) for k, lv, _ in counts}:
        hit, miss = counts.get((kind, level, "hit"), 0.0), counts.get((kind, level, "miss"), 0.0)
        out.setdefault(kind, {})[level] = round(hit / (hit + miss), 3) if hit + miss else float("nan")
        out[kind][f"{level}_lookups"] = hit + miss
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database", default="cinerec_bench_ingest")
    ap.add_argument("--home", type=Path, default=Path("/tmp/cinerec-bench/home-train"))
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--skip", action="append", default=[], help="section numbers to skip")
    a = ap.parse_args()
    prefix = f"cinerec-bench-{uuid.uuid4().hex[:8]}"
    base = {
        "CINEREC_DATABASE_URL": pg_url(a.database),
        "CINEREC_HOME": str(a.home),
        "CINEREC_ENV": "test",
        "CINEREC_LLM_BACKEND": "none",
        "CINEREC_REDIS_URL": "redis://127.0.0.1:6379/0",
        "CINEREC_REDIS_PREFIX": prefix,
        "CINEREC_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    open_limits = {**base, "CINEREC_RATE_LIMITS": "false", "CINEREC_RESPONSE_CACHE_SECONDS": "600"}
    subprocess.run(
        [sys.executable, "-m", "app", "users", "create-admin", "--email", ADMIN[0], "--password", ADMIN[1]],
        env={**os.environ, **base},
        capture_output=True,
        check=False,
    )
    results: dict[str, Any] = {"machine": machine()}
    try:
        server = Server(open_limits)
        token = _token(server.url)
        auth = {"Authorization": f"Bearer {token}"}
        max_movie = 2000  # the persisted-GET section warms this many ids; every section uses the same range
        if "1" not in a.skip:
            bare = wrk(
                server.url, path="/healthz", body=None, max_id=max_movie, duration=a.duration, connections=64
            )
            executed = wrk(
                server.url,
                path="/graphql",
                max_id=max_movie,
                duration=a.duration,
                connections=64,
                body=json.dumps({"query": MOVIE, "variables": {"id": 0}}).replace('"id": 0', '"id": {id}'),
            )
            path = persisted_get(server.url, MOVIE, "Movie", range(1, max_movie + 1))
            hits = wrk(
                server.url, path=path, body=None, max_id=max_movie, duration=a.duration, connections=64
            )
            floor_port = free_port()
            floor = start(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "benchmarks.strawberry_floor:app",
                    "--port",
                    str(floor_port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                {},
                f"http://127.0.0.1:{floor_port}/graphql?query=%7B__typename%7D",
            )
            try:
                strawberry_floor = wrk(
                    f"http://127.0.0.1:{floor_port}",
                    path="/graphql",
                    max_id=max_movie,
                    duration=a.duration,
                    connections=64,
                    body=json.dumps({"query": MOVIE, "variables": {"id": 0}}).replace(
                        '"id": 0', '"id": {id}'
                    ),
                )
            finally:
                floor.terminate()
                floor.wait(30)
            results["movie"] = {
                "bare_route_healthz": bare,
                "persisted_get_cache_hit": hits,
                "executed_post": executed,
                "minimal_strawberry_app_same_query": strawberry_floor,
                "hit_vs_bare": round(hits["requests_per_s"] / bare["requests_per_s"], 3),
                "executed_vs_bare": round(executed["requests_per_s"] / bare["requests_per_s"], 3),
                "minimal_strawberry_vs_bare": round(
                    strawberry_floor["requests_per_s"] / bare["requests_per_s"], 3
                ),
            }
            print(json.dumps(results["movie"], indent=1))

        users = np.random.default_rng(1).permutation(np.arange(1, 160_000))
        if "2" not in a.skip:
            rate, seconds = 200.0, 30.0
            order = users[: int(rate * seconds)]
            openloop = asyncio.run(
                run(
                    lambda i: Request(
                        "POST",
                        f"{server.url}/graphql",
                        {"query": RECS, "variables": {"u": int(order[i])}},
                        auth,
                    ),
                    rate=rate,
                    seconds=seconds,
                )
            )
            results["recommendations_open_loop_200_1_worker"] = openloop.summary()
            print(json.dumps(results["recommendations_open_loop_200_1_worker"]))
        recs_body = json.dumps({"query": RECS, "variables": {"u": 0}}).replace('"u": 0', '"u": {id}')
        if "3" not in a.skip:
            one = wrk(
                server.url,
                path="/graphql",
                body=recs_body,
                max_id=160_000,
                duration=a.duration,
                connections=32,
                headers=auth,
            )
            results["recommendations_throughput_1_worker"] = one
            print(json.dumps(one))

        if "5" not in a.skip:
            bomb = (
                "{ "
                + " ".join(
                    f"r{i}: recommendations(userId: 1, first: 100) {{ explanation }}" for i in range(64)
                )
                + " }"
            )
            times = []
            with httpx.Client() as client:
                for _ in range(200):
                    started = time.perf_counter()
                    answer = client.post(f"{server.url}/graphql", json={"query": bomb}).json()
                    times.append((time.perf_counter() - started) * 1000)
                    assert answer["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
            results["refusal_64x100_explanations_ms"] = {
                "p50": round(float(np.percentile(times, 50)), 2),
                "p99": round(float(np.percentile(times, 99)), 2),
            }
            print(results["refusal_64x100_explanations_ms"])

        if "6" not in a.skip:
            before = _hit_ratios(server.metrics())
            rng = np.random.default_rng(7)
            zipf_users = users[np.minimum(rng.zipf(1.2, 6000), 20_000) - 1]
            zipf_movies = np.minimum(rng.zipf(1.2, 6000), 62_000)

            def mixed(i: int) -> Request:
                if i % 2:
                    return Request(
                        "POST",
                        f"{server.url}/graphql",
                        {"query": RECS, "variables": {"u": int(zipf_users[i])}},
                        auth,
                    )
                return Request(
                    "POST",
                    f"{server.url}/graphql",
                    {"query": MOVIE, "variables": {"id": int(zipf_movies[i])}},
                )

            mix = asyncio.run(run(mixed, rate=100, seconds=40))
            after = _hit_ratios(server.metrics())
            results["zipf_mix_100_per_s"] = {"latency": mix.summary(), "hit_ratios": after, "before": before}
            print(json.dumps(results["zipf_mix_100_per_s"], indent=1))
        server.stop()

        if "3" not in a.skip or "7" not in a.skip or "2" not in a.skip:
            two = Server(open_limits, workers=2)
            token2 = _token(two.url)
            if "3" not in a.skip:
                both = wrk(
                    two.url,
                    path="/graphql",
                    body=recs_body,
                    max_id=160_000,
                    duration=a.duration,
                    connections=32,
                    headers={"Authorization": f"Bearer {token2}"},
                )
                results["recommendations_throughput_2_workers"] = both
                results["two_vs_one_worker"] = round(
                    both["requests_per_s"] / results["recommendations_throughput_1_worker"]["requests_per_s"],
                    2,
                )
                print(json.dumps(both), results["two_vs_one_worker"])
            if "7" not in a.skip:
                results["rss_per_worker_mib"] = {pid: _rss(pid) for pid in _children(two.process.pid)}
                print(results["rss_per_worker_mib"])
            if "2" not in a.skip:
                seconds, used = 30.0, 0
                for rate in (200.0, 150.0, 100.0):  # each user once, never one the runs above asked for
                    order = users[100_000 + used : 100_000 + used + int(rate * seconds)]
                    used += len(order)
                    openloop = asyncio.run(
                        run(
                            lambda i, o=order: Request(
                                "POST",
                                f"{two.url}/graphql",
                                {"query": RECS, "variables": {"u": int(o[i])}},
                                {"Authorization": f"Bearer {token2}"},
                            ),
                            rate=rate,
                            seconds=seconds,
                        )
                    )
                    results[f"recommendations_open_loop_{int(rate)}_2_workers"] = openloop.summary()
                    print(rate, json.dumps(openloop.summary()))
            two.stop()

        if "4" not in a.skip:
            # a small anonymous bucket (1,000 points, 20 a second): wrk pushes far past 10x that
            limited = Server(
                {
                    **base,
                    "CINEREC_MAX_QUERY_COST": "1000",
                    "CINEREC_RATE_ANONYMOUS_CAPACITY": "1000",
                    "CINEREC_RATE_ANONYMOUS_PER_SECOND": "20",
                }
            )

            def as_victim(i: int) -> Request:
                return Request(
                    "POST",
                    f"{limited.url}/graphql",
                    {"query": MOVIE, "variables": {"id": 1 + i % max_movie}},
                    {"X-Forwarded-For": "10.9.9.9"},
                )

            alone = asyncio.run(run(as_victim, rate=20, seconds=20)).summary()
            movie_body = json.dumps({"query": MOVIE, "variables": {"id": 0}}).replace('"id": 0', '"id": {id}')
            flood_result: dict[str, Any] = {}

            def flood() -> None:
                flood_result.update(
                    wrk(
                        limited.url,
                        path="/graphql",
                        body=movie_body,
                        max_id=max_movie,
                        duration=25,
                        connections=8,
                        headers={"X-Forwarded-For": "10.6.6.6"},
                    )
                )

            import threading

            flooding = threading.Thread(target=flood)
            flooding.start()
            time.sleep(3)  # the flood has emptied its bucket
            beside = asyncio.run(run(as_victim, rate=20, seconds=18)).summary()
            flooding.join()
            results["flood"] = {
                "victim_alone": alone,
                "victim_during_flood": beside,
                "flood_wrk_8_connections": flood_result,
                "flood_per_s_vs_its_limit": round(flood_result["requests_per_s"] / 20, 1),
                "victim_p99_ratio": round(beside["p99_ms"] / alone["p99_ms"], 2),
            }
            print(json.dumps(results["flood"], indent=1))
            limited.stop()
    finally:
        client = redis.Redis()
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        for start_at in range(0, len(keys), 1000):
            client.delete(*keys[start_at : start_at + 1000])
    save("serving", results)


if __name__ == "__main__":
    main()
