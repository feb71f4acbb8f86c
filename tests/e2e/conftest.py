"""A catalog server per backend: the generated MovieLens set ingested, an admin and a user."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.cli.users import create_login
from app.infra.auth import Role
from app.infra.settings import Settings
from tests.conftest import (
    Databases,
    LiveServer,
    TrainedHome,
    answer,
    cli,
    ingest_generated,
    ingest_into,
    settings_env,
    trained_template,
)
from tests.redis_server import RedisServer

ADMIN = ("admin@example.com", "admin-password")
USER = ("user@example.com", "user-password")
USER_ID = 7  # the MovieLens user the regular login is linked to
DEPTH = 4  # low enough that this schema's deepest path (user.ratings.edges.node.movie.title) exceeds it


def add_logins(settings: Settings, *, user_id: int, admin: bool = True) -> None:
    """The fixtures' logins (ADMIN, a new user; USER, MovieLens user ``user_id``), made as
    `cinerec users create-admin` and `create` make them, in this process (the commands
    themselves are tested in tests/app/test_cli.py)."""
    if admin:
        create_login(settings, *ADMIN, role=Role.ADMIN, user_id=None)
    create_login(settings, *USER, role=Role.USER, user_id=user_id)


@pytest.fixture(scope="session")
def ml100k_trained(tmp_path_factory: pytest.TempPathFactory, ml100k_dir: Path) -> TrainedHome:
    """ML-100K in PostgreSQL and a model trained by `cinerec train` (10 epochs, no tuning:
    version 1, champion), made once per run; fixtures take copies (``Databases.copy``)."""

    def make(settings: Settings) -> None:
        ingest_into(settings, ml100k_dir)
        trained = cli(settings_env(settings), "train", "--epochs", "10", "--no-tune")
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert "version 1: serving (champion)" in trained.stdout

    return trained_template(tmp_path_factory, "ml100k", make)


@pytest.fixture(scope="session")
def generated_trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedHome:
    """The generated MovieLens set in PostgreSQL and a quick model (2 epochs, no tuning, no
    refit: version 1, champion), made once per run for the servers that need a model but not
    a good one; fixtures take copies (``Databases.copy``)."""

    def make(settings: Settings) -> None:
        ingest_generated(settings, tmp_path_factory)
        trained = cli(settings_env(settings), "train", "--epochs", "2", "--no-tune", "--no-refit")
        assert trained.returncode == 0, trained.stderr[-2000:]

    return trained_template(tmp_path_factory, "generated", make)


@dataclass
class Recommender:
    server: LiveServer
    admin_token: str
    user_token: str
    env: dict[str, str]
    settings: object


@pytest.fixture(scope="session")
def recommender(
    databases: Databases, live_server_factory: Callable[..., LiveServer], ml100k_trained: TrainedHome
) -> Recommender:
    """A copy of the trained ML-100K home (version 1, champion) and a server on it."""
    # a generous LLM timeout: a slow machine must not turn a test of batching into one of fallbacks
    settings = databases.copy(
        ml100k_trained,
        redis_url="redis://127.0.0.1:6379/0",
        llm_max_new_tokens=24,
        llm_timeout_seconds=90.0,
    )
    env = settings_env(settings)
    add_logins(settings, user_id=1)
    server = live_server_factory(settings)
    login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
    admin = server.gql(login, {"e": ADMIN[0], "p": ADMIN[1]})["data"]["login"]["token"]
    user = server.gql(login, {"e": USER[0], "p": USER[1]})["data"]["login"]["token"]
    return Recommender(server, admin, user, env, settings)


@dataclass
class Guarded:
    server: LiveServer
    redis: RedisServer
    settings: Settings
    env: dict[str, str]

    def post(
        self,
        query: str,
        variables: dict | None = None,
        *,
        token: str | None = None,
        client: str = "10.1.0.1",
        operation: str | None = None,
    ) -> httpx.Response:
        headers = {"x-forwarded-for": client}
        if token:
            headers["authorization"] = f"Bearer {token}"
        body: dict = {"query": query, "variables": variables or {}}
        if operation:
            body["operationName"] = operation
        return httpx.post(f"{self.server.url}/graphql", json=body, headers=headers, timeout=60)

    def gql(self, query: str, variables: dict | None = None, **kw: object) -> dict:
        response = self.post(query, variables, **kw)  # type: ignore[arg-type]
        return answer(response)

    def login(self, email: str, password: str, client: str = "10.1.0.1") -> dict:
        return self.gql(LOGIN, {"e": email, "p": password}, client=client)

    def token(self, email: str, password: str) -> str:
        return self.login(email, password, client=f"10.9.{uuid.uuid4().int % 250}.1")["data"]["login"][
            "token"
        ]

    def metric(self, series: str) -> float:
        text = httpx.get(f"{self.server.url}/metrics").text
        return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(series))


LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
REGISTER = (
    "mutation($e: String!, $p: String!) { register(email: $e, password: $p) { token user { userId } } }"
)


def code(result: dict) -> str:
    return result["errors"][0]["extensions"]["code"]


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 20) -> None:
    """Wait for a condition the server reaches by itself (a message handled, a reconnect)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def guarded(
    databases: Databases,
    live_server_factory: Callable[..., LiveServer],
    generated_trained: TrainedHome,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Guarded]:
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
    settings = databases.copy(
        generated_trained,
        redis_url=redis.url,
        llm_backend="none",
        cache_warm_movies=0,
        trusted_proxies=["127.0.0.1/32"],  # tests speak from their own addresses (X-Forwarded-For)
        account_cache_seconds=3600,  # only an announcement can refresh a cached account here
        register_attempts=3,
        password_hash_queue=64,
        login_attempts_per_address=10,  # failures from one address across accounts
        persisted_queries_bytes=64_000,  # registrations beyond this push the oldest out of Redis
        # tests here count the SQL statements a request sends: no drift-gauge read in between
        drift_refresh_seconds=86_400,
    )
    env = settings_env(settings, redis=True)
    add_logins(settings, user_id=USER_ID)
    yield Guarded(live_server_factory(settings), redis, settings, env)
    redis.stop()
