"""The catalog through the API, in-process, on PostgreSQL and on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from app.infra.auth import Principal, Role, issue_token
from tests.api.conftest import Catalog
from tests.e2e.conftest import DEPTH, USER_ID
from tests.movielens_fixture import N_MOVIES

MOVIE = "query($id: Int!) { movie(movieId: $id) { movieId title year genres ratingsCount averageRating tags imdbId tmdbId } }"
PAGE = """query($first: Int, $after: String, $filter: MovieFilter, $order: MovieOrder, $dir: SortDirection) {
  movies(first: $first, after: $after, filter: $filter, orderBy: $order, direction: $dir) {
    totalCount
    edges { cursor node { movieId title year ratingsCount averageRating } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""


def code(result: dict) -> str:
    return result["errors"][0]["extensions"]["code"]


def test_movie_by_id(catalog: Catalog) -> None:
    movie = catalog.server.gql(MOVIE, {"id": 1})["data"]["movie"]
    assert movie["title"] == "Movie 1, The" and movie["year"] == 1981
    assert movie["imdbId"] == "0000001" and movie["tmdbId"] == 1001
    assert movie["tags"] and set(movie["tags"]) <= {"funny", "dark", "classic"}
    assert movie["ratingsCount"] > 0 and 0.5 <= movie["averageRating"] <= 5.0
    assert catalog.server.gql(MOVIE, {"id": 999_999})["data"]["movie"] is None


def test_no_genres_and_quoted_titles(catalog: Catalog) -> None:
    movie = catalog.server.gql(MOVIE, {"id": 7})["data"]["movie"]
    assert movie["title"] == '"Quoted" Movie 7' and movie["year"] is None
    assert catalog.server.gql(MOVIE, {"id": 10})["data"]["movie"]["genres"] == []


def test_pagination_walks_every_movie_once(catalog: Catalog) -> None:
    seen, after = [], None
    while True:
        page = catalog.server.gql(PAGE, {"first": 7, "after": after})["data"]["movies"]
        seen += [e["node"]["movieId"] for e in page["edges"]]
        assert page["totalCount"] == N_MOVIES
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(seen) == list(range(1, N_MOVIES + 1))
    counts = [catalog.server.gql(MOVIE, {"id": m})["data"]["movie"]["ratingsCount"] for m in seen]
    assert counts == sorted(counts, reverse=True)


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"first": 0}, "empty"),
        ({"first": -1}, "BAD_USER_INPUT"),
        ({"first": 101}, "BAD_USER_INPUT"),
        ({"after": "not-a-cursor!"}, "BAD_USER_INPUT"),
        ({"after": "WzEsMl0="}, "BAD_USER_INPUT"),  # valid base64 JSON, wrong shape
    ],
)
def test_pagination_edge_cases(catalog: Catalog, variables: dict, expected: str) -> None:
    result = catalog.server.gql(PAGE, variables)
    if expected == "empty":
        page = result["data"]["movies"]
        assert page["edges"] == [] and page["totalCount"] == N_MOVIES
        assert page["pageInfo"] == {
            "hasNextPage": False,
            "hasPreviousPage": False,
            "startCursor": None,
            "endCursor": None,
        }
    else:
        assert code(result) == expected


def test_page_beyond_the_end_is_empty(catalog: Catalog) -> None:
    last = catalog.server.gql(PAGE, {"first": 100})["data"]["movies"]
    assert len(last["edges"]) == N_MOVIES and not last["pageInfo"]["hasNextPage"]
    after = catalog.server.gql(PAGE, {"first": 5, "after": last["pageInfo"]["endCursor"]})["data"]["movies"]
    assert after["edges"] == [] and after["pageInfo"]["hasPreviousPage"]


def test_cursor_from_another_order_is_refused(catalog: Catalog) -> None:
    cursor = catalog.server.gql(PAGE, {"first": 2})["data"]["movies"]["pageInfo"]["endCursor"]
    assert code(catalog.server.gql(PAGE, {"first": 2, "after": cursor, "order": "TITLE"})) == "BAD_USER_INPUT"


