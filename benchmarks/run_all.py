"""Every benchmark in order (about 80 minutes on 2 cores): ingest, HTTP load, train, scoring, LLM
streams, serving at load (on the ingested set and trained model), the request path's profile,
the product API and Lighthouse on the web client.

    make bench        # or: python -m benchmarks.run_all
Results land in bench-results/*.json; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import subprocess
import sys

STEPS = [
    ["benchmarks.ingest", "--keep"],
    ["benchmarks.http_load"],
    ["benchmarks.train"],
    ["benchmarks.scoring"],
    ["benchmarks.llm"],
    ["benchmarks.serving"],
    ["benchmarks.profile_path"],
    ["benchmarks.product"],
    ["benchmarks.lighthouse"],
]


def main() -> None:
    for module, *args in STEPS:
        subprocess.run([sys.executable, "-m", module, *args], check=True)


if __name__ == "__main__":
    main()
