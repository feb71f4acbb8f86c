"""Several minutes of mixed hostile traffic against one worker: its RSS and Redis's memory
before and after (issue 18: at most +100 MB and +10 MB).

    python -m benchmarks.soak [--seconds 300] [--concurrency 6] [--settle 110]

One `cinerec serve` worker on SQLite with the real MovieLens 100K and a small model (so
that search runs), its own redis-server, X-Forwarded-For trusted from 127.0.0.1 so that the traffic
comes from 2,000 client addresses (a botnet, not one client its bucket would stop). Each
client task sends, in turn, every kind of request below; each request is distinct (nothing
a cache keyed by the text could answer twice). Memory is read from /proc and INFO memory
before the mix (after a warm-up of each kind), right after it, and again after ``settle``
seconds with no traffic (rate-limit buckets and cached responses expire by their TTLs).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis
import websockets

from benchmarks.common import SHARED, free_port, machine, save, start

USER = ("soak@example.com", "a-soak-passphrase")
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _noise(n: int, rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=n))


def _pq(query: str | None, digest: str) -> dict[str, Any]:
    body: dict[str, Any] = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}
    if query is not None:
        body["query"] = query
    return body


# Each kind: (name, make(i, rng) -> ("http", method, body or params) or ("ws", message))
KINDS: list[tuple[str, Callable[[int, random.Random], tuple[str, Any]]]] = [
    (
        "large variables",
        lambda i, r: ("post", {"query": "{ genres }", "variables": {"v": _noise(250_000, r)}}),
    ),
    (
        "long operation names",
        lambda i, r: ("post", {"query": f"query Op{_noise(5_000, r)} {{ genres }}", "operationName": None}),
    ),
    (
        "large extensions",
        lambda i, r: ("post", {"query": "{ genres }", "extensions": {"x": _noise(200_000, r)}}),
    ),
    (
        "dense documents",  # ~2,000 tokens each, refused for their aliases after parsing
        lambda i, r: (
            "post",
            {"query": "{ " + " ".join(f"a{_noise(6, r)}: genres" for _ in range(650)) + " }"},
        ),
    ),
    (
        "persisted registrations",
        lambda i, r: (
            "post",
            _pq(
                q := f"query R{_noise(12, r)} {{ "
                + " ".join(f"g{j}{_noise(8, r)}: genres" for j in range(60))
                + " }",
                _sha(q),
            ),
        ),
    ),
    ("persisted garbage", lambda i, r: ("post", _pq(q := _noise(20_000, r), _sha(q)))),
    ("persisted unknown hashes", lambda i, r: ("post", _pq(None, _noise(64, r).lower()))),
    (
        "large GET",
        lambda i, r: ("get", {"query": "{ genres }", "variables": json.dumps({"v": _noise(60_000, r)})}),
    ),
    (
        "introspection aliases",
        lambda i, r: (
            "post",
            {
                "query": "{ __schema { "
                + " ".join(f"a{j}{_noise(4, r)}: types {{ ...T }}" for j in range(60))
                + " } } fragment T on __Type { name fields { name args { name } } }"
            },
        ),
    ),
    (
        "distinct searches",  # each a new text: a cache keyed by it would fill by entries
        lambda i, r: (
            "post",
            {
                "query": "query($q: String!) { searchMovies(query: $q, first: 100) { score } }",
                "variables": {"q": _noise(40, r)},
            },
        ),
    ),
    (
        "unknown movie ids",
        lambda i, r: (
            "post",
            {
                "query": "query($m: Int!) { movie(movieId: $m) { title } }",
                "variables": {"m": r.randint(10**6, 2**31 - 1)},
            },
        ),
    ),
    # Distinct documents just under the body limit (256 KB), each parsed (issue 32): the size
    # is in a comment, a string literal, an operation name, or many variables.
    (
        "large comment documents",
        lambda i, r: ("post", {"query": f"{{ genres }} # {_noise(250_000, r)}"}),
    ),
    (
        "large literal documents",
        lambda i, r: (
            "post",
            {"query": f'{{ searchMovies(query: "{_noise(250_000, r)}", first: 1) {{ score }} }}'},
        ),
    ),
    (
        "large operation-name documents",
        lambda i, r: ("post", {"query": f"query Op{_noise(250_000, r)} {{ genres }}"}),
    ),
    (
        "long-name documents",  # 1,900 tokens, each name 120 characters: 230 KB
        lambda i, r: ("post", {"query": "{ " + " ".join(f"{_noise(120, r)}" for _ in range(1_900)) + " }"}),
    ),
    (
        "large GET documents",
        lambda i, r: ("get", {"query": f"query Op{_noise(60_000, r)} {{ genres }}"}),
    ),
    (
        "many-variable documents",  # 1,900 tokens of variable definitions, each name distinct
        lambda i, r: (
            "post",
            {"query": "query(" + " ".join(f"${_noise(60, r)}: String" for _ in range(475)) + ") { genres }"},
        ),
    ),
    (
        "websocket frames",
        lambda i, r: ("ws", {"query": "{ genres }", "variables": {"v": _noise(200_000, r)}}),
    ),
    (
        "websocket frames over the limit",
        lambda i, r: ("ws", {"query": "{ genres }", "variables": {"v": _noise(1_000_000, r)}}),
    ),
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def redis_mb(client: redis.Redis) -> float:
    return int(client.info("memory")["used_memory"]) / 2**20


async def _ws(url: str, token: str, payload: dict[str, Any]) -> str:
    try:
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"], max_size=None) as ws:  # type: ignore[list-item]
            await ws.send(
                json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
            )
            await asyncio.wait_for(ws.recv(), 30)
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            return str(message.get("type"))
    except websockets.ConnectionClosed as closed:
        return f"closed {closed.rcvd.code if closed.rcvd else None}"


async def mix(
    url: str, token: str, seconds: float, concurrency: int, seed: int, kinds: list[int] | None = None
) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    ws_url = url.replace("http://", "ws://") + "/graphql"
    chosen = [KINDS[k] for k in kinds] if kinds else KINDS

    async def client(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        async with httpx.AsyncClient(timeout=60) as http:
            i = 0
            while time.monotonic() < deadline:
                name, make = chosen[(i + n) % len(chosen)]
                how, body = make(i, rng)
                headers = {
                    "x-forwarded-for": f"10.{rng.randint(0, 7)}.{rng.randint(0, 15)}.{rng.randint(1, 15)}"
                }
                try:
                    if how == "ws":
                        outcome = await _ws(ws_url, token, body)
                    elif how == "get":
                        response = await http.get(f"{url}/graphql", params=body, headers=headers)
                        outcome = str(response.status_code)
                    else:
                        response = await http.post(f"{url}/graphql", json=body, headers=headers)
                        outcome = str(response.status_code)
                except (httpx.HTTPError, OSError) as exc:
                    outcome = type(exc).__name__
                outcomes[f"{name}: {outcome}"] += 1
                i += 1

    await asyncio.gather(*(client(n) for n in range(concurrency)))
    return outcomes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--concurrency", type=int, default=6)
    ap.add_argument("--settle", type=float, default=110, help="quiet seconds before the last reading")
    ap.add_argument("--only", default="", help="comma-separated kinds (names) to send; default: all")
    ap.add_argument("--sample", type=float, default=30, help="seconds between RSS readings during the mix")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cinerec-soak-"))
    redis_port = free_port()
    redis_proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    env = {
        "CINEREC_HOME": str(work),
        "CINEREC_ENV": "test",
        "CINEREC_LLM_BACKEND": "none",
        "CINEREC_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "CINEREC_TRUSTED_PROXIES": "127.0.0.1/32",
        "HF_HUB_OFFLINE": "1",
    }
    cli = [sys.executable, "-m", "app"]
    full_env = {**os.environ, **env}
    subprocess.run([sys.executable, str(SHARED / "ml100k.py"), str(work / "ml-100k")], check=True)
    subprocess.run([*cli, "db", "upgrade"], env=full_env, check=True, capture_output=True)
    subprocess.run(
        [*cli, "data", "ingest", str(work / "ml-100k")], env=full_env, check=True, capture_output=True
    )
    train = [*cli, "train", "--epochs", "2", "--no-tune", "--no-refit"]
    subprocess.run(train, env=full_env, check=True, capture_output=True)
    subprocess.run(
        [*cli, "users", "create", "--email", USER[0], "--password", USER[1]], env=full_env, check=True
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(
        [*cli, "serve", "--port", str(port), "--no-access-log"], env, f"{url}/healthz", timeout=300
    )
    store = redis.Redis(port=redis_port)
    try:
        token = httpx.post(
            f"{url}/graphql", json={"query": LOGIN, "variables": {"e": USER[0], "p": USER[1]}}
        ).json()["data"]["login"]["token"]
        asyncio.run(mix(url, token, 20, 2, seed=0))  # warm-up: every kind's code path and arena
        before = {"rss_mb": rss_mb(server.pid), "redis_mb": redis_mb(store)}
        names = [name for name, _ in KINDS]
        kinds = [names.index(k.strip()) for k in a.only.split(",") if k.strip()]
        samples: list[tuple[int, float, float]] = []
        stop = threading.Event()

        def sample() -> None:
            begun = time.monotonic()
            while not stop.wait(a.sample):
                samples.append((round(time.monotonic() - begun), rss_mb(server.pid), redis_mb(store)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        outcomes = asyncio.run(mix(url, token, a.seconds, a.concurrency, seed=1, kinds=kinds))
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join()
        after = {"rss_mb": rss_mb(server.pid), "redis_mb": redis_mb(store)}
        time.sleep(a.settle)  # no traffic: what expires by its TTL goes
        settled = {"rss_mb": rss_mb(server.pid), "redis_mb": redis_mb(store)}
        healthy = httpx.get(f"{url}/healthz").status_code == 200
    finally:
        server.terminate()
        server.wait(60)
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "machine": machine(),
        "seconds": round(elapsed),
        "requests": sum(outcomes.values()),
        "concurrency": a.concurrency,
        "outcomes": dict(sorted(outcomes.items())),
        "before": before,
        "after": after,
        "after_settle": settled,
        "rss_growth_mb": round(after["rss_mb"] - before["rss_mb"], 1),
        "redis_growth_mb": round(after["redis_mb"] - before["redis_mb"], 2),
        "rss_growth_settled_mb": round(settled["rss_mb"] - before["rss_mb"], 1),
        "redis_growth_settled_mb": round(settled["redis_mb"] - before["redis_mb"], 2),
        "healthy_after": healthy,
        "during": [{"s": t, "rss_mb": round(r, 1), "redis_mb": round(m, 2)} for t, r, m in samples],
    }
    save("soak", result)


if __name__ == "__main__":
    main()
