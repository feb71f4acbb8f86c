"""The third security review's findings (issue 32), each answered over a real server.

The deep-page and feedback findings need the real MovieLens 100K (`recommender`: 1,682
movies, pages 1,000 deep); the rest run on the `guarded` server (PostgreSQL, a private
redis-server, X-Forwarded-For trusted so that each test speaks from its own address).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import asyncpg
import httpx
import pytest
import websockets

from app.serving.pipeline import RecRequest
from app.serving.tokens import Signer
from tests.e2e.conftest import ADMIN, USER, Guarded, Recommender, code

RECS = "recommendations(userId: {u}, first: 100, diversity: {d}, after: {a}) {{ rank }}"


def _pg_url(settings: object) -> str:
    return str(settings.database_url).replace("postgresql+asyncpg", "postgresql")  # type: ignore[attr-defined]


def _pg_rows(settings: object, sql: str, *args: object) -> list:
    async def run() -> list:
        conn = await asyncpg.connect(_pg_url(settings))
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


# -- high: one request stalls every other ----------------------------------------------------------


def _deep_cursor(rec: Recommender, user: int, diversity: float, rank: int) -> str:
    """A cursor after ``rank`` of a list, as the server signs one (a client gets the same by
    paging there)."""
    signer = Signer(rec.settings.signing_secret(), "recommendation-cursor")  # type: ignore[attr-defined]
    list_key = RecRequest(user, 100, True, diversity=diversity).list_key
    return signer.sign(["c", user, "1", list_key, rank])


def _deep_aliases(rec: Recommender, count: int) -> str:
    fields = []
    for n in range(count):
        diversity = round(0.9 - n * 0.01, 2)
        after = json.dumps(_deep_cursor(rec, 1, diversity, 900))
        fields.append(f"a{n}: " + RECS.format(u=1, d=diversity, a=after))
    return "{ " + " ".join(fields) + " }"


def test_a_page_is_priced_by_its_depth_and_diversity(recommender: Recommender) -> None:
    gql, token = recommender.server.gql, recommender.user_token

    def price(diversity: float, after: str | None) -> int:
        field = RECS.format(u=1, d=diversity, a=json.dumps(after) if after else "null")
        answer = gql(f"{{ {field} }}", token=token)
        assert "errors" not in answer, answer
        return int(answer["extensions"]["cost"]["requested"])

    first = price(0.0, None)
    deep = price(0.0, _deep_cursor(recommender, 1, 0.0, 900))
    deep_diverse = price(0.9, _deep_cursor(recommender, 1, 0.9, 900))
    assert first == 10 + 100  # scoring, 100 items
    assert deep == 10 + 100 + 9  # 900 ranks skipped
    assert deep_diverse == deep + 200  # MMR over a pool of 3,000 for 1,000 picks


def test_the_most_expensive_recommendations_request_leaves_healthz_answering(
    recommender: Recommender,
) -> None:
    """As many deep, diversified pages as one request may hold (its price under the limit):
    /healthz keeps answering while it runs. Before: 45 such aliases priced 4,950 held the
    event loop, and /healthz waited 1.9 s behind them."""
    url, token = recommender.server.url, recommender.user_token
    one = recommender.server.gql(_deep_aliases(recommender, 1), token=token)
    assert "errors" not in one, one
    per_alias = int(one["extensions"]["cost"]["requested"])
    count = min(5000 // per_alias, 64)
    document = _deep_aliases(recommender, count)
    latencies: list[float] = []
    answered: dict = {}

    def heavy() -> None:
        response = httpx.post(
            f"{url}/graphql",
            json={"query": document},
            headers={"authorization": f"Bearer {token}"},
            timeout=120,
        )
        answered.update(response.json())

    worker = threading.Thread(target=heavy)
    with httpx.Client(base_url=url, timeout=60) as health:
        health.get("/healthz")  # a kept-alive connection: only the server's time is measured
        worker.start()
        while worker.is_alive():
            started = time.perf_counter()
            assert health.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
    worker.join()
    assert "errors" not in answered, answered.get("errors")
    assert len(answered["data"]) == count and all(len(v) == 100 for v in answered["data"].values())
    assert len(latencies) >= 3, latencies
    assert max(latencies) < 0.5, latencies


# -- medium: the app's HTML without its headers -----------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/client/index.html", "/client/graphiql.html", "/graphql"])
def test_every_html_response_carries_the_pages_headers(guarded: Guarded, path: str) -> None:
    response = httpx.get(f"{guarded.server.url}{path}", headers={"accept": "text/html"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_graphiql_files_are_not_served_where_graphiql_is_off(databases, server_factory) -> None:
    settings = databases.settings("sqlite", llm_backend="none", cache_warm_movies=0, graphiql=False)
    server = server_factory(settings)
    for path in ("/client/graphiql.html", "/client/graphiql.js", "/client/graphiql.css"):
        assert httpx.get(f"{server.url}{path}").status_code == 404, path
    assert httpx.get(f"{server.url}/client/index.html").status_code == 200


# -- medium: client input that reached INTERNAL ---------------------------------------------------

HUGE = "9" * 5000


@pytest.mark.parametrize(
    "query",
    [
        f"{{ movie(movieId: {HUGE}) {{ title }} }}",
        f"{{ movies(first: 1, filter: {{ yearFrom: {HUGE} }}) {{ totalCount }} }}",
        f"{{ movies(first: {HUGE}) {{ totalCount }} }}",
        "{ recommendations(userId: 7, first: 1, diversity: 1e400) { rank } }",
        f"{{ recommendations(userId: 7, first: 1, diversity: {HUGE}.5) {{ rank }} }}",
        '{ recommendations(userId: 7, first: 1, after: "abc.\u00e9") { rank } }',
        '{ recommendations(userId: 7, first: 1, after: "\u00e9\u00e9\u00e9") { rank } }',
    ],
)
def test_document_literals_and_odd_cursors_are_the_clients_mistake(guarded: Guarded, query: str) -> None:
    token = guarded.token(*USER)
    answer = guarded.gql(query, token=token, client=f"10.77.{uuid.uuid4().int % 250}.1")
    assert code(answer) == "BAD_USER_INPUT", answer
    assert len(answer["errors"][0]["message"]) < 300  # the literal is not quoted back whole


def test_a_huge_literal_over_get_is_the_clients_mistake(guarded: Guarded) -> None:
    response = httpx.get(
        f"{guarded.server.url}/graphql",
        params={"query": f"{{ movie(movieId: {HUGE}) {{ title }} }}"},
        headers={"x-forwarded-for": "10.78.0.1"},
    )
    assert code(response.json()) == "BAD_USER_INPUT", response.text


def test_a_non_ascii_recommendation_id_is_refused_as_input(guarded: Guarded) -> None:
    answer = guarded.gql(
        'mutation { recordClick(recommendationId: "abc.\u00e9") }',
        token=guarded.token(*USER),
        client="10.79.0.1",
    )
    assert (
        code(answer) == "BAD_USER_INPUT" and answer["errors"][0]["extensions"]["field"] == "recommendationId"
    )


@pytest.mark.parametrize("alias", ["a b", "x" * 300, "\u00e9t\u00e9", "latest", "v3"])
def test_a_bad_alias_is_refused_with_what_an_alias_is(guarded: Guarded, alias: str) -> None:
    admin = guarded.token(*ADMIN)
    for mutation in (
        'mutation($a: String!) { promoteModel(version: "1", alias: $a) { version } }',
        "mutation($a: String!) { rollbackModel(alias: $a) { version } }",
    ):
        answer = guarded.gql(mutation, {"a": alias}, token=admin, client="10.80.0.1")
        assert code(answer) == "BAD_USER_INPUT", answer
        assert "an alias is 1 to 64 ASCII letters" in answer["errors"][0]["message"]
    bad_version = guarded.gql(
        'mutation { promoteModel(version: "\u0663", alias: "x") { version } }',
        token=admin,
        client="10.80.0.2",
    )
    assert code(bad_version) == "BAD_USER_INPUT"


# -- medium: feedback that counted many times ---------------------------------------------------------

LIST = """query($f: RecommendationFilter) {
  recommendations(userId: 1, first: 5, filter: $f) { id rank movie { movieId } }
}"""
HOME = "{ homePage(userId: 1) { rows { items(first: 20) { id movie { movieId } } } } }"
CLICK = "mutation($r: ID!) { recordClick(recommendationId: $r) }"


def test_feedback_counts_once_per_shown_movie(recommender: Recommender) -> None:
    """Asking again, or for the same movie at another rank, is no new impression or click;
    a home page's items are impressions of the user's arm like any list's."""
    gql, admin, token = recommender.server.gql, recommender.admin_token, recommender.user_token
    name = f"once-{uuid.uuid4().hex[:6]}"
    assert "errors" not in gql(
        'mutation { promoteModel(version: "1", alias: "twin3") { version } }', token=admin
    )
    started = gql(
        f'mutation {{ startExperiment(name: "{name}", arms: [{{alias: "champion", weight: 1}}, '
        '{alias: "twin3", weight: 1}]) { name } }',
        token=admin,
    )
    assert "errors" not in started, started
    try:
        first = gql(LIST, token=token)
        for _ in range(3):  # the same list again (answered from the cache after the first)
            assert gql(LIST, token=token)["data"] == first["data"]
        shown = first["data"]["recommendations"]
        home = gql(HOME, token=token)
        assert home["extensions"]["recommender"]["experiment"] == name
        assert home["extensions"]["recommender"]["arm"] == first["extensions"]["recommender"]["arm"]
        home_movies = {i["movie"]["movieId"] for r in home["data"]["homePage"]["rows"] for i in r["items"]}
        # the second movie, shown at rank 2, and again at rank 1 once the first is excluded
        moved = gql(LIST, {"f": {"excludeMovieIds": [shown[0]["movie"]["movieId"]]}}, token=token)
        again = moved["data"]["recommendations"][0]
        assert again["movie"] == shown[1]["movie"] and again["id"] != shown[1]["id"]
        assert gql(CLICK, {"r": shown[1]["id"]}, token=token)["data"]["recordClick"] is True
        assert gql(CLICK, {"r": again["id"]}, token=token)["data"]["recordClick"] is False
        home_item = home["data"]["homePage"]["rows"][0]["items"][0]
        assert gql(CLICK, {"r": home_item["id"]}, token=token)["data"]["recordClick"] in (True, False)

        report = gql(
            f'{{ experiment(name: "{name}") {{ arms {{ alias users impressions clicks }} }} }}', token=admin
        )["data"]["experiment"]  # the report writes the buffered impressions first
        arm = next(a for a in report["arms"] if a["users"])
        pairs = (
            {s["movie"]["movieId"] for s in shown}
            | home_movies
            | {moved["data"]["recommendations"][-1]["movie"]["movieId"]}
        )
        assert arm["impressions"] == len(pairs)
        rows = _pg_rows(
            recommender.settings, "SELECT count(*) AS n FROM impressions WHERE experiment = $1", name
        )
        assert rows[0]["n"] == len(pairs)  # one row per shown movie, however often shown
        clicked = 1 + (home_item["movie"]["movieId"] != shown[1]["movie"]["movieId"])
        assert arm["clicks"] == clicked
    finally:
        gql(f'mutation {{ stopExperiment(name: "{name}") {{ active }} }}', token=admin)
        from app.infra.model_registry import registry_for
        from ml.registry import RECOMMENDER

        registry_for(recommender.settings).client.delete_registered_model_alias(RECOMMENDER, "twin3")


