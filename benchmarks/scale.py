"""Where `cinerec train` (tuning and the learned ranker included) stops scaling: wall time, peak
RSS and per-step timings at several sizes of the ML-25M-shaped synthetic set.

    python -m benchmarks.scale --scale 0.04 [--scale 0.2] [--epochs 30]

Each size: ``../shared/data/synth_movielens.py --scale S`` (0.04: about 1M ratings),
`cinerec data ingest` into a fresh SQLite home, then `cinerec train --epochs E` timed as a
child process (peak RSS from ``wait4``). The real ML-100K row comes from the demo's home
(docs/benchmarks.md). The synthetic set says nothing about quality: nDCG is not reported.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import SHARED, machine, save


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[str, float, int]:
    """(stdout, seconds, peak RSS in MiB) of a command that must succeed."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd[2:])} failed:\n{out[-3000:]}")
    return out, time.perf_counter() - started, round(usage.ru_maxrss / 1024)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, action="append", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    a = ap.parse_args()
    rows = []
    for scale in a.scale:
        root = Path(tempfile.mkdtemp(prefix=f"cinerec-scale-{scale}-"))
        data = root / "data"
        subprocess.run(
            [sys.executable, str(SHARED / "synth_movielens.py"), str(data), "--scale", str(scale)], check=True
        )
        env = {**os.environ, "CINEREC_HOME": str(root / "home")}
        env.pop("CINEREC_DATABASE_URL", None)
        _, ingest_s, _ = _timed([sys.executable, "-m", "app", "data", "ingest", str(data)], env)
        out, train_s, rss = _timed([sys.executable, "-m", "app", "train", "--epochs", str(a.epochs)], env)
        timings = re.search(r"timings (\{.*\})", out)
        ranker = re.search(r"learned ranker: (.*)", out)
        row = {
            "scale": scale,
            "ratings": sum(1 for _ in (data / "ratings.csv").open()) - 1,
            "ingest_s": round(ingest_s, 1),
            "train_s": round(train_s, 1),
            "train_peak_rss_mib": rss,
            "steps_s": timings.group(1) if timings else None,
            "ranker": ranker.group(1) if ranker else None,
        }
        print(row, flush=True)
        rows.append(row)
    save("scale", {"machine": machine(), "epochs": a.epochs, "rows": rows})


if __name__ == "__main__":
    main()
