"""Serving at load: query cost, shared rate limits, the two cache levels, persisted queries
and HTTP caching, over two real replicas that share PostgreSQL and a private redis-server."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets

from app.infra.cache import bump_generation_sync
from app.infra.settings import Settings
from app.server.graphql_endpoint import TARPIT_SECONDS
from app.server.persisted_queries import sha256
from graphql_schema.costs import EXPLANATION
from tests.conftest import Databases, LiveServer, TrainedHome, ingest_into, settings_env
from tests.e2e.conftest import USER, USER_ID, add_logins, code, wait_until
from tests.movielens_fixture import write_movielens
from tests.redis_server import RedisServer

PAGE = "query Page($after: String) { movies(first: 100, after: $after) { edges { node { title } } } }"
MOVIE = "query Movie($id: Int!) { movie(movieId: $id) { movieId title ratingsCount averageRating } }"
RECS = "query Recs($u: Int!) { recommendations(userId: $u, first: 5) { movie { movieId } } }"


@dataclass
class Replicas:
    a: LiveServer
    b: LiveServer
    redis: RedisServer
    settings: Settings
    env: dict[str, str]

    def post(
        self, server: LiveServer, body: dict, *, token: str | None = None, client: str = "10.50.0.1"
    ) -> httpx.Response:
        headers = {"x-forwarded-for": client}
        if token:
            headers["authorization"] = f"Bearer {token}"
        return httpx.post(f"{server.url}/graphql", json=body, headers=headers, timeout=60)

    def gql(self, server: LiveServer, query: str, variables: dict | None = None, **kw: object) -> dict:
        response = self.post(server, {"query": query, "variables": variables or {}}, **kw)  # type: ignore[arg-type]
        return response.json()

    def token(self, server: LiveServer | None = None) -> str:
        login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
        found = self.gql(
            server or self.a, login, {"e": USER[0], "p": USER[1]}, client=f"10.51.{uuid.uuid4().int % 250}.1"
        )
        return found["data"]["login"]["token"]


def metric(server: LiveServer, series: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(series))


@pytest.fixture(scope="module")
def replicas(
    databases: Databases,
    module_server_factory: Callable[..., LiveServer],
    generated_trained: TrainedHome,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Replicas]:
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
    settings = databases.copy(
        generated_trained,
        redis_url=redis.url,
        llm_backend="none",
        cache_warm_movies=0,
        trusted_proxies=["127.0.0.1/32"],
        rate_anonymous_capacity=5000,
        rate_anonymous_per_second=5.0,
        rate_user_capacity=6000,
        rate_user_per_second=1.0,
    )
    env = settings_env(settings, redis=True)
    add_logins(settings, user_id=USER_ID, admin=False)
    yield Replicas(module_server_factory(settings), module_server_factory(settings), redis, settings, env)
    redis.stop()


# -- cost and rate limits -------------------------------------------------------------------


def test_every_response_carries_its_cost_and_the_bucket(replicas: Replicas) -> None:
    response = replicas.post(
        replicas.a,
        {
            "query": "{ movies(first: 10) { edges { node { title } } } rateLimit { cost limit remaining resetAt } }"
        },
        client="10.52.0.1",
    )
    body = response.json()
    cost = body["extensions"]["cost"]
    assert cost["requested"] == 1 + 10 * 2 and cost["limit"] == replicas.settings.max_query_cost
    assert cost["bucket"] == 5000 and cost["remaining"] == 5000 - cost["requested"]
    assert (
        body["data"]["rateLimit"]["cost"] == cost["requested"]
        and body["data"]["rateLimit"]["remaining"] == cost["remaining"]
    )
    assert response.headers["RateLimit-Limit"] == "5000"
    assert int(response.headers["RateLimit-Remaining"]) == cost["remaining"]


def test_an_anonymous_client_paging_the_catalog_is_limited_and_told_when_to_retry(replicas: Replicas) -> None:
    statuses, limited = [], None
    for _ in range(1000):
        response = replicas.post(replicas.a, {"query": PAGE}, client="10.53.0.1")
        statuses.append(response.status_code)
        if response.status_code == 429:
            limited = response
            break
    assert limited is not None, "1,000 pages of 100 in a row were never limited"
    assert len(statuses) == 5000 // 201 + 1  # the bucket held 24 pages of cost 201
    error = limited.json()["errors"][0]
    assert error["extensions"]["code"] == "RATE_LIMITED" and error["extensions"]["retryAfter"] >= 1
    assert int(limited.headers["Retry-After"]) == error["extensions"]["retryAfter"]
    assert limited.headers["RateLimit-Remaining"] == str(error["extensions"]["remaining"])
    # another client is not affected
    assert replicas.post(replicas.a, {"query": PAGE}, client="10.53.0.2").status_code == 200


def test_replicas_share_one_bucket(replicas: Replicas) -> None:
    first = replicas.post(replicas.a, {"query": PAGE}, client="10.54.0.1").json()["extensions"]["cost"][
        "remaining"
    ]
    second = replicas.post(replicas.b, {"query": PAGE}, client="10.54.0.1").json()["extensions"]["cost"][
        "remaining"
    ]
    assert second <= first - 201 + 1  # B took from what A left (plus at most a point of refill)


def test_a_forged_forwarded_for_from_an_untrusted_peer_is_ignored(
    databases: Databases, server_factory: Callable[..., LiveServer], tmp_path: Path
) -> None:
    settings = databases.settings(
        "sqlite",
        llm_backend="none",
        cache_warm_movies=0,
        rate_anonymous_capacity=5000,
        rate_anonymous_per_second=1.0,
    )
    write_movielens(tmp_path / "ml")
    ingest_into(settings, tmp_path / "ml")
    server = server_factory(settings)  # trusts no proxy: every request is 127.0.0.1's
    seen = []
    for i in range(30):
        response = httpx.post(
            f"{server.url}/graphql", json={"query": PAGE}, headers={"x-forwarded-for": f"10.55.0.{i}"}
        )
        seen.append(response.status_code)
    assert 429 in seen  # new forged addresses did not buy new buckets


async def test_a_subscription_takes_its_cost(replicas: Replicas) -> None:
    token = replicas.token()
    limit = "{ rateLimit { remaining } }"
    before = replicas.gql(replicas.a, limit, token=token)["data"]["rateLimit"]["remaining"]
    started = time.monotonic()
    async with websockets.connect(
        replicas.a.url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"]
    ) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        query = f"subscription {{ explanation(userId: {USER_ID}, movieId: 3) {{ text done }} }}"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        while json.loads(await ws.recv())["type"] != "complete":
            pass
    after = replicas.gql(replicas.a, limit, token=token)["data"]["rateLimit"]["remaining"]
    refill = (time.monotonic() - started) * replicas.settings.rate_user_per_second
    # the explanation's cost and the second rateLimit query's (1), less what flowed back
    assert before - after >= EXPLANATION + 1 - refill - 1


def test_a_flood_gets_rate_limited_fast_and_others_still_answer(replicas: Replicas) -> None:
    answers = [replicas.post(replicas.b, {"query": PAGE}, client="10.56.0.1") for _ in range(60)]
    codes = [a.status_code for a in answers]
    assert codes.count(429) >= 30 and set(codes) <= {200, 429}
    # every refusal is held a moment, the ones refused after parsing too: a flooding
    # connection sends a few requests a second, not thousands
    refused = [a for a in answers if a.status_code == 429]
    assert all(a.elapsed.total_seconds() >= TARPIT_SECONDS and a.headers["Retry-After"] for a in refused)
    assert (
        replicas.post(replicas.b, {"query": MOVIE, "variables": {"id": 1}}, client="10.56.0.2").status_code
        == 200
    )


def test_limits_and_caches_hold_with_redis_down(replicas: Replicas) -> None:
    replicas.redis.stop()
    try:
        codes = [
            replicas.post(replicas.a, {"query": PAGE}, client="10.57.0.1").status_code for _ in range(40)
        ]
        assert 429 in codes and 200 in codes  # counted in the process meanwhile
        token = replicas.token()
        recs = replicas.gql(replicas.a, RECS, {"u": USER_ID}, token=token)
        assert "errors" not in recs and len(recs["data"]["recommendations"]) == 5
        assert metric(replicas.a, "cinerec_redis_up") == 0
    finally:
        replicas.redis.start()
    wait_until(
        lambda: httpx.get(f"{replicas.a.url}/readyz").json()["status"] == "ready", "readiness came back"
    )
    # both replicas follow announcements again (and have re-read what they may have missed)
    channel = f"{replicas.settings.redis_prefix}:invalidations"
    wait_until(lambda: replicas.redis.client().pubsub_numsub(channel)[0][1] >= 2, "both followers are back")


# -- caches -----------------------------------------------------------------------------------


def test_a_rating_on_one_replica_shows_on_the_other_at_once(replicas: Replicas) -> None:
    token = replicas.token()
    recs = [
        r["movie"]["movieId"]
        for r in replicas.gql(replicas.a, RECS, {"u": USER_ID}, token=token)["data"]["recommendations"]
    ]
    target = recs[0]  # recommended, so not rated by the user yet
    before = replicas.gql(replicas.a, MOVIE, {"id": target})["data"]["movie"]["ratingsCount"]
    assert (
        replicas.gql(replicas.a, MOVIE, {"id": target})["data"]["movie"]["ratingsCount"] == before
    )  # cached on A
    rated = replicas.gql(
        replicas.b, f"mutation {{ rateMovie(movieId: {target}, rating: 5) {{ rating }} }}", token=token
    )
    assert "errors" not in rated

    def a_sees_it() -> bool:
        count = replicas.gql(replicas.a, MOVIE, {"id": target})["data"]["movie"]["ratingsCount"]
        now = [
            r["movie"]["movieId"]
            for r in replicas.gql(replicas.a, RECS, {"u": USER_ID}, token=token)["data"]["recommendations"]
        ]
        return count == before + 1 and target not in now

    wait_until(a_sees_it, "replica A served the new rating")


def test_repeated_requests_hit_the_caches(replicas: Replicas) -> None:
    token = replicas.token(replicas.b)
    series = 'cinerec_cache_requests_total{kind="recommendations",level="l1",result="hit"}'
    replicas.gql(replicas.b, RECS, {"u": USER_ID}, token=token)
    hits = metric(replicas.b, series)
    replicas.gql(replicas.b, RECS, {"u": USER_ID}, token=token)
    assert metric(replicas.b, series) == hits + 1
    # a movie neither replica read before (one the user rated: never recommended, so never
    # read with a recommendation) is found by B in Redis, put there by A
    rated = replicas.gql(
        replicas.b, "{ me { ratings(first: 100) { edges { node { movieId timestamp } } } } }", token=token
    )
    movie = max(
        e["node"]["movieId"]
        for e in rated["data"]["me"]["ratings"]["edges"]
        if e["node"]["movieId"] not in (1, 2, 5)
        and e["node"]["timestamp"] < 1_500_000_000  # from the data set
    )
    replicas.gql(replicas.a, MOVIE, {"id": movie})
    l2 = 'cinerec_cache_requests_total{kind="movie",level="l2",result="hit"}'
    before = metric(replicas.b, l2)
    replicas.gql(replicas.b, MOVIE, {"id": movie})
    assert metric(replicas.b, l2) == before + 1


# -- persisted queries and HTTP caching -------------------------------------------------------


def _get(server: LiveServer, digest: str, variables: dict, **headers: str) -> httpx.Response:
    params = {
        "extensions": json.dumps({"persistedQuery": {"version": 1, "sha256Hash": digest}}),
        "variables": json.dumps(variables),
        "operationName": "Movie",
    }
    return httpx.get(f"{server.url}/graphql", params=params, headers=headers)


def test_automatic_persisted_queries_over_post_and_get(replicas: Replicas) -> None:
    query = MOVIE + f" # {uuid.uuid4().hex}"  # a hash no test registered before
    digest = sha256(query)
    ext = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    unknown = replicas.post(replicas.a, {"variables": {"id": 2}, "extensions": ext}).json()
    assert (
        code(unknown) == "PERSISTED_QUERY_NOT_FOUND"
        and unknown["errors"][0]["message"] == "PersistedQueryNotFound"
    )
    wrong = replicas.post(replicas.a, {"query": "{ genres }", "variables": {}, "extensions": ext}).json()
    assert code(wrong) == "BAD_USER_INPUT" and "does not match" in wrong["errors"][0]["message"]
    registered = replicas.post(replicas.a, {"query": query, "variables": {"id": 2}, "extensions": ext}).json()
    assert registered["data"]["movie"]["movieId"] == 2
    by_hash = _get(replicas.b, digest, {"id": 2})  # the other replica knows it through Redis
    assert by_hash.status_code == 200 and by_hash.json()["data"]["movie"]["movieId"] == 2


def test_anonymous_catalog_gets_are_cached_shared_and_revalidated(replicas: Replicas) -> None:
    query = MOVIE + f" # {uuid.uuid4().hex}"
    digest = sha256(query)
    replicas.post(
        replicas.a,
        {
            "query": query,
            "variables": {"id": 5},
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}},
        },
    )
    first = _get(replicas.a, digest, {"id": 5})
    assert (
        first.headers["Cache-Control"] == f"public, max-age={int(replicas.settings.response_cache_seconds)}"
    )
    tag = first.headers["ETag"]
    executed = metric(replicas.a, "cinerec_graphql_requests_total")
    again = _get(replicas.a, digest, {"id": 5})
    assert again.content == first.content and again.headers["ETag"] == tag
    assert metric(replicas.a, "cinerec_graphql_requests_total") == executed  # answered without executing
    assert _get(replicas.a, digest, {"id": 5}, **{"if-none-match": tag}).status_code == 304
    on_b = metric(replicas.b, "cinerec_graphql_requests_total")
    assert _get(replicas.b, digest, {"id": 5}).content == first.content  # from Redis, not executed on B
    assert metric(replicas.b, "cinerec_graphql_requests_total") == on_b
    # an ingest moves the catalog's generation: the next GET executes again
    bump_generation_sync(replicas.settings, "catalog", 0)

    def executes_again() -> bool:
        before = metric(replicas.a, "cinerec_graphql_requests_total")
        _get(replicas.a, digest, {"id": 5})
        return metric(replicas.a, "cinerec_graphql_requests_total") == before + 1

    wait_until(executes_again, "the ingest invalidated the cached response")


def test_a_repeated_get_answered_first_keeps_every_header_it_needs(replicas: Replicas) -> None:
    """The same anonymous GET again is answered by the app's first layer (CachedAnswers):
    the same body and tag, its own request id, and a cross-origin GET still gets CORS."""
    query = MOVIE + f" # {uuid.uuid4().hex}"
    digest = sha256(query)
    ext = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    replicas.post(replicas.a, {"query": query, "variables": {"id": 7}, "extensions": ext})
    first_layer = 'cinerec_cache_requests_total{kind="response",level="first",result="hit"}'
    stored = _get(replicas.a, digest, {"id": 7})  # executed and stored: its query string is known now
    before = metric(replicas.a, first_layer)
    again = _get(replicas.a, digest, {"id": 7}, **{"x-request-id": "trace-7"})
    assert metric(replicas.a, first_layer) == before + 1
    assert again.status_code == 200 and again.json()["data"]["movie"]["movieId"] == 7
    assert again.content == stored.content and again.headers["ETag"] == stored.headers["ETag"]
    assert again.headers["Content-Type"] == "application/json"
    assert again.headers["x-request-id"] == "trace-7" and stored.headers["x-request-id"] != "trace-7"
    assert _get(replicas.a, digest, {"id": 7}, **{"if-none-match": stored.headers["ETag"]}).status_code == 304
    origin = replicas.settings.cors_origins[0]
    before = metric(replicas.a, first_layer)
    cross = _get(replicas.a, digest, {"id": 7}, origin=origin)  # the normal way: CORS adds its headers
    assert cross.content == stored.content and cross.headers["access-control-allow-origin"] == origin
    assert metric(replicas.a, first_layer) == before
    token = replicas.token()  # a caller with a token never gets the shared answer
    mine = httpx.get(
        f"{replicas.a.url}/graphql",
        params={"extensions": json.dumps(ext), "variables": json.dumps({"id": 7}), "operationName": "Movie"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert mine.headers["Cache-Control"] == "no-store" and "ETag" not in mine.headers


def test_authenticated_answers_are_never_shared(replicas: Replicas) -> None:
    token = replicas.token()
    response = replicas.post(replicas.a, {"query": "{ me { userId } }"}, token=token)
    assert response.headers["Cache-Control"] == "no-store"


def test_allowlist_mode_runs_only_the_manifest(
    databases: Databases, server_factory: Callable[..., LiveServer], tmp_path: Path
) -> None:
    allowed = "query Genres { genres }"
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "format": "apollo-persisted-query-manifest",
                "version": 1,
                "operations": [{"id": sha256(allowed), "name": "Genres", "type": "query", "body": allowed}],
            }
        )
    )
    settings = databases.settings(
        "sqlite",
        llm_backend="none",
        cache_warm_movies=0,
        persisted_queries="allowlist",
        persisted_queries_manifest=manifest,
    )
    write_movielens(tmp_path / "ml")
    ingest_into(settings, tmp_path / "ml")
    server = server_factory(settings)
    post = lambda body: httpx.post(f"{server.url}/graphql", json=body).json()  # noqa: E731
    assert code(post({"query": "{ genres }"})) == "PERSISTED_QUERY_NOT_SUPPORTED"
    ok = post({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha256(allowed)}}})
    assert "Comedy" in ok["data"]["genres"]
    other = "{ movie(movieId: 1) { title } }"
    refused = post(
        {"query": other, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha256(other)}}}
    )
    assert code(refused) == "PERSISTED_QUERY_NOT_FOUND"  # registering is not allowed either