def test_filters_and_orders(catalog: Catalog) -> None:
    gql = catalog.server.gql
    years = gql(
        PAGE, {"first": 100, "filter": {"yearFrom": 1990, "yearTo": 1995}, "order": "YEAR", "dir": "ASC"}
    )
    got = [e["node"]["year"] for e in years["data"]["movies"]["edges"]]
    expected = [y for y in range(1990, 1996) if (y - 1980) % 7]  # every 7th movie has no year in its title
    assert got == expected and years["data"]["movies"]["totalCount"] == len(expected)
    titled = gql(PAGE, {"first": 100, "filter": {"titleContains": "MOVIE 1"}, "order": "TITLE"})["data"][
        "movies"
    ]
    titles = [e["node"]["title"] for e in titled["edges"]]
    assert titles == sorted(titles) and all("movie 1" in t.lower() for t in titles) and len(titles) == 11
    assert gql(PAGE, {"filter": {"titleContains": "%"}})["data"]["movies"]["totalCount"] == 0
    rated = gql(PAGE, {"first": 100, "filter": {"minRatings": 10}, "order": "AVERAGE_RATING"})["data"][
        "movies"
    ]
    # best rated: the mean shrunk toward 3.5 by 10 ratings (app.services.catalog.shrunk_mean)
    shrunk = [
        (e["node"]["averageRating"] * e["node"]["ratingsCount"] + 35) / (e["node"]["ratingsCount"] + 10)
        for e in rated["edges"]
    ]
    assert shrunk == sorted(shrunk, reverse=True) and len(shrunk) > 3
    every = gql(PAGE, {"first": 100, "order": "AVERAGE_RATING"})["data"]["movies"]["edges"]
    scored = [
        ((e["node"]["averageRating"] or 0) * e["node"]["ratingsCount"] + 35)
        / (e["node"]["ratingsCount"] + 10)
        for e in every
    ]
    assert scored == sorted(scored, reverse=True)
    raw = [e["node"]["averageRating"] or 0 for e in every]
    assert raw != sorted(raw, reverse=True)  # the fixture has small samples that a raw mean would put first
    assert all(e["node"]["ratingsCount"] >= 10 for e in rated["edges"])
    genre = gql(
        "query($g: String) { movies(first: 100, filter: {genre: $g}) { totalCount edges { node { genres } } } }",
        {"g": "comedy"},
    )["data"]["movies"]
    assert genre["totalCount"] == len(genre["edges"]) > 0
    assert all("Comedy" in e["node"]["genres"] for e in genre["edges"])


def _sql_statements(catalog: Catalog) -> float:
    text = catalog.server.http.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("cinerec_sql_queries_total"))
    return float(line.split()[-1])


def test_a_hundred_movie_page_costs_a_handful_of_statements(catalog: Catalog) -> None:
    query = """{ movies(first: 100) { totalCount edges { node {
        movieId title ratingsCount averageRating genres tags(first: 3) imdbId tmdbId } } } }"""
    before = _sql_statements(catalog)
    result = catalog.server.gql(query)
    used = _sql_statements(catalog) - before
    assert len(result["data"]["movies"]["edges"]) == N_MOVIES
    # count, page, genres, tags, links: one statement each, however many movies
    assert used <= 5, used


def test_auth_no_token_expired_tampered_wrong_role(catalog: Catalog) -> None:
    gql, settings = catalog.server.gql, catalog.server.settings
    me = "{ me { userId ratingsCount } }"
    assert code(gql(me)) == "UNAUTHENTICATED"
    assert gql(me, token=catalog.user_token)["data"]["me"]["userId"] == USER_ID
    stale = issue_token(Principal(2, USER_ID, Role.USER), settings, now=datetime.now(UTC) - timedelta(days=1))
    expired = gql(me, token=stale)
    assert code(expired) == "UNAUTHENTICATED" and "expired" in expired["errors"][0]["message"]
    claims = jwt.decode(catalog.user_token, options={"verify_signature": False})
    forged = jwt.encode(
        {**claims, "role": "admin"}, "not-the-secret-not-the-secret-not-the-secret", algorithm="HS256"
    )
    assert code(gql(me, token=forged)) == "UNAUTHENTICATED"
    header, payload, signature = catalog.user_token.split(".")
    assert code(gql(me, token=f"{header}.{payload}x.{signature}")) == "UNAUTHENTICATED"
    other = "{ user(userId: 1) { userId ratings(first: 2) { totalCount } } }"
    assert code(gql(other, token=catalog.user_token)) == "FORBIDDEN"
    admin_view = gql(other, token=catalog.admin_token)["data"]["user"]
    assert admin_view["userId"] == 1 and admin_view["ratings"]["totalCount"] > 0
    own = gql(
        f"{{ user(userId: {USER_ID}) {{ ratings(first: 3) {{ edges {{ node {{ movieId }} }} }} }} }}",
        token=catalog.user_token,
    )
    assert len(own["data"]["user"]["ratings"]["edges"]) == 3


