"""A key's check is cached per replica under the keys' epoch in Redis: a second use sends no
SQL, and a revocation replaces the epoch, so the other replica's next use reads the database.
With Redis down during the revocation (the epoch cannot be replaced), a replica that sees
Redis down trusts nothing it checked before: the revoked key still fails everywhere. Two
in-process apps on one PostgreSQL database and a private redis-server."""

from __future__ import annotations

import pytest

from app.cli.users import create_login
from app.infra.auth import Role
from tests.conftest import Databases, InProcessServer, answer
from tests.e2e.conftest import ADMIN, LOGIN
from tests.redis_server import RedisServer

RATE = "{ rateLimit { limit } }"  # needs no SQL of its own: what a key's check costs is all there is
KEYS = "{ apiKeys { name } }"


def with_key(server: InProcessServer, query: str, key: str) -> dict:
    headers = {"authorization": f"ApiKey {key}"}
    return answer(server.http.post("/graphql", json={"query": query}, headers=headers))


def sql_sent(server: InProcessServer) -> float:
    text = server.http.get("/metrics").text
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith("cinerec_sql_queries_total"))


def test_a_key_is_checked_once_per_epoch_and_a_revocation_holds_with_redis_down(
    databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> None:
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
    settings = databases.settings("postgresql", redis_url=redis.url, llm_backend="none", cache_warm_movies=0)
    create_login(settings, *ADMIN, role=Role.ADMIN, user_id=None)
    try:
        # the servers stop inside the test, with their Redis back up, before it goes
        with InProcessServer(settings) as a, InProcessServer(settings.model_copy()) as b:
            token = a.gql(LOGIN, {"e": ADMIN[0], "p": ADMIN[1]})["data"]["login"]["token"]
            made = a.gql('mutation { createApiKey(name: "ops", scope: ADMIN) { key } }', token=token)
            key = made["data"]["createApiKey"]["key"]
            for server in (a, b):
                assert "errors" not in with_key(server, KEYS, key)
            before = sql_sent(b)
            assert with_key(b, RATE, key)["data"]["rateLimit"]["limit"] > 0
            assert sql_sent(b) == before  # checked under this epoch already: no SQL

            redis.stop()
            revoked = a.gql('mutation { revokeApiKey(name: "ops") { revokedAt } }', token=token)
            assert revoked["data"]["revokeApiKey"]["revokedAt"], revoked
            for server in (b, a):
                refused = with_key(server, KEYS, key)
                assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", refused
            redis.start()  # back, empty: no epoch, so the database decides again
            for server in (b, a):
                assert with_key(server, KEYS, key)["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    finally:
        redis.stop()
