"""Helpers shared by the benchmarks: throw-away PostgreSQL databases, servers, peak memory."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import asyncpg
import httpx

from app.server.persisted_queries import sha256

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def pg_url(name: str) -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


def pg_exec(sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def synth_dataset(out: Path, scale: float = 1.0) -> Path:
    """The ML-25M-shaped synthetic set from ../shared/data (made once, then reused)."""
    if not (out / "ratings.csv").exists():
        subprocess.run(
            [sys.executable, str(SHARED / "synth_movielens.py"), str(out), "--scale", str(scale)], check=True
        )
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], env: dict[str, str], url: str, timeout: float = 60) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{cmd} did not answer at {url}")


def serve(env: dict[str, str], timeout: float = 120) -> tuple[subprocess.Popen[bytes], str]:
    """``cinerec serve`` (one worker, no access log) on a free port with ``env``, once it answers
    ``/healthz``: the process and its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "app", "serve", "--port", str(port), "--no-access-log"]
    return start(cmd, env, f"{url}/healthz", timeout), url


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem:.0f} GiB, {platform.python_implementation()} {platform.python_version()}"


def save(name: str, result: dict) -> None:
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def persisted_get(url: str, query: str, operation: str, ids: range) -> str:
    """The wrk path of ``query`` as a persisted GET (``{id}`` in its variables), registered
    and answered once for every id, so that the next GETs are response-cache hits."""
    ext = {"persistedQuery": {"version": 1, "sha256Hash": sha256(query)}}
    httpx.post(f"{url}/graphql", json={"query": query, "variables": {"id": ids[0]}, "extensions": ext})
    path = (
        f"/graphql?operationName={operation}&extensions="
        + urllib.parse.quote(json.dumps(ext))
        + "&variables="
        + urllib.parse.quote('{"id": ')
        + "{id}"
        + urllib.parse.quote("}")
    )
    with httpx.Client() as client:
        for movie in ids:
            client.get(url + path.replace("{id}", str(movie)))
    return path