# -- medium: a catalog of more genres than a bit mask holds -----------------------------------------


def test_home_pages_and_filters_serve_a_catalog_of_any_number_of_genres(guarded: Guarded) -> None:
    admin = guarded.token(*ADMIN)
    add = "mutation($t: String!, $g: [String!]!) { addMovie(movie: {title: $t, year: 2001, genres: $g}) { movieId } }"
    tag = uuid.uuid4().hex[:6]
    for batch in range(8):  # 80 new genres beside the fixture's 8
        genres = [f"G{tag}{batch}x{n}" for n in range(10)]
        made = guarded.gql(
            add, {"t": f"Genre test {tag} {batch}", "g": genres}, token=admin, client="10.81.0.1"
        )
        assert "errors" not in made, made
    last = f"G{tag}7x9"  # the newest genre: far past the 63 a bit mask held
    user = guarded.token(*USER)
    home = guarded.gql("{ homePage(userId: 7) { rows { title } } }", token=user, client="10.81.0.2")
    assert "errors" not in home and home["data"]["homePage"]["rows"], home
    filtered = guarded.gql(
        "query($g: String!) { recommendations(userId: 7, first: 5, filter: {anyGenres: [$g]}) { movie { genres } } }",
        {"g": last},
        token=user,
        client="10.81.0.3",
    )
    assert "errors" not in filtered, filtered
    assert all(last in r["movie"]["genres"] for r in filtered["data"]["recommendations"])


