"""`cinerec serve --workers 2` as it runs in a container: metrics merged across the workers,
and SIGTERM draining in-flight requests and telling websocket clients 1001 (going away)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets

from tests.conftest import _free_port
from tests.e2e.conftest import wait_until
from tests.movielens_fixture import write_movielens


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    home: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the module: the SIGTERM test, which stops it, runs last."""
    tmp_path = tmp_path_factory.mktemp("two-workers")
    env = {
        **os.environ,
        "CINEREC_HOME": str(tmp_path),
        "CINEREC_ENV": "test",
        "CINEREC_LLM_BACKEND": "none",
        "CINEREC_CACHE_WARM_MOVIES": "0",
        "CINEREC_SHUTDOWN_TIMEOUT_SECONDS": "10",
        "CINEREC_LOG_FORMAT": "json",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    write_movielens(tmp_path / "ml")
    subprocess.run(
        [sys.executable, "-m", "app", "data", "ingest", str(tmp_path / "ml")],
        env=env,
        check=True,
        capture_output=True,
    )
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", "2", "--no-access-log"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,  # its own process group: a failed test can stop the workers too
    )
    served = Served(process, port, tmp_path)
    try:
        wait_until(lambda: _answers(served.url), "two workers started", seconds=180)
        yield served
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        log.close()


def _log_lines(served: Served) -> list[dict]:
    lines = (served.home / "server.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]  # every line is one JSON object


def test_metrics_are_merged_across_workers(two_workers: Served) -> None:
    count = 60
    for _ in range(count):  # a new connection each: the kernel spreads them over the workers
        with httpx.Client() as client:
            assert (
                client.post(
                    f"{two_workers.url}/graphql", json={"query": "query Named { genres }"}
                ).status_code
                == 200
            )
    folder = two_workers.home / "prometheus-multiproc"
    writers = {p.stem.rsplit("_", 1)[-1] for p in folder.glob("counter_*.db")}
    assert len(writers) == 2, writers  # both workers counted requests
    totals = set()
    for _ in range(10):  # whichever worker answers /metrics, it reports both workers' counts
        with httpx.Client() as client:
            text = client.get(f"{two_workers.url}/metrics").text
        totals.add(
            sum(
                float(x.split()[-1])
                for x in text.splitlines()
                if x.startswith("cinerec_graphql_requests_total{")
            )
        )
    assert totals == {float(count)}


def test_logs_are_json_with_one_line_per_request(two_workers: Served) -> None:
    token = "req-7f3a"
    answer = httpx.post(
        f"{two_workers.url}/graphql",
        json={
            "query": "query Catalog { movies(first: 3) { edges { node { title } } } }",
            "operationName": "Catalog",
        },
        headers={"x-request-id": token},
    )
    assert answer.headers["x-request-id"] == token
    minted = httpx.post(f"{two_workers.url}/graphql", json={"query": "{ genres }"}).headers["x-request-id"]
    assert len(minted) == 32 and minted != token  # none given (or a malformed one): a new id

    def logged() -> list[dict]:
        return [r for r in _log_lines(two_workers) if r.get("request_id") == token]

    wait_until(lambda: bool(logged()), "the request's log line")
    [line] = logged()
    assert line["logger"] == "cinerec.requests" and line["level"] == "INFO"
    assert line["operation"] == "Catalog" and line["status"] == 200 and line["duration_ms"] > 0
    assert line["cost"] > 0 and line["cache"] == "bypass" and "user" not in line
    assert any(r.get("logger", "").startswith("uvicorn") for r in _log_lines(two_workers))


async def test_sigterm_drains_in_flight_requests_and_says_going_away(two_workers: Served) -> None:
    ws_url = two_workers.url.replace("http", "ws") + "/graphql"
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        body = json.dumps({"query": "{ genres }"}).encode()
        slow = socket.create_connection(("127.0.0.1", two_workers.port))
        slow.sendall(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body[:5]
        )
        await asyncio.sleep(0)  # both are in flight before the signal
        wait_until(lambda: _answers(two_workers.url), "the server handled the requests so far")
        two_workers.process.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 15)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        slow.sendall(body[5:])  # the request that was in flight still gets its answer
        reply = b""
        while chunk := slow.recv(65536):
            reply += chunk
        slow.close()
    assert reply.startswith(b"HTTP/1.1 200") and b'"genres"' in reply
    assert two_workers.process.wait(30) == 0
