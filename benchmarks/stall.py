"""Does one heavy request hold the others up? `/healthz`'s latency while a normal user's most
expensive recommendations request runs (issue 32: deep, diversified pages in many aliases).

    python -m benchmarks.stall --home DIR [--aliases 8] [--diversity 0.9] [--depth 900]

DIR holds a trained model (`cinerec train`) on SQLite, as `make demo` leaves it. The script
starts `cinerec serve` on a free port, makes a user account linked to the first MovieLens user without one, pages
each alias's list (its own diversity) to ``--depth`` with real cursors, and then sends the
aliases in one request while another connection asks `/healthz` every 20 ms (one kept-alive
connection, so that only the server's time is measured). Printed: the request's price and
time, and `/healthz` latencies idle and during the request.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

from benchmarks.common import machine, save, serve

PAGE = "query($u: Int!, $a: String, $d: Float!) { recommendations(userId: $u, first: 100, diversity: $d, after: $a) { cursor } }"


CREATE = [sys.executable, "-m", "app", "users", "create"]


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def _poll(client: httpx.Client, url: str, until: threading.Event, into: list[float]) -> None:
    while not until.is_set():
        started = time.perf_counter()
        client.get(f"{url}/healthz", timeout=120)
        into.append(time.perf_counter() - started)
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--aliases", type=int, default=8)
    parser.add_argument("--diversity", type=float, default=0.9)
    parser.add_argument("--depth", type=int, default=900, help="the cursor's rank (a multiple of 100)")
    args = parser.parse_args()
    env = {
        "CINEREC_HOME": str(args.home.resolve()),
        "CINEREC_ENV": "development",
        "CINEREC_LLM_BACKEND": "none",
        # paging every alias to its depth first takes more than one bucket: the limits are not
        # what is measured here (the request's price is, against CINEREC_MAX_QUERY_COST)
        "CINEREC_RATE_USER_CAPACITY": "1000000",
        "CINEREC_RATE_USER_PER_SECOND": "100000",
    }
    email, password = f"stall-{uuid.uuid4().hex[:8]}@example.com", "stall-password"
    for user in range(1, 944):  # the first MovieLens user without an account yet
        made = subprocess.run(
            [*CREATE, "--email", email, "--password", password, "--user-id", str(user)],
            env={**os.environ, **env},
            capture_output=True,
        )
        if made.returncode == 0:
            break
    server, url = serve(env)
    try:
        with httpx.Client(base_url=url, timeout=300) as client, httpx.Client() as health:
            login = client.post(
                "/graphql",
                json={
                    "query": "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
                    "variables": {"e": email, "p": password},
                },
            ).json()
            client.headers["authorization"] = f"Bearer {login['data']['login']['token']}"
            cursors = []
            for n in range(args.aliases):
                diversity, after = round(args.diversity - n * 0.01, 2), None
                for _ in range(args.depth // 100):
                    page = client.post(
                        "/graphql", json={"query": PAGE, "variables": {"u": user, "a": after, "d": diversity}}
                    )
                    assert page.json().get("data"), page.text
                    after = page.json()["data"]["recommendations"][-1]["cursor"]
                cursors.append((diversity, after))
            fields = " ".join(
                f'a{n}: recommendations(userId: {user}, first: 100, diversity: {d}, after: "{a}") {{ rank }}'
                for n, (d, a) in enumerate(cursors)
            )
            idle: list[float] = []
            for _ in range(50):
                started = time.perf_counter()
                health.get(f"{url}/healthz")
                idle.append(time.perf_counter() - started)
                time.sleep(0.02)
            during: list[float] = []
            done = threading.Event()
            poller = threading.Thread(target=_poll, args=(health, url, done, during))
            poller.start()
            started = time.perf_counter()
            answer = client.post("/graphql", json={"query": f"{{ {fields} }}"}).json()
            took = time.perf_counter() - started
            done.set()
            poller.join()
    finally:
        server.terminate()
        server.wait(30)
    result = {
        "machine": machine(),
        "aliases": args.aliases,
        "depth": args.depth + 100,
        "diversity": args.diversity,
        "errors": answer.get("errors"),
        "price": (answer.get("extensions") or {}).get("cost", {}).get("requested"),
        "request_s": round(took, 2),
        "healthz_idle": _quantiles(idle),
        "healthz_during": _quantiles(during),
    }
    save("stall", result)


if __name__ == "__main__":
    main()