# -- low: admin input, retired movies ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"imdbId": "\u2460\u2461\u2462"}, "imdbId"),
        ({"imdbId": "\u0663\u0664"}, "imdbId"),
        ({"title": "Invoice\u202egnp.exe"}, "title"),
        ({"tags": ["fine", "a\u2066b"]}, "tags"),
    ],
)
def test_admin_text_is_plain(guarded: Guarded, patch: dict, field: str) -> None:
    admin = guarded.token(*ADMIN)
    answer = guarded.gql(
        "mutation($p: MoviePatch!) { updateMovie(movieId: 3, patch: $p) { movieId } }",
        {"p": patch},
        token=admin,
        client="10.82.0.1",
    )
    assert code(answer) == "BAD_USER_INPUT", answer
    assert answer["errors"][0]["extensions"]["field"].endswith(field)


def test_a_retired_movie_cannot_be_rated_or_explained(guarded: Guarded) -> None:
    admin = guarded.token(*ADMIN)
    made = guarded.gql(
        'mutation { addMovie(movie: {title: "Soon retired", year: 1999, genres: ["Drama"]}) { movieId } }',
        token=admin,
        client="10.83.0.1",
    )
    movie = made["data"]["addMovie"]["movieId"]
    assert "errors" not in guarded.gql(
        f"mutation {{ retireMovie(movieId: {movie}) {{ movieId }} }}", token=admin
    )
    user = guarded.token(*USER)
    rated = guarded.gql(f"mutation {{ rateMovie(movieId: {movie}, rating: 4) {{ rating }} }}", token=user)
    assert code(rated) == "BAD_USER_INPUT" and "retired" in rated["errors"][0]["message"]

    async def explain() -> dict:
        url = guarded.server.url.replace("http://", "ws://") + "/graphql"
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(
                json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {user}"}})
            )
            assert json.loads(await ws.recv())["type"] == "connection_ack"  # any case of the header name
            query = f"subscription {{ explanation(userId: 7, movieId: {movie}) {{ text }} }}"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if message["type"] in ("next", "error"):
                    return message

    message = asyncio.run(explain())
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert errors[0]["extensions"]["code"] == "NOT_FOUND" and "retired" in errors[0]["message"]


