"""What operators must trust, through two real servers (uvicorn) on one copy of the trained
ML-100K home sharing PostgreSQL and Redis: service API keys (shown once, stored hashed,
scoped, priced, counted by name, revoked everywhere at once), the audit log (every admin
mutation, key and erasure; paged; hash-chained and checked by `cinerec audit verify`), and a
person's data exported and erased."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import Databases, LiveServer, TrainedHome, answer, cli, settings_env
from tests.e2e.conftest import ADMIN, LOGIN, REGISTER, USER, add_logins, code


@dataclass
class House:
    a: LiveServer
    b: LiveServer
    admin: str
    user: str  # MovieLens user 1
    env: dict[str, str]
    database_url: str


@pytest.fixture(scope="module")
def house(
    databases: Databases, module_server_factory: Callable[..., LiveServer], ml100k_trained: TrainedHome
) -> House:
    settings = databases.copy(ml100k_trained, redis_url="redis://127.0.0.1:6379/0", llm_backend="none")
    add_logins(settings, user_id=1)
    a = module_server_factory(settings)
    b = module_server_factory(settings.model_copy())
    admin = a.gql(LOGIN, {"e": ADMIN[0], "p": ADMIN[1]})["data"]["login"]["token"]
    user = a.gql(LOGIN, {"e": USER[0], "p": USER[1]})["data"]["login"]["token"]
    return House(a, b, admin, user, settings_env(settings), settings.database_url)


def with_key(server: LiveServer, query: str, key: str, variables: dict | None = None) -> dict:
    response = httpx.post(
        f"{server.url}/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"authorization": f"ApiKey {key}"},
        timeout=60,
    )
    return answer(response)


def sql(house: House, statement: str, **params: Any) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_async_engine(house.database_url)
        try:
            async with engine.begin() as connection:
                result = await connection.execute(text(statement), params)
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(run())


CREATE = """mutation($n: String!, $s: ApiKeyScope!) {
  createApiKey(name: $n, scope: $s) { key apiKey { name scope prefix createdBy revokedAt } } }"""
REVOKE = "mutation($n: String!) { revokeApiKey(name: $n) { name revokedAt } }"
AUDIT = """query($first: Int!, $after: String, $action: String) {
  auditLog(first: $first, after: $after, action: $action) {
    edges { cursor node { id at actor action arguments client result hash } }
    pageInfo { hasNextPage } totalCount } }"""


def make_key(house: House, scope: str) -> tuple[str, str]:
    name = f"svc-{scope.lower()}-{uuid.uuid4().hex[:6]}"
    made = house.a.gql(CREATE, {"n": name, "s": scope}, token=house.admin)
    assert "errors" not in made, made
    return name, made["data"]["createApiKey"]["key"]


def test_an_api_key_is_shown_once_stored_hashed_and_acts_within_its_scope(house: House) -> None:
    name, key = make_key(house, "CATALOG")
    listed = house.a.gql("{ apiKeys { name scope prefix createdBy revokedAt } }", token=house.admin)
    mine = next(k for k in listed["data"]["apiKeys"] if k["name"] == name)
    assert mine["scope"] == "CATALOG" and mine["revokedAt"] is None
    assert key.startswith(f"ck_{mine['prefix']}_") and mine["createdBy"].startswith("account:")
    # stored: its hash, never the key or its secret part
    (row,) = sql(house, "SELECT * FROM api_keys WHERE name = :n", n=name)
    assert row.secret_hash == hashlib.sha256(key.encode()).hexdigest()
    assert not any(key.split("_", 2)[2] in str(value) for value in row)
    assert key not in str(listed)

    # a catalog key reads the catalog; it is nobody, so nobody's data and no one's ratings
    assert with_key(house.a, "{ movie(movieId: 1) { title } }", key)["data"]["movie"]["title"]
    assert code(with_key(house.a, "{ user(userId: 1) { userId } }", key)) == "FORBIDDEN"
    assert code(with_key(house.a, "{ me { userId } }", key)) == "FORBIDDEN"
    rated = with_key(house.a, "mutation { rateMovie(movieId: 1, rating: 4) { rating } }", key)
    assert code(rated) == "FORBIDDEN"
    assert code(with_key(house.a, "{ apiKeys { name } }", key)) == "FORBIDDEN"

    # a recommending key reads any user's recommendations, and still is no user
    _, recommending = make_key(house, "RECOMMEND")
    recs = with_key(house.a, "{ recommendations(userId: 1, first: 3) { movie { movieId } } }", recommending)
    assert len(recs["data"]["recommendations"]) == 3, recs
    assert code(with_key(house.a, "{ me { userId } }", recommending)) == "FORBIDDEN"
    assert code(with_key(house.a, "{ modelVersions { version } }", recommending)) == "FORBIDDEN"

    # an admin key does what an admin does, and makes keys of its own
    _, admin_key = make_key(house, "ADMIN")
    assert with_key(house.a, "{ modelVersions { version } }", admin_key)["data"]["modelVersions"]
    child = with_key(house.a, CREATE, admin_key, {"n": f"child-{uuid.uuid4().hex[:6]}", "s": "CATALOG"})
    assert child["data"]["createApiKey"]["apiKey"]["createdBy"].startswith("key:svc-admin-"), child

    # wrong, forged and malformed keys: refused where a caller must be known (the public
    # catalog answers them as anyone, as it does a bad token)
    for bad in (recommending[:-4] + "AAAA", f"ck_{'0' * 12}_{key.split('_', 2)[2]}", "ck_short", "not-a-key"):
        refused = with_key(house.a, "{ user(userId: 1) { userId } }", bad)
        assert code(refused) == "UNAUTHENTICATED", bad
        assert "revoked API key" in refused["errors"][0]["message"] or bad in ("ck_short", "not-a-key")
    # a person's token cannot make keys, and a name is made once
    assert code(house.a.gql(CREATE, {"n": "by-a-user", "s": "ADMIN"}, token=house.user)) == "FORBIDDEN"
    again = house.a.gql(CREATE, {"n": name, "s": "CATALOG"}, token=house.admin)
    assert code(again) == "BAD_USER_INPUT"
    assert (
        code(house.a.gql(CREATE, {"n": "Bad Name!", "s": "CATALOG"}, token=house.admin)) == "BAD_USER_INPUT"
    )


async def _key_socket_closes(url: str, key: str, revoke: Callable[[], None]) -> tuple[dict, int | None]:
    """A socket opened with the key (its `connection_init` carries `ApiKey <key>`) answers a
    query, then the key is revoked elsewhere: the code it is closed with."""
    import json

    import websockets

    from tests.e2e.test_security_round2 import ws_close_code, ws_run, ws_url

    async with websockets.connect(ws_url(url), subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"ApiKey {key}"}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "connection_ack"
        answered = await ws_run(ws, "{ user(userId: 1) { userId } }")
        await asyncio.get_running_loop().run_in_executor(None, revoke)
        return answered, await ws_close_code(ws)


def test_a_revoked_key_fails_on_its_next_request_on_every_replica(house: House) -> None:
    name, key = make_key(house, "RECOMMEND")
    query = "{ recommendations(userId: 1, first: 1) { movie { movieId } } }"
    for server in (house.a, house.b):  # each replica has served it
        assert "errors" not in with_key(server, query, key)
    # revoked on replica B while the key holds a socket on replica A: the socket closes too

    def revoke() -> None:
        revoked = house.b.gql(REVOKE, {"n": name}, token=house.admin)
        assert revoked["data"]["revokeApiKey"]["revokedAt"] is not None

    answered, closed = asyncio.run(_key_socket_closes(house.a.url, key, revoke))
    assert answered["data"]["user"]["userId"] == 1 and closed == 4401
    for server in (house.a, house.b):  # the very next request, on either
        refused = with_key(server, query, key)
        assert code(refused) == "UNAUTHENTICATED" and "revoked" in refused["errors"][0]["message"]
    assert code(house.a.gql(REVOKE, {"n": "no-such-key"}, token=house.admin)) == "NOT_FOUND"


def test_a_key_draws_on_its_own_bucket_and_is_counted_by_name_never_by_secret(house: House) -> None:
    one_name, one = make_key(house, "CATALOG")
    _, other = make_key(house, "CATALOG")
    bucket = "{ rateLimit { cost remaining limit } movies(first: 5) { edges { node { movieId } } } }"
    # a heavy draw first: the bucket refills (200 points a second) far slower than it was drawn,
    # so what follows does not depend on how fast the machine answers
    pages = " ".join(
        f"p{i}: movies(first: 100) {{ edges {{ node {{ movieId tags(first: 20) }} }} }}" for i in range(20)
    )
    heavy = f"{{ rateLimit {{ cost }} {pages} }}"
    drawn = with_key(house.a, heavy, one)["data"]["rateLimit"]["cost"]
    assert drawn >= 1000, drawn
    first = with_key(house.a, bucket, one)["data"]["rateLimit"]
    fresh = with_key(house.a, bucket, other)["data"]["rateLimit"]
    assert fresh["remaining"] == fresh["limit"] - fresh["cost"]  # the other key's is its own, full
    assert first["remaining"] < fresh["remaining"]  # one bucket, drawn on twice
    assert first["limit"] == house.a.settings.rate_user_capacity  # priced like a user
    metrics = httpx.get(f"{house.a.url}/metrics").text
    lines = [x for x in metrics.splitlines() if x.startswith("cinerec_api_key_operations_total")]
    assert any(f'key="{one_name}"' in x and 'status="ok"' in x and x.endswith(" 2.0") for x in lines), lines
    assert one.split("_", 2)[2] not in metrics and other.split("_", 2)[2] not in metrics


def audit_lines(house: House, first: int = 50, action: str | None = None) -> list[dict]:
    found = house.a.gql(AUDIT, {"first": first, "action": action}, token=house.admin)
    assert "errors" not in found, found
    return [e["node"] for e in found["data"]["auditLog"]["edges"]]


def test_every_admin_mutation_is_in_the_audit_log_with_who_what_where_and_how_it_ended(house: House) -> None:
    name, _ = make_key(house, "CATALOG")
    house.b.gql(REVOKE, {"n": name}, token=house.admin)
    # a refused attempt is a line too: a user tries to promote; an admin names a missing version
    assert code(house.a.gql('mutation { promoteModel(version: "1") { version } }', token=house.user)) == (
        "FORBIDDEN"
    )
    missing = house.a.gql(
        'mutation { promoteModel(version: "99", alias: "challenger") { version } }', token=house.admin
    )
    assert code(missing) == "NOT_FOUND"
    lines = audit_lines(house)
    made = next(x for x in lines if x["action"] == "createApiKey" and x["arguments"].get("name") == name)
    assert made["actor"].startswith("account:") and made["result"] == "ok"
    assert made["arguments"] == {"name": name, "scope": "catalog"} and made["client"] == "127.0.0.1"
    assert next(x for x in lines if x["action"] == "revokeApiKey" and x["arguments"] == {"name": name})
    user_try = next(x for x in lines if x["action"] == "promoteModel" and x["result"] == "FORBIDDEN")
    assert user_try["actor"].endswith("/user:1")
    admin_try = next(x for x in lines if x["action"] == "promoteModel" and x["result"] == "NOT_FOUND")
    assert admin_try["arguments"] == {"version": "99", "alias": "challenger", "model": "recommender"}
    # newest first, ids one apart, each hash distinct
    ids = [x["id"] for x in lines]
    assert ids == sorted(ids, reverse=True) and ids == list(range(ids[0], ids[0] - len(ids), -1))
    # a normal user's own mutations are theirs, not the log's; nor may they read it
    house.a.gql("mutation { rateMovie(movieId: 2, rating: 3) { rating } }", token=house.user)
    assert not [x for x in audit_lines(house) if x["action"] == "rateMovie"]
    assert code(house.a.gql(AUDIT, {"first": 5}, token=house.user)) == "FORBIDDEN"


def test_the_audit_log_pages_newest_first(house: House) -> None:
    for _ in range(3):
        make_key(house, "CATALOG")
    page = house.a.gql(AUDIT, {"first": 2, "action": "createApiKey"}, token=house.admin)["data"]["auditLog"]
    assert page["pageInfo"]["hasNextPage"] and page["totalCount"] >= 3
    after = page["edges"][-1]["cursor"]
    nxt = house.a.gql(AUDIT, {"first": 2, "after": after, "action": "createApiKey"}, token=house.admin)
    first_ids = [e["node"]["id"] for e in page["edges"]]
    next_ids = [e["node"]["id"] for e in nxt["data"]["auditLog"]["edges"]]
    assert next_ids and max(next_ids) < min(first_ids)
    assert code(house.a.gql(AUDIT, {"first": 2, "after": "forged"}, token=house.admin)) == "BAD_USER_INPUT"
    assert code(house.a.gql(AUDIT, {"first": 1000}, token=house.admin)) == "BAD_USER_INPUT"


def test_cinerec_audit_verify_finds_an_edited_or_deleted_line(house: House) -> None:
    for _ in range(2):
        make_key(house, "CATALOG")
    intact = cli(house.env, "audit", "verify")
    assert intact.returncode == 0, intact.stderr
    assert "audit log intact" in intact.stdout
    (count,) = sql(house, "SELECT count(*) FROM audit_log")
    assert f"{count[0]} lines" in intact.stdout
    # append-only in the database itself
    with pytest.raises(Exception, match="append-only"):
        sql(house, "UPDATE audit_log SET result = 'ok' WHERE entry_id = 2")
    # someone who can turn the trigger off edits a line, then deletes one: both are found
    (row,) = sql(house, "SELECT arguments FROM audit_log WHERE entry_id = 2")
    tamper(house, 'UPDATE audit_log SET arguments = \'{"name": "x"}\' WHERE entry_id = 2')
    edited = cli(house.env, "audit", "verify")
    assert edited.returncode == 1, edited.stdout
    assert "broken at line 2: its fields were changed" in edited.stderr, edited.stderr
    tamper(house, "UPDATE audit_log SET arguments = :a WHERE entry_id = 2", a=row.arguments)
    assert cli(house.env, "audit", "verify").returncode == 0  # put back as it was: whole again
    tamper(house, "DELETE FROM audit_log WHERE entry_id = 3")
    deleted = cli(house.env, "audit", "verify")
    assert deleted.returncode == 1 and "line 3 is deleted" in deleted.stderr, deleted.stderr


def tamper(house: House, statement: str, **params: Any) -> None:
    """A change made past the append-only trigger, as a database owner could."""

    async def run() -> None:
        engine = create_async_engine(house.database_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
                await connection.execute(text(statement), params)
                await connection.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
        finally:
            await engine.dispose()

    asyncio.run(run())


def register(house: House, server: LiveServer | None = None) -> tuple[str, str, str, int]:
    email, password = f"person-{uuid.uuid4().hex[:8]}@example.com", "a-private-passphrase"
    made = (server or house.a).gql(REGISTER, {"e": email, "p": password})["data"]["register"]
    return email, password, made["token"], made["user"]["userId"]


EXPORT = "{ exportMyData }"
RECS = "query($u: Int!) { recommendations(userId: $u, first: 3) { id movie { movieId } } }"


@pytest.fixture(scope="module")
def experiment(house: House) -> str:
    """An experiment between the champion and a challenger (the same version): impressions."""
    promoted = house.a.gql(
        'mutation { promoteModel(version: "1", alias: "challenger") { version } }', token=house.admin
    )
    assert "errors" not in promoted, promoted
    name = f"privacy-{uuid.uuid4().hex[:6]}"
    arms = [{"alias": "champion", "weight": 1}, {"alias": "challenger", "weight": 1}]
    started = house.a.gql(
        "mutation($n: String!, $a: [ExperimentArmInput!]!) { startExperiment(name: $n, arms: $a) { name } }",
        {"n": name, "a": arms},
        token=house.admin,
    )
    assert "errors" not in started, started
    return name


def act(house: House, token: str, user_id: int, experiment: str) -> list[int]:
    """What a person leaves behind: ratings, a dismissal, a list shown in an experiment, a click."""
    for movie, rating in ((1, 4.5), (50, 3), (1450, 5)):
        assert "errors" not in house.a.gql(
            f"mutation {{ rateMovie(movieId: {movie}, rating: {rating}) {{ rating }} }}", token=token
        )
    assert house.a.gql("mutation { dismissMovie(movieId: 181) }", token=token)["data"]["dismissMovie"]
    shown = house.a.gql(RECS, {"u": user_id}, token=token)["data"]["recommendations"]
    clicked = house.a.gql(
        "mutation($r: ID!) { recordClick(recommendationId: $r) }", {"r": shown[0]["id"]}, token=token
    )
    assert clicked["data"]["recordClick"] is True, clicked
    # the report writes the impressions buffered so far
    report = house.a.gql(
        "query($n: String!) { experiment(name: $n) { name } }", {"n": experiment}, token=house.admin
    )
    assert "errors" not in report, report
    return [s["movie"]["movieId"] for s in shown]


def test_export_my_data_holds_everything_held_about_the_caller(house: House, experiment: str) -> None:
    email, _, token, user_id = register(house)
    shown = act(house, token, user_id, experiment)
    data = house.a.gql(EXPORT, token=token)["data"]["exportMyData"]
    assert data["account"]["email"] == email and data["account"]["role"] == "user"
    assert data["user"]["userId"] == user_id
    assert sorted((r["movieId"], r["rating"]) for r in data["ratings"]) == [(1, 4.5), (50, 3.0), (1450, 5.0)]
    assert [d["movieId"] for d in data["dismissals"]] == [181]
    assert [c["movieId"] for c in data["clicks"]] == [shown[0]]
    assert sorted(i["movieId"] for i in data["impressions"]) == sorted(shown)
    arms = {a["experiment"]: a for a in data["experimentArms"]}
    assert arms[experiment]["arm"] in ("champion", "challenger") and arms[experiment]["active"] is True
    assert {i["arm"] for i in data["impressions"]} == {arms[experiment]["arm"]}
    assert "password" not in str(data).lower()  # not even its hash
    # nothing of anyone else's, and only for a person: a key has no data of its own
    assert "user@example.com" not in str(data)
    _, key = make_key(house, "ADMIN")
    assert code(with_key(house.a, EXPORT, key)) == "FORBIDDEN"
    assert code(house.a.gql(EXPORT)) == "UNAUTHENTICATED"


def held(house: House, user_id: int) -> dict[str, int]:
    tables = (
        "ratings",
        "tags",
        "dismissals",
        "deleted_ratings",
        "clicks",
        "impressions",
        "accounts",
        "users",
    )
    return {t: sql(house, f"SELECT count(*) FROM {t} WHERE user_id = :u", u=user_id)[0][0] for t in tables}


async def _socket_closes(url: str, token: str, erase: Callable[[], None]) -> int | None:
    from tests.e2e.test_security_round2 import ws_close_code, ws_open

    async with ws_open(url, token) as ws:
        await asyncio.get_running_loop().run_in_executor(None, erase)
        return await ws_close_code(ws)


def test_an_erased_account_leaves_nothing_and_its_id_is_never_given_again(
    house: House, experiment: str
) -> None:
    email, password, token, user_id = register(house)
    act(house, token, user_id, experiment)
    before = held(house, user_id)
    assert all(
        before[t] >= 1 for t in ("ratings", "dismissals", "clicks", "impressions", "accounts", "users")
    )
    stats = "{ movie(movieId: 1450) { ratingsCount averageRating } }"
    rated = house.a.gql(stats)["data"]["movie"]

    # a wrong password changes nothing, and does not end the session
    wrong = house.a.gql('mutation { deleteMyAccount(password: "not-my-passphrase") }', token=token)
    assert code(wrong) == "BAD_USER_INPUT" and held(house, user_id) == before
    assert house.a.gql("{ me { userId } }", token=token)["data"]["me"]["userId"] == user_id

    # erased on replica A while a socket is open on replica B: it closes
    def erase() -> None:
        done = house.a.gql(
            "mutation($p: String!) { deleteMyAccount(password: $p) }", {"p": password}, token=token
        )
        assert done["data"]["deleteMyAccount"] is True, done

    closed = asyncio.run(_socket_closes(house.b.url, token, erase))
    assert closed == 4401
    assert all(n == 0 for n in held(house, user_id).values()), held(house, user_id)
    for server in (house.a, house.b):
        assert code(server.gql("{ me { userId } }", token=token)) == "UNAUTHENTICATED"
    assert code(house.a.gql(LOGIN, {"e": email, "p": password})) == "UNAUTHENTICATED"
    # the movie's statistics no longer count the rating, on either replica
    after = house.b.gql(stats)["data"]["movie"]
    assert after["ratingsCount"] == rated["ratingsCount"] - 1
    assert code(house.a.gql(RECS, {"u": user_id}, token=house.admin)) == "NOT_FOUND"
    # the next training reads no rating of theirs
    from app.infra.database import create_engine as engine_for
    from app.infra.settings import Settings
    from app.services.training_data import load_train_data

    async def training_users() -> set[int]:
        engine = engine_for(Settings(database_url=house.database_url, env="test"))
        try:
            return set((await load_train_data(engine=engine)).ratings["user_id"].unique())
        finally:
            await engine.dispose()

    readers = asyncio.run(training_users())
    assert user_id not in readers and 1 in readers
    # the id is never given again, even though it was the highest
    assert register(house)[3] > user_id
    # the audit log keeps a pseudonymous line: no id, no email, no password
    (line,) = [x for x in audit_lines(house, action="deleteMyAccount") if x["result"] == "ok"][:1]
    assert line["actor"].startswith("erased:") and line["arguments"] == {"password": "[secret]"}
    stored = sql(house, "SELECT actor, arguments FROM audit_log WHERE action = 'deleteMyAccount'")
    # every line of the erasure, the refused attempt's too, names the pseudonym alone (its hex
    # digits may spell the id by chance: that is no leak, and no test of one)
    assert len(stored) >= 2 and all(re.fullmatch(r"erased:[0-9a-f]{20}", actor) for actor, _ in stored)
    assert not any(email in str(arguments) or password in str(arguments) for _, arguments in stored)


def test_an_admin_erases_a_users_account_and_the_log_names_only_a_pseudonym(house: House) -> None:
    _, _, token, user_id = register(house)
    assert "errors" not in house.a.gql(
        "mutation { rateMovie(movieId: 7, rating: 2) { rating } }", token=token
    )
    refused = house.a.gql(f"mutation {{ deleteAccount(userId: {user_id}) }}", token=house.user)
    assert code(refused) == "FORBIDDEN" and held(house, user_id)["ratings"] == 1
    erased = house.a.gql(f"mutation {{ deleteAccount(userId: {user_id}) }}", token=house.admin)
    pseudonym = erased["data"]["deleteAccount"]
    assert pseudonym.startswith("erased:") and all(n == 0 for n in held(house, user_id).values())
    assert code(house.b.gql("{ me { userId } }", token=token)) == "UNAUTHENTICATED"
    line = next(x for x in audit_lines(house, action="deleteAccount") if x["result"] == "ok")
    assert line["arguments"] == {"userId": pseudonym} and line["actor"].startswith("account:")
    assert (
        code(house.a.gql(f"mutation {{ deleteAccount(userId: {user_id}) }}", token=house.admin))
        == "NOT_FOUND"
    )
