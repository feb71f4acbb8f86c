"""What a service's API key costs per request against a person's token. With Redis, a key's
check is cached under the keys' epoch (one Redis GET a request); without, it is read from
the database every time. Tokens go through a 5 s cache of their account. A `cinerec serve`
on a fresh PostgreSQL database, first without Redis and then with the machine's Redis; in each,
the same query alternates between token and key in rounds, sequentially, on one client.

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
    try:
        settings = Settings(database_url=pg_url(name), env="test")
        user_id = create_login(
            settings, "bench@example.com", "a-bench-passphrase", role=Role.ADMIN, user_id=None
        )
        env = {"CINEREC_DATABASE_URL": pg_url(name), "CINEREC_ENV": "test", "CINEREC_LLM_BACKEND": "none"}
        redis = {"CINEREC_REDIS_URL": "redis://127.0.0.1:6379/0", "CINEREC_REDIS_PREFIX": name}
        result: dict[str, object] = {"machine": machine()}
        for label, extra in (("without_redis", {}), ("with_redis", redis)):
            result[label] = measure({**env, **extra}, user_id, args.rounds, args.per_round)
        save("api_keys", result)
    finally:
        pg_exec(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def measure(env: dict[str, str], user_id: int, rounds: int, per_round: int) -> dict[str, object]:
    proc, url = serve(env)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:

            def post(headers: dict[str, str], query: str = QUERY, variables: dict | None = None) -> dict:
                body = {"query": query, "variables": variables if variables is not None else {"u": user_id}}
                return client.post("/graphql", json=body, headers=headers).json()

            login = 'mutation { login(email: "bench@example.com", password: "a-bench-passphrase") { token } }'
            token = post({}, login, {})["data"]["login"]["token"]
            made = post(
                {"authorization": f"Bearer {token}"},
                "mutation($n: String!) { createApiKey(name: $n, scope: RECOMMEND) { key } }",
                {"n": f"bench-{uuid.uuid4().hex[:6]}"},
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
            for _ in range(rounds):
                for kind, headers in callers.items():
                    for _ in range(per_round):
                        started = time.perf_counter()
                        answer = post(headers)
                        times[kind].append(time.perf_counter() - started)
                        assert "errors" not in answer, answer
    finally:
        proc.terminate()
        proc.wait(30)
    out: dict[str, object] = {"requests_each": len(times["token"])}
    for kind, seen in times.items():
        ordered = sorted(seen)
        out[kind] = {
            "median_ms": round(statistics.median(seen) * 1000, 3),
            "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 3),
        }
    out["median_extra_ms"] = round(out["api_key"]["median_ms"] - out["token"]["median_ms"], 3)  # type: ignore[index]
    return out


if __name__ == "__main__":
    main()
