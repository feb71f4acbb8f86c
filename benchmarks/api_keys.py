"""What a service's API key costs per request against a person's token: keys are read from
the database on every use (so that a revoked key fails on its next request everywhere),
tokens through a 5 s cache of their account. One `cinerec serve` on a fresh PostgreSQL
database; the same query alternates between the two in rounds, sequentially, on one client.

    python -m benchmarks.api_keys [--rounds 10] [--per-round 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import httpx

from app.cli.users import create_login
from app.infra.auth import Role
from app.infra.settings import Settings
from benchmarks.common import machine, pg_exec, pg_url, save, serve

QUERY = "query Me($u: Int!) { user(userId: $u) { userId } }"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=200)
    args = parser.parse_args()
    name = f"cinerec_bench_keys_{uuid.uuid4().hex[:8]}"
    pg_exec(f"CREATE DATABASE {name}")
    env = {"CINEREC_DATABASE_URL": pg_url(name), "CINEREC_ENV": "test", "CINEREC_LLM_BACKEND": "none"}
    proc = None
    try:
        settings = Settings(database_url=pg_url(name), env="test")
        user_id = create_login(
            settings, "bench@example.com", "a-bench-passphrase", role=Role.ADMIN, user_id=None
        )
        proc, url = serve(env)
        with httpx.Client(base_url=url, timeout=30) as client:

            def post(headers: dict[str, str], query: str = QUERY, variables: dict | None = None) -> dict:
                body = {"query": query, "variables": variables or {"u": user_id}}
                return client.post("/graphql", json=body, headers=headers).json()

            login = 'mutation { login(email: "bench@example.com", password: "a-bench-passphrase") { token } }'
            token = post({}, login, {})["data"]["login"]["token"]
            made = post(
                {"authorization": f"Bearer {token}"},
                'mutation { createApiKey(name: "bench", scope: RECOMMEND) { key } }',
                {},
            )
            key = made["data"]["createApiKey"]["key"]
            callers = {
                "token": {"authorization": f"Bearer {token}"},
                "api_key": {"authorization": f"ApiKey {key}"},
            }
            for headers in callers.values():  # warm both paths
                for _ in range(50):
                    assert "errors" not in post(headers)
            times: dict[str, list[float]] = {k: [] for k in callers}
            for _ in range(args.rounds):
                for kind, headers in callers.items():
                    for _ in range(args.per_round):
                        started = time.perf_counter()
                        answer = post(headers)
                        times[kind].append(time.perf_counter() - started)
                        assert "errors" not in answer, answer
        result: dict[str, object] = {"machine": machine(), "requests_each": len(times["token"])}
        for kind, seen in times.items():
            ordered = sorted(seen)
            result[kind] = {
                "median_ms": round(statistics.median(seen) * 1000, 3),
                "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 3),
            }
        result["median_extra_ms"] = round(
            result["api_key"]["median_ms"] - result["token"]["median_ms"],
            3,  # type: ignore[index]
        )
        save("api_keys", result)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        pg_exec(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
