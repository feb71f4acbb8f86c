"""Where an executed `movie(movieId)` request spends its time in the server: py-spy samples
one uvicorn worker while wrk keeps it busy, and the top entries by own samples and by
samples under them are printed (the flame graph's widest frames).

    python -m benchmarks.profile_path [--seconds 20] [--hit]

With ``--hit`` the response cache is on and the request is the same query as a persisted GET
already answered once (an anonymous catalog page's request), and bare ``/healthz`` is
measured in the same run as its baseline.

Needs py-spy (PyPI) and wrk (Debian). The server is `cinerec serve` on SQLite with the real
MovieLens 100K (no model), limits off, the response cache off: each request runs the whole
executed path. Run it from another checkout to profile another version of the code.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import SHARED, free_port, machine, persisted_get, save, start
from benchmarks.http_load import MOVIE_QUERY, wrk


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rpartition(" ")
    # "name (file:line)" -> "name (file)": the flame graph's frames, not its lines
    return [frame.rsplit(":", 1)[0] + ")" if ":" in frame else frame for frame in stack.split(";")], int(
        count
    )


# frames every sample of the event loop passes through: not where the time goes
_ABOVE = (
    "_run_module_as_main",
    "_run_code",
    "<module>",
    "main (",
    "Typer",
    "Command.",
    "Context.invoke",
    "_main (",
    "serve (",
    "run (uvicorn",
    "Server.",
    "Runner.run",
    "asyncio_run",
    "BaseEventLoop",
    "Handle._run",
    "Task.__step",
    "Context.run",
)


# where the per-request work is: cinerec's own modules and the GraphQL library's stages
_OURS = ("app/", "graphql_schema/", "resolvers/", "strawberry/", "graphql/")


def top(raw: Path, n: int = 15) -> dict[str, list[tuple[str, float]]]:
    """The ``n`` functions with the most samples of their own and under them, as shares of
    the event loop thread's samples (other threads: the pools, idle)."""
    own: collections.Counter[str] = collections.Counter()
    under: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        if not line.strip() or "Runner.run" not in line:
            continue
        frames, count = _frames(line)
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            under[frame] += count
    share = lambda c: round(100 * c / max(total, 1), 1)  # noqa: E731
    inclusive = [
        (f, share(c))
        for f, c in under.most_common()
        if not f.startswith(_ABOVE) and any(f"({m}" in f for m in _OURS)
    ]
    return {
        "own": [(f, share(c)) for f, c in own.most_common(n)],
        "inclusive": inclusive[: 2 * n],
        "samples": [("event loop", float(total))],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--label", default="current")
    ap.add_argument("--hit", action="store_true", help="the persisted GET answered from the response cache")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cinerec-profile-"))
    env = {
        "CINEREC_HOME": str(work),
        "CINEREC_ENV": "test",
        "CINEREC_LLM_BACKEND": "none",
        "CINEREC_RATE_LIMITS": "false",
        "CINEREC_RESPONSE_CACHE_SECONDS": "600" if a.hit else "0",
        "HF_HUB_OFFLINE": "1",
    }
    full = {**os.environ, **env}
    cli = [sys.executable, "-m", "app"]
    subprocess.run([sys.executable, str(SHARED / "ml100k.py"), str(work / "ml-100k")], check=True)
    subprocess.run([*cli, "db", "upgrade"], env=full, check=True, capture_output=True)
    subprocess.run([*cli, "data", "ingest", str(work / "ml-100k")], env=full, check=True, capture_output=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(
        [*cli, "serve", "--port", str(port), "--no-access-log"], env, f"{url}/healthz", timeout=300
    )
    raw = work / "profile.txt"
    body: str | None = json.dumps({"query": MOVIE_QUERY, "variables": {"id": 0}}).replace(
        '"id": 0', '"id": {id}'
    )
    path = "/graphql"
    result: dict = {"machine": machine(), "label": a.label}
    try:
        if a.hit:
            path, body = persisted_get(url, MOVIE_QUERY, "Movie", range(1, 1683)), None
            result["bare_healthz"] = wrk(
                url, path="/healthz", body=None, max_id=1682, duration=a.seconds, connections=32
            )
        wrk(url, path=path, body=body, max_id=1682, duration=5, connections=32)  # warm
        spy = subprocess.Popen(
            [
                shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(server.pid),
                "--duration",
                str(a.seconds),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(raw),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        load = wrk(url, path=path, body=body, max_id=1682, duration=a.seconds, connections=32)
        spy.wait(60)
        found = top(raw)
    finally:
        server.terminate()
        server.wait(60)
        shutil.rmtree(work, ignore_errors=True)
    result.update({"load": load, **found})
    if a.hit:
        result["hit_vs_bare"] = round(load["requests_per_s"] / result["bare_healthz"]["requests_per_s"], 3)
    save(f"profile_path_{a.label}{'_hit' if a.hit else ''}", result)


if __name__ == "__main__":
    main()
