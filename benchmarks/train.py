"""Train the hybrid on the ML-25M-shaped database: wall time and peak RSS of `cinerec train`.

    python -m benchmarks.train --database cinerec_bench_ingest [--epochs 10] [--eval-users 5000]

Needs the database from `python -m benchmarks.ingest --keep`. The whole command is timed,
from reading 25M ratings out of PostgreSQL to the registered MLflow version; the per-step
timings come from the command's own report.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import machine, pg_url, save


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database", default="cinerec_bench_ingest")
    ap.add_argument("--home", type=Path, default=Path("/tmp/cinerec-bench/home-train"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--eval-users", type=int, default=5000)
    ap.add_argument("--tune", action="store_true")
    a = ap.parse_args()
    env = {**os.environ, "CINEREC_DATABASE_URL": pg_url(a.database), "CINEREC_HOME": str(a.home)}
    cmd = [sys.executable, "-m", "app", "train", "--epochs", str(a.epochs), "--eval-users", str(a.eval_users)]
    cmd.append("--tune" if a.tune else "--no-tune")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"train failed:\n{out}")
    print(out)
    timings = re.search(r"timings (\{.*\})", out)
    version = re.search(r"version (\d+)", out)
    save(
        "train",
        {
            "machine": machine(),
            "epochs": a.epochs,
            "eval_users": a.eval_users,
            "tune": a.tune,
            "wall_s": round(seconds, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024),
            "steps_s": timings.group(1) if timings else None,
            "version": version.group(1) if version else None,
        },
    )


if __name__ == "__main__":
    main()
