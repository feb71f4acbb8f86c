"""GraphQL vs a bare Starlette endpoint doing the same lookups, under 64 connections (wrk).

    python -m benchmarks.http_load --database cinerec_bench_ingest [--duration 20]

Needs a database loaded by `python -m benchmarks.ingest --keep` and wrk (Debian package).
Both servers are one uvicorn worker on this machine, measured in the same run, one after
the other, so the ratio says what the GraphQL layer costs. wrk shares the 2 cores.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import free_port, machine, pg_url, save, start

MOVIE_QUERY = (
    "query Movie($id: Int!) { movie(movieId: $id) { movieId title year genres ratingsCount averageRating } }"
)
PAGE_QUERY = "query Page { movies(first: 20) { edges { node { movieId title year genres ratingsCount averageRating } } } }"

LUA = """
math.randomseed(7)
local path, body_template, max_id = "%(path)s", %(body)s, %(max_id)d
wrk.method = "%(method)s"
wrk.headers["Content-Type"] = "application/json"
%(headers)s
request = function()
  local id = math.random(1, max_id)
  local p = path:gsub("{id}", tostring(id))
  local b = body_template and body_template:gsub("{id}", tostring(id)) or nil
  return wrk.format(nil, p, nil, b)
end
"""


def _lua_string(text: str | None) -> str:
    return "nil" if text is None else "[==[" + text + "]==]"


def wrk(
    url: str,
    *,
    path: str,
    body: str | None,
    max_id: int,
    duration: int,
    connections: int,
    headers: dict[str, str] | None = None,
) -> dict:
    script = LUA % {
        "headers": "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items()),
        "path": path,
        "body": _lua_string(body),
        "max_id": max_id,
        "method": "POST" if body else "GET",
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", f.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    Path(f.name).unlink()

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return round(float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 2)

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))),  # type: ignore[union-attr]
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database", default="cinerec_bench_ingest")
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--max-id", type=int, default=62423)
    a = ap.parse_args()
    env = {
        "CINEREC_DATABASE_URL": pg_url(a.database),
        "CINEREC_HOME": tempfile.mkdtemp(),
        "CINEREC_ENV": "test",
    }
    gql_port, bare_port = free_port(), free_port()
    results: dict[str, dict] = {}
    server = start(
        [sys.executable, "-m", "app", "serve", "--port", str(gql_port), "--no-access-log"],
        env,
        f"http://127.0.0.1:{gql_port}/healthz",
    )
    try:
        url = f"http://127.0.0.1:{gql_port}"
        common = {"max_id": a.max_id, "duration": a.duration, "connections": a.connections}
        movie_body = json.dumps({"query": MOVIE_QUERY, "variables": {"id": 0}}).replace(
            '"id": 0', '"id": {id}'
        )
        results["graphql_movie"] = wrk(url, path="/graphql", body=movie_body, **common)
        results["graphql_movies_page20"] = wrk(
            url, path="/graphql", body=json.dumps({"query": PAGE_QUERY}), **common
        )
    finally:
        server.terminate()
        server.wait()
    bare = start(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.bare_app:create_app",
            "--factory",
            "--no-access-log",
            "--port",
            str(bare_port),
        ],
        env,
        f"http://127.0.0.1:{bare_port}/movie?id=1",
    )
    try:
        url = f"http://127.0.0.1:{bare_port}"
        results["bare_movie"] = wrk(url, path="/movie?id={id}", body=None, **common)
        results["bare_movies_page20"] = wrk(url, path="/movies?first=20", body=None, **common)
    finally:
        bare.terminate()
        bare.wait()
    results["ratio_movie"] = round(
        results["graphql_movie"]["requests_per_s"] / results["bare_movie"]["requests_per_s"], 2
    )
    results["ratio_movies_page20"] = round(
        results["graphql_movies_page20"]["requests_per_s"] / results["bare_movies_page20"]["requests_per_s"],
        2,
    )
    save(
        "http_load", {"machine": machine(), "connections": a.connections, "duration_s": a.duration, **results}
    )


if __name__ == "__main__":
    main()
