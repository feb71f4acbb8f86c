"""An open-loop load generator: requests leave on a fixed schedule whatever the server does.

A closed-loop tool (wrk) waits for each answer before sending the next, so a slow server
is offered less load and its tail latency hides (coordinated omission). Here request ``i``
is due at ``start + i / rate``; its latency is measured from that due time, so a request
that could not even leave on time counts the delay it suffered. At most ``max_in_flight``
requests are outstanding; if the server cannot keep up that many, the rest are counted as
``late`` rather than piling up without bound.

The client is a few lines of HTTP/1.1 over keep-alive asyncio streams, not an HTTP library:
on these 2 shared cores httpx itself took most of a core at 120 requests/s, which starved
the server it was measuring.

    python -m benchmarks.openloop URL --rate 200 --seconds 30 --body '{"query": "{ genres }"}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


def _encode(request: Request) -> tuple[str, int, bytes]:
    url = urllib.parse.urlsplit(request.url)
    body = b"" if request.json is None else json.dumps(request.json).encode()
    path = url.path + (f"?{url.query}" if url.query else "")
    head = [f"{request.method} {path} HTTP/1.1", f"Host: {url.netloc}", f"Content-Length: {len(body)}"]
    if request.json is not None:
        head.append("Content-Type: application/json")
    head += [f"{k}: {v}" for k, v in request.headers.items()]
    return url.hostname or "127.0.0.1", url.port or 80, ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Pool:
    """Keep-alive connections, one request at a time each."""

    def __init__(self) -> None:
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def send(self, host: str, port: int, raw: bytes) -> int:
        if self.idle:
            try:
                return await self._send(self.idle.pop(), raw)
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                pass  # the server closed an idle connection: once more on a fresh one
        return await self._send(await asyncio.open_connection(host, port), raw)

    async def _send(self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], raw: bytes) -> int:
        reader, writer = connection
        try:
            writer.write(raw)
            status_line = await reader.readline()
            status = int(status_line.split()[1])
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status


async def run(
    make: Callable[[int], Request],
    *,
    rate: float,
    seconds: float,
    max_in_flight: int = 512,
    request_timeout: float = 30,
) -> Result:
    result = Result(offered_rate=rate)
    pool = _Pool()
    in_flight = 0
    total = int(rate * seconds)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.1
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int, due: float) -> None:
        nonlocal in_flight
        host, port, raw = _encode(make(i))
        try:
            status = await asyncio.wait_for(pool.send(host, port, raw), request_timeout)
            result.latencies_ms.append((loop.time() - due) * 1000)
            result.statuses[status] = result.statuses.get(status, 0) + 1
        except (OSError, TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError):
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
    for _, writer in pool.idle:
        writer.close()
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
