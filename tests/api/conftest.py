"""The API's behaviour, in-process (Starlette's TestClient over the real app, no socket): a
catalog server per backend, the generated MovieLens set ingested, an admin and a user."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.conftest import BACKENDS, Databases, InProcessServer, ingest_generated, settings_env
from tests.e2e.conftest import ADMIN, DEPTH, USER, USER_ID, add_logins


@dataclass
class Catalog:
    server: InProcessServer
    admin_token: str
    user_token: str
    env: dict[str, str]


@pytest.fixture(scope="session", params=BACKENDS)
def catalog(
    request: pytest.FixtureRequest,
    databases: Databases,
    in_process_factory: Callable[..., InProcessServer],
    tmp_path_factory: pytest.TempPathFactory,
) -> Catalog:
    # No background cache warming here: the statement-count test must see only its own SQL.
    settings = databases.settings(
        request.param,
        redis_url="redis://127.0.0.1:6379/0",
        max_query_depth=DEPTH,
        cache_warm_movies=0,
        llm_backend="none",  # the catalog tests need no model; the LLM has its own tests
        metrics_operations=["Named"],
    )
    ingest_generated(settings, tmp_path_factory)
    env = settings_env(settings)
    add_logins(settings, user_id=USER_ID)
    server = in_process_factory(settings)
    login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token user { userId } } }"
    admin = server.gql(login, {"e": ADMIN[0], "p": ADMIN[1]})["data"]["login"]["token"]
    user = server.gql(login, {"e": USER[0], "p": USER[1]})["data"]["login"]["token"]
    return Catalog(server, admin, user, env)
