"""Every finding of the security review, answered over a real server.

The `guarded` server runs on PostgreSQL with a private redis-server (so a test can stop it),
trusts X-Forwarded-For from 127.0.0.1 (so each test can speak from its own client address),
and holds a small trained model so that promotions can be followed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event

from graphql_schema.costs import EXPLANATION
from ml.registry import CHAMPION, RECOMMENDER
from tests.conftest import Databases, LiveServer, _free_port, ingest_into
from tests.e2e.conftest import (
    ADMIN,
    LOGIN,
    REGISTER,
    USER,
    USER_ID,
    Guarded,
    cli,
    code,
    wait_until,
)
from tests.movielens_fixture import write_movielens

# -- 1. one query must not freeze the server -------------------------------------------------


def fragment_chain(levels: int) -> str:
    """F_i spreads F_(i-1) twice: 2^levels copies of F0 once every spread is expanded."""
    frags = ["fragment F0 on Movie { title }"]
    frags += [f"fragment F{i} on Movie {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1)]
    return "query { movie(movieId: 1) { ...F%d } }\n" % levels + "\n".join(frags)


def test_a_fragment_chain_answers_at_once_and_health_stays_fast(guarded: Guarded) -> None:
    # Before: F21 took 7.5 s and F39 pinned the CPU until SIGKILL (the depth and alias rules
    # expanded every spread). Execution follows each fragment once, so it is cheap: answered.
    health: list[float] = []
    stop = threading.Event()

    def poll_health() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                started = time.perf_counter()
                client.get(f"{guarded.server.url}/healthz")
                health.append(time.perf_counter() - started)

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        started = time.perf_counter()
        chain = guarded.gql(fragment_chain(39))
        seconds = time.perf_counter() - started
    finally:
        stop.set()
        poller.join()
    assert chain["data"] == {"movie": {"title": "Movie 1, The"}} and seconds < 1.0
    assert health and max(health) < 1.0


def test_fragment_cycles_are_refused(guarded: Guarded) -> None:
    cycle = "query { movie(movieId: 1) { ...A } } fragment A on Movie { ...B } fragment B on Movie { ...A }"
    assert code(guarded.gql(cycle)) == "BAD_USER_INPUT"


def test_an_over_cost_query_is_refused_before_anything_runs(guarded: Guarded) -> None:
    aliases = " ".join(
        f"r{i}: recommendations(userId: {USER_ID}, first: 100) {{ explanation }}" for i in range(64)
    )
    token = guarded.token(*USER)
    guarded.gql("{ me { userId } }", token=token)  # the token's account is checked (and cached)
    before = guarded.metric("cinerec_sql_queries_total")
    result = guarded.gql("{ " + aliases + " }", token=token)
    assert code(result) == "QUERY_TOO_COMPLEX"
    extensions = result["errors"][0]["extensions"]
    assert extensions["cost"] > extensions["limit"] == guarded.settings.max_query_cost
    explanation = EXPLANATION
    assert extensions["cost"] == 64 * (10 + 100 * (1 + explanation))  # priced as the table says
    assert guarded.metric("cinerec_sql_queries_total") == before  # no resolver ran


def test_a_request_over_its_time_budget_is_cancelled_with_a_clear_error(
    databases: Databases, server_factory: Callable[..., LiveServer], tmp_path: Path
) -> None:
    settings = databases.settings(
        "sqlite", llm_backend="none", cache_warm_movies=0, request_timeout_seconds=1e-4
    )
    write_movielens(tmp_path / "ml")
    ingest_into(settings, tmp_path / "ml")
    server = server_factory(settings)
    result = server.gql("{ movies(first: 5) { totalCount edges { node { title genres } } } }")
    assert result["data"] is None and code(result) == "TIMEOUT"
    assert result["errors"][0]["extensions"]["budgetSeconds"] == 1e-4
    assert httpx.get(f"{server.url}/healthz").status_code == 200


# -- 2. password hashing off the event loop -------------------------------------------------


async def test_password_hashing_leaves_the_event_loop_free() -> None:
    from app.infra.auth import PasswordHasher

    hasher = PasswordHasher(threads=1, max_waiting=4)
    stored = await hasher.hash("a-good-long-password")
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    running = asyncio.create_task(ticker())
    assert await hasher.verify("a-good-long-password", stored)
    done.set()
    await running
    hasher.close()
    assert ticks >= 10  # the loop kept turning while argon2 ran (it never turned, before)


async def test_a_burst_of_logins_beyond_the_hash_queue_is_refused_not_queued() -> None:
    from app.infra.auth import PasswordHasher
    from app.infra.errors import RateLimited

    hasher = PasswordHasher(threads=1, max_waiting=2)
    stored = await hasher.hash("a-good-long-password")
    results = await asyncio.gather(
        *(hasher.verify("wrong-password-x", stored) for _ in range(6)), return_exceptions=True
    )
    hasher.close()
    assert sum(isinstance(r, RateLimited) for r in results) == 4
    assert sum(r is False for r in results) == 2


def test_concurrent_logins_all_answer(guarded: Guarded) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: guarded.login(*USER, client=f"10.2.0.{i}"), range(8)))
    assert all(r["data"]["login"]["token"] for r in results)


# -- 3. a Redis outage degrades, never breaks -----------------------------------------------


def test_redis_outage_degrades_then_recovers_and_resyncs(guarded: Guarded, tmp_path: Path) -> None:
    from app.infra.model_registry import registry_for

    server, redis = guarded.server, guarded.redis
    channel = f"{guarded.settings.redis_prefix}:model-promotions"
    wait_until(lambda: redis.client().pubsub_numsub(channel)[0][1] >= 1, "the follower subscribed")
    registry = registry_for(guarded.settings)
    folder = registry.download(RECOMMENDER, "1", tmp_path)
    run_id, source = registry.log_run(
        experiment=RECOMMENDER, params={"copy_of": 1}, metrics={}, artifacts=folder
    )
    version = registry.register(RECOMMENDER, source=source, run_id=run_id)
    token = guarded.token(*USER)

    redis.stop()
    try:
        # login keeps working, and keeps counting wrong passwords (in the process)
        assert guarded.login(*USER, client="10.3.0.1")["data"]["login"]["token"]
        for _ in range(guarded.settings.login_attempts):
            assert code(guarded.login(USER[0], "wrong-password-1", client="10.3.0.2")) == "UNAUTHENTICATED"
        assert code(guarded.login(USER[0], "wrong-password-1", client="10.3.0.2")) == "RATE_LIMITED"
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 200 and ready.json() == {
            "status": "degraded",
            "database": "ok",
            "redis": "unreachable",
        }
        assert guarded.metric("cinerec_redis_up") == 0
        assert guarded.gql("{ movie(movieId: 1) { title } }")["data"]["movie"]["title"] == "Movie 1, The"
        # another replica promotes while this one cannot hear it
        registry.set_alias(RECOMMENDER, CHAMPION, version)
    finally:
        redis.start()
    # the follower reconnects by itself and re-reads the champion it missed
    wait_until(lambda: redis.client().pubsub_numsub(channel)[0][1] >= 1, "the follower re-subscribed")

    def serves(v: str) -> bool:
        found = guarded.gql(f"{{ recommendations(userId: {USER_ID}, first: 1) {{ rank }} }}", token=token)
        return found["extensions"]["recommender"].get("version") == v

    wait_until(lambda: serves(version), "the promotion made during the outage is served")
    assert httpx.get(f"{server.url}/readyz").json()["status"] == "ready"
    assert guarded.metric("cinerec_redis_up") == 1
    registry.set_alias(RECOMMENDER, CHAMPION, "1")
    assert registry.alias_version(RECOMMENDER, CHAMPION) == "1"
    from app.infra.announcements import PROMOTIONS, publish_sync

    publish_sync(guarded.settings, PROMOTIONS, {"model": RECOMMENDER, "version": "1"})
    wait_until(lambda: serves("1"), "the announced rollback is served")


# -- 4. metrics labels stay bounded -----------------------------------------------------------


def test_client_operation_names_do_not_grow_metrics(guarded: Guarded) -> None:
    guarded.gql("query Warm { genres }")  # the series for unknown names exists from here on
    before = len(httpx.get(f"{guarded.server.url}/metrics").text)
    for i in range(300):
        guarded.gql(f"query Op{i}x{uuid.uuid4().hex} {{ genres }}", operation=None)
    text = httpx.get(f"{guarded.server.url}/metrics").text
    assert "Op0x" not in text and 'operation="other",root="genres"' in text
    assert len(text) - before < 500  # counters moved; no new series


# -- 5. no account enumeration, no lockout from elsewhere -----------------------------------


def test_an_unknown_email_costs_a_password_check_like_a_wrong_password(guarded: Guarded) -> None:
    before = guarded.metric("cinerec_password_checks_total")
    unknown = guarded.login("nobody-here@example.com", "some-password-1", client="10.4.0.1")
    after_unknown = guarded.metric("cinerec_password_checks_total")
    wrong = guarded.login(USER[0], "some-password-1", client="10.4.0.1")
    after_wrong = guarded.metric("cinerec_password_checks_total")
    assert after_unknown - before == 1 and after_wrong - after_unknown == 1
    assert unknown["errors"][0]["message"] == wrong["errors"][0]["message"] == "invalid email or password"


def test_a_stranger_cannot_lock_the_owner_out(guarded: Guarded) -> None:
    attacker, owner = "10.5.0.66", "10.5.0.7"
    for _ in range(guarded.settings.login_attempts):
        assert code(guarded.login(USER[0], "guessing-123", client=attacker)) == "UNAUTHENTICATED"
    waits = []
    for _ in range(3):
        refused = guarded.login(USER[0], "guessing-123", client=attacker)
        assert code(refused) == "RATE_LIMITED"
        waits.append(refused["errors"][0]["extensions"]["retryAfter"])
    assert waits == sorted(waits) and waits[0] < waits[-1]  # each try doubles the wait
    assert guarded.login(*USER, client=owner)["data"]["login"]["token"]


def test_concurrent_guesses_cannot_slip_past_the_limit(guarded: Guarded) -> None:
    with ThreadPoolExecutor(10) as pool:
        results = list(
            pool.map(lambda _: guarded.login(ADMIN[0], "guess-guess", client="10.6.0.1"), range(20))
        )
    codes = [code(r) for r in results]
    assert codes.count("UNAUTHENTICATED") == guarded.settings.login_attempts, results
    assert codes.count("RATE_LIMITED") == 20 - guarded.settings.login_attempts


def test_registration_is_limited_per_address(guarded: Guarded) -> None:
    client = "10.7.0.1"
    for i in range(guarded.settings.register_attempts):
        made = guarded.gql(
            REGISTER,
            {"e": f"r{i}-{uuid.uuid4().hex[:6]}@example.com", "p": "a-fine-passphrase"},
            client=client,
        )
        assert made["data"]["register"]["token"]
    refused = guarded.gql(REGISTER, {"e": "one-more@example.com", "p": "a-fine-passphrase"}, client=client)
    assert code(refused) == "RATE_LIMITED"


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("password123", "common"),
        ("qwertyuiop", "common"),
        ("          ", "whitespace"),
        ("abc\x07defgh", "control"),
    ],
)
def test_password_policy(guarded: Guarded, password: str, says: str) -> None:
    result = guarded.gql(
        REGISTER,
        {"e": f"p-{uuid.uuid4().hex[:8]}@example.com", "p": password},
        client=f"10.8.{len(password)}.{ord(says[0])}",
    )
    assert code(result) == "BAD_USER_INPUT" and says in result["errors"][0]["message"]


# -- 6. client mistakes are the client's: never INTERNAL, never 500 ---------------------------


def _cursor(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode()


PAGE_AFTER = "query($a: String) { movies(first: 2, after: $a) { edges { cursor } } }"
HOSTILE_VARIABLES = [
    pytest.param(PAGE_AFTER, {"a": _cursor("popularity:natural", 2**63, 1)}, id="cursor-2**63"),
    pytest.param(PAGE_AFTER, {"a": _cursor("popularity:natural", 1e30, 1)}, id="cursor-1e30"),
    pytest.param(
        PAGE_AFTER, {"a": base64.urlsafe_b64encode(b"[" * 50_000).decode()}, id="cursor-nested-json"
    ),
    pytest.param(
        "query($g: String) { movies(filter: {genre: $g}) { totalCount } }", {"g": "Dra\x00ma"}, id="nul-genre"
    ),
    pytest.param(
        "query($t: String) { movies(filter: {titleContains: $t}) { totalCount } }",
        {"t": "a\x00"},
        id="nul-title",
    ),
    pytest.param(LOGIN, {"e": "user\x00@example.com", "p": "whatever-123"}, id="nul-email"),
    pytest.param(REGISTER, {"e": "z@example.com", "p": "abcdefgh\x00"}, id="nul-password"),
    pytest.param(
        "query($q: String!) { searchMovies(query: $q) { score } }", {"q": "\ud800"}, id="lone-surrogate"
    ),
    pytest.param(
        "subscription { explanation(userId: 7, movieId: 1) { text } }", {}, id="subscription-over-post"
    ),
    pytest.param(
        "query A { genres } query B { movie(movieId: 1) { title } }", {}, id="two-operations-no-name"
    ),
]


@pytest.mark.parametrize(("query", "variables"), HOSTILE_VARIABLES)
def test_client_mistakes_are_bad_user_input(guarded: Guarded, query: str, variables: dict) -> None:
    body = json.dumps({"query": query, "variables": variables})  # json.dumps escapes lone surrogates
    response = httpx.post(
        f"{guarded.server.url}/graphql",
        content=body,
        headers={"content-type": "application/json", "x-forwarded-for": f"10.10.{len(body) % 250}.1"},
    )
    assert response.status_code == 200, response.text
    assert code(response.json()) == "BAD_USER_INPUT", response.text


@pytest.mark.parametrize(
    "body",
    [b"[1, 2]", b'"hello"', b"42", b"null", b'{"query": "{ genres }", "variables": ' + b"[" * 100_000 + b"}"],
    ids=["list", "string", "number", "null", "variables-100000-deep"],
)
def test_malformed_bodies_get_a_json_400(guarded: Guarded, body: bytes) -> None:
    response = httpx.post(
        f"{guarded.server.url}/graphql", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert httpx.get(f"{guarded.server.url}/healthz").status_code == 200


# -- 7. tokens follow their accounts ---------------------------------------------------------


def test_a_deleted_accounts_token_stops_working(guarded: Guarded) -> None:
    email = f"gone-{uuid.uuid4().hex[:8]}@example.com"
    token = guarded.gql(REGISTER, {"e": email, "p": "a-fine-passphrase"}, client="10.11.0.1")["data"][
        "register"
    ]["token"]
    assert guarded.gql("{ me { userId } }", token=token)["data"]["me"]["userId"] > 40
    deleted = cli(guarded.env, "users", "delete", "--email", email)
    assert deleted.returncode == 0, deleted.stderr
    wait_until(lambda: "errors" in guarded.gql("{ me { userId } }", token=token), "the deletion was heard")
    me = guarded.gql("{ me { userId } }", token=token)
    assert code(me) == "UNAUTHENTICATED" and "no longer exists" in me["errors"][0]["message"]
    rate = guarded.gql("mutation { rateMovie(movieId: 1, rating: 4) { rating } }", token=token)
    assert code(rate) == "UNAUTHENTICATED"


def test_a_demoted_admin_loses_admin_rights_at_once(guarded: Guarded) -> None:
    email = f"boss-{uuid.uuid4().hex[:8]}@example.com"
    assert (
        cli(
            guarded.env, "users", "create-admin", "--email", email, "--password", "a-fine-passphrase"
        ).returncode
        == 0
    )
    token = guarded.token(email, "a-fine-passphrase")
    versions = "{ modelVersions { version } }"
    assert "errors" not in guarded.gql(versions, token=token)
    assert cli(guarded.env, "users", "set-role", "--email", email, "--role", "user").returncode == 0
    wait_until(lambda: "errors" in guarded.gql(versions, token=token), "the demotion was heard")
    assert code(guarded.gql(versions, token=token)) == "FORBIDDEN"


# -- 8. races and edges -----------------------------------------------------------------------


def test_concurrent_first_ratings_of_one_movie_all_succeed(guarded: Guarded) -> None:
    email = f"rater-{uuid.uuid4().hex[:8]}@example.com"
    token = guarded.gql(REGISTER, {"e": email, "p": "a-fine-passphrase"}, client="10.12.0.1")["data"][
        "register"
    ]["token"]
    before = guarded.gql("{ movie(movieId: 3) { ratingsCount } }")["data"]["movie"]["ratingsCount"]
    rate = "mutation($r: Float!) { rateMovie(movieId: 3, rating: $r) { rating } }"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: guarded.gql(rate, {"r": 1 + i / 2}, token=token), range(8)))
    assert all("errors" not in r for r in results), results
    after = guarded.gql("{ movie(movieId: 3) { ratingsCount } }")["data"]["movie"]["ratingsCount"]
    assert after == before + 1


def test_rate_movie_reads_nothing_after_its_commit(guarded: Guarded) -> None:
    """The answer is what was committed: a failed read after the commit cannot turn a saved
    rating into an error. A listener fails any statement on the connection after COMMIT."""
    engine = guarded.server.app.state.cinerec.engine.sync_engine
    committed: set[int] = set()

    def on_commit(conn):
        committed.add(id(conn.connection.dbapi_connection))

    def on_begin(conn):
        committed.discard(id(conn.connection.dbapi_connection))

    def before(conn, cursor, statement, *args):
        if id(conn.connection.dbapi_connection) in committed and "ratings" in statement:
            raise RuntimeError("read after commit")

    event.listen(engine, "commit", on_commit)
    event.listen(engine, "begin", on_begin)
    event.listen(engine, "before_cursor_execute", before)
    try:
        token = guarded.token(*USER)
        result = guarded.gql(
            "mutation { rateMovie(movieId: 5, rating: 3.5) { rating movieId } }", token=token
        )
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "begin", on_begin)
        event.remove(engine, "commit", on_commit)
    assert result["data"]["rateMovie"] == {"rating": 3.5, "movieId": 5}


def test_a_permission_refusal_does_not_leak_into_the_next_request(guarded: Guarded) -> None:
    bad = guarded.gql("{ me { userId } }", token="not-a-token")
    assert bad["errors"][0]["message"] == "invalid token"
    anonymous = guarded.gql("{ me { userId } }")
    assert anonymous["errors"][0]["message"].startswith("authentication required")


def test_a_normal_websocket_disconnect_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    from starlette.websockets import WebSocketDisconnect
    from strawberry.http.exceptions import WebSocketDisconnected

    from app.server.websockets import AuthenticatedTransportWS

    handler = object.__new__(AuthenticatedTransportWS)
    with caplog.at_level("DEBUG"):
        for error in (WebSocketDisconnected(), WebSocketDisconnect(1000)):
            asyncio.run(handler.handle_task_exception(error))
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_sigterm_ends_the_server_even_with_a_request_hanging(tmp_path: Path) -> None:
    """A client that never finishes its request (slow loris) cannot hold a shutdown forever."""
    port = _free_port()
    env = {
        **os.environ,
        "CINEREC_HOME": str(tmp_path),
        "CINEREC_ENV": "test",
        "CINEREC_LLM_BACKEND": "none",
        "CINEREC_CACHE_WARM_MOVIES": "0",
        "CINEREC_SHUTDOWN_TIMEOUT_SECONDS": "2",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--no-access-log"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _answers(port), "the server started", seconds=120)
        loris = socket.create_connection(("127.0.0.1", port))
        loris.sendall(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        wait_until(lambda: _answers(port), "the request is in flight")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)  # before: waited for the loris as long as it stayed
        loris.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode is not None


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# -- production defaults -----------------------------------------------------------------------


def test_production_closes_introspection_graphiql_and_metrics(
    databases: Databases, server_factory: Callable[..., LiveServer]
) -> None:
    settings = databases.settings(
        "sqlite", env="production", jwt_secret="x" * 48, llm_backend="none", cache_warm_movies=0
    )
    server = server_factory(settings)
    introspection = server.gql("{ __schema { types { name } } }")
    assert (
        code(introspection) == "BAD_USER_INPUT" and "introspection" in introspection["errors"][0]["message"]
    )
    assert httpx.get(f"{server.url}/graphql", headers={"accept": "text/html"}).status_code in (400, 404)
    assert httpx.get(f"{server.url}/metrics").status_code == 403
    locked = databases.settings(
        "sqlite",
        env="production",
        jwt_secret="y" * 48,
        llm_backend="none",
        cache_warm_movies=0,
        metrics_token="m" * 24,
    )
    with_token = server_factory(locked)
    assert httpx.get(f"{with_token.url}/metrics").status_code == 401
    ok = httpx.get(f"{with_token.url}/metrics", headers={"authorization": "Bearer " + "m" * 24})
    assert ok.status_code == 200 and "cinerec_graphql_requests_total" in ok.text
