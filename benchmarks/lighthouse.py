"""Lighthouse (npm ``lighthouse``, driving Debian's Chromium) on the web client's page at ``/``:
performance, accessibility and best-practices scores, on its mobile preset (a throttled phone,
Lighthouse's default) and its desktop preset, against ``cinerec serve`` on this machine.

    python -m benchmarks.lighthouse

Lighthouse is installed once under var/lighthouse (about 185 MB); results go to
bench-results/lighthouse.json and the full reports beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, machine, save, serve

LIGHTHOUSE_VERSION = "12.8.2"  # what docs/benchmarks.md reports; the suite runs the same
CATEGORIES = ("performance", "accessibility", "best-practices")
AUDITS = (
    "first-contentful-paint",
    "largest-contentful-paint",
    "total-blocking-time",
    "cumulative-layout-shift",
)


def lighthouse() -> Path:
    home = ROOT / "var" / "lighthouse"
    binary = home / "node_modules" / ".bin" / "lighthouse"
    if not binary.exists():
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(home),
                f"lighthouse@{LIGHTHOUSE_VERSION}",
            ],
            check=True,
        )
    return binary


def run(binary: Path, url: str, preset: str, out: Path, categories: tuple[str, ...] = CATEGORIES) -> dict:
    """One Lighthouse run of ``url``: its scores in ``categories`` (0-100), and where
    performance is among them its timings."""
    report = out / f"lighthouse-{preset}.json"
    cmd = [
        str(binary),
        url,
        "--quiet",
        "--output=json",
        f"--output-path={report}",
        f"--only-categories={','.join(categories)}",
        "--chrome-flags=--headless=new --no-sandbox",
    ]
    if preset == "desktop":
        cmd.append("--preset=desktop")
    chromium = os.environ.get("CHROME_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    subprocess.run(cmd, check=True, env={**os.environ, "CHROME_PATH": chromium}, timeout=300)
    found = json.loads(report.read_text())
    timed = "performance" in categories
    return {
        "scores": {c: round(found["categories"][c]["score"] * 100) for c in categories},
        "metrics": {a: found["audits"][a]["displayValue"] for a in AUDITS} if timed else {},
        "failed": [  # the audits that cost points, by id, for a test's message
            a["id"] for a in found["audits"].values() if a.get("score") is not None and a["score"] < 1
        ],
        "lighthouse": found["lighthouseVersion"],
        "browser": found["environment"]["hostUserAgent"],
    }


def main() -> None:
    binary = lighthouse()
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "CINEREC_HOME": home,
            "CINEREC_LLM_BACKEND": "none",
            "CINEREC_ENV": "development",
        }
        process, url = serve(env)
        try:
            out = ROOT / "bench-results"
            out.mkdir(exist_ok=True)
            result = {preset: run(binary, f"{url}/", preset, out) for preset in ("mobile", "desktop")}
        finally:
            process.terminate()
            process.wait(30)
    save("lighthouse", {"page": "/", "machine": machine(), **result})


if __name__ == "__main__":
    main()