# -- low: sign-out, websocket origins ---------------------------------------------------------------------


def test_signing_out_revokes_the_token_everywhere(guarded: Guarded) -> None:
    email = f"out-{uuid.uuid4().hex[:8]}@example.com"
    made = guarded.gql(
        'mutation($e: String!) { register(email: $e, password: "a-fine-passphrase") { token } }',
        {"e": email},
        client="10.84.0.1",
    )
    token = made["data"]["register"]["token"]
    assert "errors" not in guarded.gql("{ me { userId } }", token=token, client="10.84.0.2")

    async def socket_then_sign_out() -> int | None:
        url = guarded.server.url.replace("http://", "ws://") + "/graphql"
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(
                json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
            )
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            out = await asyncio.to_thread(guarded.gql, "mutation { logout }", token=token, client="10.84.0.3")
            assert out["data"]["logout"] is True, out
            try:
                async with asyncio.timeout(20):
                    while True:
                        await ws.recv()
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
        return None

    assert asyncio.run(socket_then_sign_out()) == 4401  # the open socket closes at once
    refused = guarded.gql("{ me { userId } }", token=token, client="10.84.0.4")
    assert code(refused) == "UNAUTHENTICATED" and "signed out" in refused["errors"][0]["message"]
    fresh = guarded.gql(
        'mutation($e: String!) { login(email: $e, password: "a-fine-passphrase") { token } }',
        {"e": email},
        client="10.84.0.5",
    )["data"]["login"]["token"]
    assert "errors" not in guarded.gql(
        "{ me { userId } }", token=fresh, client="10.84.0.6"
    )  # a new session works


def test_the_websocket_accepts_the_configured_cors_origins(databases, server_factory) -> None:
    settings = databases.settings(
        "sqlite", llm_backend="none", cache_warm_movies=0, cors_origins=["http://localhost:5173"]
    )
    server = server_factory(settings)
    url = server.url.replace("http://", "ws://") + "/graphql"

    async def init(origin: str) -> str:
        async with websockets.connect(
            url,
            subprotocols=["graphql-transport-ws"],
            origin=origin,  # type: ignore[list-item,arg-type]
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            try:
                return json.loads(await asyncio.wait_for(ws.recv(), 20))["type"]
            except websockets.ConnectionClosed as closed:
                return f"closed {closed.rcvd.code if closed.rcvd else None}"

    # no token: refused for that (4401), not for the origin (403 before the socket opens)
    assert asyncio.run(init("http://localhost:5173")) == "closed 4401"
    with pytest.raises(websockets.InvalidStatus):  # an origin not configured: no socket at all
        asyncio.run(init("http://elsewhere.example"))
