"""An open-loop load generator: requests leave on a fixed schedule whatever the server does.

A closed-loop tool (wrk) waits for each answer before sending the next, so a slow server
is offered less load and its tail latency hides (coordinated omission). Here request ``i``
is due at ``start + i / rate``; its latency is measured from that due time, so a request
that could not even leave on time counts the delay it suffered. At most ``max_in_flight``
requests are outstanding; if the server cannot keep up that many, the rest are counted as
``late`` rather than piling up without bound.

    python -m benchmarks.openloop URL --rate 200 --seconds 30 --body '{"query": "{ genres }"}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np


@dataclass
class Request:
    method: str
    url: str
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    offered_rate: float
    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    late: int = 0  # could not be sent: max_in_flight requests were already waiting

    def summary(self) -> dict[str, Any]:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        return {
            "offered_per_s": self.offered_rate,
            "sent": self.sent,
            "answered": len(self.latencies_ms),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            "late": self.late,
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p90_ms": round(float(np.percentile(lat, 90)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "max_ms": round(float(np.max(lat)), 2),
        }


async def run(
    make: Callable[[int], Request],
    *,
    rate: float,
    seconds: float,
    max_in_flight: int = 512,
    request_timeout: float = 30,
) -> Result:
    result = Result(offered_rate=rate)
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    in_flight = 0
    total = int(rate * seconds)
    async with httpx.AsyncClient(limits=limits, timeout=request_timeout) as client:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.1
        tasks: set[asyncio.Task[None]] = set()

        async def one(i: int, due: float) -> None:
            nonlocal in_flight
            request = make(i)
            try:
                response = await client.request(
                    request.method, request.url, json=request.json, headers=request.headers
                )
                result.latencies_ms.append((loop.time() - due) * 1000)
                result.statuses[response.status_code] = result.statuses.get(response.status_code, 0) + 1
            except httpx.HTTPError:
                result.errors += 1
            finally:
                in_flight -= 1

        for i in range(total):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= max_in_flight:
                result.late += 1
                continue
            in_flight += 1
            result.sent += 1
            task = asyncio.create_task(one(i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--body", help="a JSON body to POST (GET without it)")
    ap.add_argument("--header", action="append", default=[], help="NAME: VALUE")
    a = ap.parse_args()
    headers = dict(h.split(": ", 1) for h in a.header)
    body = json.loads(a.body) if a.body else None
    method = "POST" if body is not None else "GET"
    result = asyncio.run(run(lambda i: Request(method, a.url, body, headers), rate=a.rate, seconds=a.seconds))
    print(json.dumps(result.summary()))


if __name__ == "__main__":
    main()