def test_user_ratings_pagination(catalog: Catalog) -> None:
    query = """query($after: String) { user(userId: 3) { ratingsCount
        ratings(first: 4, after: $after) { edges { node { movieId timestamp } } pageInfo { hasNextPage endCursor } } } }"""
    seen, after, total = [], None, None
    while True:
        user = catalog.server.gql(query, {"after": after}, token=catalog.admin_token)["data"]["user"]
        total = user["ratingsCount"]
        seen += [(e["node"]["timestamp"], e["node"]["movieId"]) for e in user["ratings"]["edges"]]
        if not user["ratings"]["pageInfo"]["hasNextPage"]:
            break
        after = user["ratings"]["pageInfo"]["endCursor"]
    assert len(seen) == total == len(set(seen))
    assert [t for t, _ in seen] == sorted((t for t, _ in seen), reverse=True)


def test_register_login_and_rate(catalog: Catalog) -> None:
    gql = catalog.server.gql
    reg = "mutation($e: String!, $p: String!) { register(email: $e, password: $p) { token user { userId } } }"
    email = f"new-{catalog.server.token}@example.com"
    made = gql(reg, {"e": email, "p": "a-long-password"})["data"]["register"]
    assert made["user"]["userId"] > 40  # above the data set's user ids
    assert code(gql(reg, {"e": email, "p": "a-long-password"})) == "BAD_USER_INPUT"
    assert code(gql(reg, {"e": "not-an-email", "p": "a-long-password"})) == "BAD_USER_INPUT"
    assert code(gql(reg, {"e": "short@example.com", "p": "short"})) == "BAD_USER_INPUT"
    bad_login = gql('mutation { login(email: "%s", password: "wrong-password") { token } }' % email)
    assert code(bad_login) == "UNAUTHENTICATED"

    token = made["token"]
    rate = "mutation($m: Int!, $r: Float!) { rateMovie(movieId: $m, rating: $r) { rating movie { ratingsCount averageRating } } }"
    before = gql(MOVIE, {"id": 2})["data"]["movie"]
    for bad in (0.0, 5.5, 3.3, -1.0):
        assert code(gql(rate, {"m": 2, "r": bad}, token=token)) == "BAD_USER_INPUT"
    assert code(gql(rate, {"m": 999_999, "r": 4.0}, token=token)) == "NOT_FOUND"
    assert code(gql(rate, {"m": 2, "r": 4.0})) == "UNAUTHENTICATED"
    assert gql(MOVIE, {"id": 2})["data"]["movie"] == before  # refused ratings changed nothing
    first = gql(rate, {"m": 2, "r": 4.0}, token=token)["data"]["rateMovie"]
    assert first["movie"]["ratingsCount"] == before["ratingsCount"] + 1
    again = gql(rate, {"m": 2, "r": 1.5}, token=token)["data"]["rateMovie"]
    assert again["rating"] == 1.5 and again["movie"]["ratingsCount"] == before["ratingsCount"] + 1
    expected = (before["averageRating"] * before["ratingsCount"] + 1.5) / (before["ratingsCount"] + 1)
    assert again["movie"]["averageRating"] == pytest.approx(expected)


def test_alias_and_token_limits(catalog: Catalog) -> None:
    limits = catalog.server.settings
    aliases = (
        "{ " + " ".join(f"m{i}: movie(movieId: 1) {{ title }}" for i in range(limits.max_aliases + 1)) + " }"
    )
    result = catalog.server.gql(aliases)
    assert code(result) == "QUERY_TOO_COMPLEX" and "aliases" in result["errors"][0]["message"].lower()
    assert result["errors"][0]["extensions"]["maxAliases"] == limits.max_aliases
    tokens = "{ movie(movieId: 1) { " + "title " * limits.max_tokens + "} }"
    result = catalog.server.gql(tokens)
    assert code(result) == "BAD_USER_INPUT" and "token" in result["errors"][0]["message"].lower()


def test_depth_limit(catalog: Catalog) -> None:
    # The e2e servers run with CINEREC_MAX_QUERY_DEPTH=DEPTH so that this schema can exceed it.
    within = "{ movies { edges { node { title } } } }"
    assert "errors" not in catalog.server.gql(within)
    deep = "{ user(userId: 1) { ratings { edges { node { movie { title } } } } } }"
    result = catalog.server.gql(deep, token=catalog.admin_token)
    assert code(result) == "QUERY_TOO_COMPLEX" and "depth" in result["errors"][0]["message"].lower()
    assert result["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX", "depth": 5, "maxDepth": DEPTH}


def test_oversized_body_and_syntax_errors(catalog: Catalog) -> None:
    big = catalog.server.http.post(
        "/graphql",
        json={"query": "{ movie(movieId: 1) { title } }", "pad": "x" * 300_000},
    )
    assert big.status_code == 413 and big.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert code(catalog.server.gql("{ movie(movieId: 1) { title }")) == "BAD_USER_INPUT"
    assert code(catalog.server.gql("{ movie(movieId: 1) { nope } }")) == "BAD_USER_INPUT"


