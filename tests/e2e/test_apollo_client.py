"""A real Apollo Client (npm @apollo/client and its persisted-queries link) against a live
cinerec: the first client registers the query's hash, the second sends only the hash over
GET and is answered from the response cache."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Databases, LiveServer, ingest_into
from tests.movielens_fixture import write_movielens

APOLLO = Path(__file__).resolve().parent / "apollo"


@pytest.fixture(scope="module")
def apollo_client() -> Path:
    """The client's npm packages, installed once from the committed lock file."""
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "node and npm are needed (the machine has them)"
    if not (APOLLO / "node_modules" / "@apollo" / "client").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=APOLLO, check=True, capture_output=True, timeout=300
        )
    return APOLLO


def test_apollo_persisted_queries_link_registers_then_hits_the_cache(
    apollo_client: Path, databases: Databases, server_factory: Callable[..., LiveServer], tmp_path: Path
) -> None:
    settings = databases.settings("sqlite", llm_backend="none", cache_warm_movies=0)
    write_movielens(tmp_path / "ml")
    ingest_into(settings, tmp_path / "ml")
    server = server_factory(settings)
    done = subprocess.run(
        ["node", "apq.mjs", server.url, "3"],
        cwd=apollo_client,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    first, second = json.loads(done.stdout)
    assert first["movie"]["movieId"] == second["movie"]["movieId"] == 3
    # round 1: the hash alone over GET is not known yet; the link resends it with the query
    assert [r["sentQuery"] for r in first["requests"]] == [False, True]
    assert first["requests"][0]["method"] == "GET"
    # round 2, a fresh client: the hash alone over GET is enough, and the answer is cacheable
    [only] = second["requests"]
    assert only["method"] == "GET" and not only["sentQuery"] and only["status"] == 200
    assert only["cacheControl"].startswith("public, max-age=")
