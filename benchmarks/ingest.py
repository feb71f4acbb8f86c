"""Ingest the ML-25M-shaped synthetic set into a fresh PostgreSQL database: wall time, peak RSS.

    python -m benchmarks.ingest [--data DIR] [--scale 1.0] [--keep]

The ingest runs as `cinerec data ingest` in a child process, timed from outside, its peak
RSS read from the kernel (wait4). With --rerun, an idempotent second run is timed too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import machine, pg_exec, pg_url, save, synth_dataset


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process, read with wait4."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **env})
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{cmd} failed with {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024  # KiB -> MiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("/tmp/cinerec-bench/synth25m"))
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--database", default="cinerec_bench_ingest")
    ap.add_argument("--keep", action="store_true", help="keep the database (the HTTP benchmark uses it)")
    ap.add_argument(
        "--rerun", action="store_true", help="also time an idempotent second run (an upsert of every row)"
    )
    a = ap.parse_args()
    data = synth_dataset(a.data, a.scale)
    rows = sum(1 for _ in (data / "ratings.csv").open("rb")) - 1
    pg_exec(f'DROP DATABASE IF EXISTS "{a.database}" WITH (FORCE)')
    pg_exec(f'CREATE DATABASE "{a.database}"')
    env = {"CINEREC_DATABASE_URL": pg_url(a.database), "CINEREC_HOME": str(a.data.parent / "home")}
    cli = [sys.executable, "-m", "app"]
    subprocess.run([*cli, "db", "upgrade"], env={**os.environ, **env}, check=True)
    first, peak = _run([*cli, "data", "ingest", str(data)], env)
    rerun = {}
    if a.rerun:
        again, peak_again = _run([*cli, "data", "ingest", str(data)], env)
        rerun = {"rerun_s": round(again, 1), "rerun_peak_rss_mib": round(peak_again)}
    if not a.keep:
        pg_exec(f'DROP DATABASE IF EXISTS "{a.database}" WITH (FORCE)')
    save(
        "ingest",
        {
            "machine": machine(),
            "ratings_rows": rows,
            "first_ingest_s": round(first, 1),
            "first_ingest_peak_rss_mib": round(peak),
            **rerun,
        },
    )


if __name__ == "__main__":
    main()