def test_health_readiness_metrics_cors(catalog: Catalog) -> None:
    http = catalog.server.http
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"status": "ready", "database": "ok", "redis": "ok"}
    catalog.server.gql("query Named { movie(movieId: 1) { title } }")
    metrics = http.get("/metrics").text
    assert 'cinerec_graphql_requests_total{operation="Named",root="movie",status="ok"}' in metrics
    assert (
        'cinerec_graphql_request_duration_seconds_bucket{le="0.005",operation="Named",root="movie"}'
        in metrics
    )
    pre = http.options(
        "/graphql",
        headers={"origin": "http://localhost:3000", "access-control-request-method": "POST"},
    )
    assert pre.headers["access-control-allow-origin"] == "http://localhost:3000"
    refused = http.options(
        "/graphql", headers={"origin": "http://evil.example", "access-control-request-method": "POST"}
    )
    assert "access-control-allow-origin" not in refused.headers
    assert "GraphiQL" in http.get("/graphql", headers={"accept": "text/html"}).text


def test_repeated_wrong_passwords_are_rate_limited(catalog: Catalog) -> None:
    gql = catalog.server.gql
    email = f"throttle-{catalog.server.token}@example.com"
    gql(
        'mutation($e: String!) { register(email: $e, password: "the-right-password") { token } }',
        {"e": email},
    )
    login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
    for _ in range(catalog.server.settings.login_attempts):
        assert code(gql(login, {"e": email, "p": "a-wrong-password"})) == "UNAUTHENTICATED"
    refused = gql(login, {"e": email, "p": "the-right-password"})  # even the right one, for now
    assert code(refused) == "RATE_LIMITED" and refused["errors"][0]["extensions"]["retryAfterSeconds"] > 0
    other = gql(login, {"e": "user@example.com", "p": "user-password"})  # other accounts are unaffected
    assert "errors" not in other


def test_popularity_fallback_before_any_model(catalog: Catalog) -> None:
    result = catalog.server.gql(
        "{ me { recommendations(first: 3) { rank movie { ratingsCount } } } }", token=catalog.user_token
    )
    recs = result["data"]["me"]["recommendations"]
    counts = [r["movie"]["ratingsCount"] for r in recs]
    assert len(recs) == 3 and counts == sorted(counts, reverse=True)
    assert result["extensions"]["recommender"]["model"] == "popularity"


def test_dismissed_movies_are_listed_to_their_owner_only_and_undo_takes_them_off(catalog: Catalog) -> None:
    gql, token = catalog.server.gql, catalog.user_token
    listed = f"{{ user(userId: {USER_ID}) {{ dismissedMovies(first: 10) {{ movieId }} }} }}"
    before = {m["movieId"] for m in gql(listed, token=token)["data"]["user"]["dismissedMovies"]}
    for movie in (11, 12):
        assert gql(f"mutation {{ dismissMovie(movieId: {movie}) }}", token=token)["data"]["dismissMovie"]
    try:
        found = [m["movieId"] for m in gql(listed, token=token)["data"]["user"]["dismissedMovies"]]
        assert set(found) - before == {11, 12}, found
        assert code(gql(listed.replace(str(USER_ID), "1"), token=token)) == "FORBIDDEN"
        assert code(gql(listed.replace("10", "100000"), token=token)) == "QUERY_TOO_COMPLEX"
    finally:
        for movie in (11, 12):
            gql(f"mutation {{ undismissMovie(movieId: {movie}) }}", token=token)
    after = [m["movieId"] for m in gql(listed, token=token)["data"]["user"]["dismissedMovies"]]
    assert 11 not in after and 12 not in after


def test_my_rating_is_the_callers_own_in_halves_and_nobodys_when_signed_out(catalog: Catalog) -> None:
    gql, token = catalog.server.gql, catalog.user_token
    rated = "{ a: movie(movieId: 21) { myRating } b: movie(movieId: 22) { myRating } }"
    assert gql("mutation { rateMovie(movieId: 21, rating: 3.5) { rating } }", token=token)["data"]
    try:
        mine = gql(rated, token=token)["data"]
        assert mine == {"a": {"myRating": 3.5}, "b": {"myRating": None}}, mine
        # another account sees its own (none), the signed-out see none, a dead token is refused
        other = gql('mutation { register(email: "half@example.com", password: "half-passphrase") { token } }')
        assert gql(rated, token=other["data"]["register"]["token"])["data"]["a"] == {"myRating": None}
        assert gql(rated)["data"]["a"] == {"myRating": None}
        assert code(gql(rated, token=token + "x")) == "UNAUTHENTICATED"
    finally:
        gql("mutation { deleteRating(movieId: 21) { movieId } }", token=token)
    assert gql(rated, token=token)["data"]["a"] == {"myRating": None}
