"""Recommendations over real HTTP: batching, fold-in, semantic search, promotion, permissions."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from app.infra.model_registry import registry_for
from ml.registry import CHAMPION, RECOMMENDER
from tests.e2e.conftest import Recommender

REC = "query($u: Int!, $n: Int) { recommendations(userId: $u, first: $n) { rank score movie { movieId title genres } } }"


def code(result: dict) -> str:
    return result["errors"][0]["extensions"]["code"]


def _metric(server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return float(next(x for x in text.splitlines() if x.startswith(name + " ")).split()[-1])


def test_own_recommendations_exclude_rated_and_name_the_model(recommender: Recommender) -> None:
    result = recommender.server.gql(REC, {"u": 1, "n": 10}, token=recommender.user_token)
    recs = result["data"]["recommendations"]
    assert [r["rank"] for r in recs] == list(range(1, 11))
    assert [r["score"] for r in recs] == sorted((r["score"] for r in recs), reverse=True)
    assert result["extensions"]["recommender"] == {"model": RECOMMENDER, "version": "1"}
    rated = recommender.server.gql(
        "{ me { ratings(first: 100) { edges { node { movieId } } } ratingsCount } }",
        token=recommender.user_token,
    )["data"]["me"]
    seen = {e["node"]["movieId"] for e in rated["ratings"]["edges"]}
    assert len(seen) == min(100, rated["ratingsCount"]) and not seen & {r["movie"]["movieId"] for r in recs}


def test_fifty_users_in_one_request_are_one_scoring_batch(recommender: Recommender) -> None:
    # first: 6 is asked by no other test on this shared server, so none of the 50 is a cache hit
    fields = " ".join(
        f"u{u}: recommendations(userId: {u}, first: 6) {{ movie {{ title }} }}" for u in range(1, 51)
    )
    batches = _metric(recommender.server, "cinerec_model_score_batches_total")
    sizes = _metric(recommender.server, "cinerec_model_score_batch_size_sum")
    result = recommender.server.gql(f"{{ {fields} }}", token=recommender.admin_token)
    assert "errors" not in result and all(len(v) == 6 for v in result["data"].values())
    assert _metric(recommender.server, "cinerec_model_score_batches_total") == batches + 1
    assert _metric(recommender.server, "cinerec_model_score_batch_size_sum") == sizes + 50


def test_new_user_ratings_count_at_once(recommender: Recommender) -> None:
    gql = recommender.server.gql
    token = gql('mutation { register(email: "kid@example.com", password: "cartoons-please") { token } }')[
        "data"
    ]["register"]["token"]
    # Toy Story, Aladdin, The Lion King, Beauty and the Beast, Snow White: animated children's films
    for movie_id in (1, 95, 71, 588, 99):
        assert "errors" not in gql(
            f"mutation {{ rateMovie(movieId: {movie_id}, rating: 5.0) {{ rating }} }}", token=token
        )
    me = gql("{ me { userId recommendations(first: 10) { movie { movieId genres } } } }", token=token)[
        "data"
    ]["me"]
    recs = me["recommendations"]
    assert len(recs) == 10 and not {r["movie"]["movieId"] for r in recs} & {1, 95, 71, 588, 99}
    family = [r for r in recs if {"Animation", "Children's"} & set(r["movie"]["genres"])]
    assert len(family) >= 5, [r["movie"] for r in recs]


def test_semantic_search_and_similar_movies(recommender: Recommender) -> None:
    gql = recommender.server.gql
    hits = gql(
        '{ searchMovies(query: "toys that come alive when nobody is watching", first: 5) { score movie { title } } }'
    )
    titles = [h["movie"]["title"] for h in hits["data"]["searchMovies"]]
    assert "Toy Story" in titles[:3], titles
    # below the relevance floor (a content cosine of 0.30) nothing is an answer: nonsense finds
    # nothing, and a short query keeps only the hits above it
    for nonsense in ("qwertyuiop", "1234567", "my tax return"):
        found = gql("query($q: String!) { searchMovies(query: $q, first: 10) { score } }", {"q": nonsense})
        assert found["data"]["searchMovies"] == [], (nonsense, found)
    heat = gql('{ searchMovies(query: "heat", first: 10) { score movie { title } } }')["data"]["searchMovies"]
    assert heat[0]["movie"]["title"] == "Heat" and 0 < len(heat) < 10, heat
    assert all(h["score"] >= 0.30 for h in heat), heat
    similar = gql("{ similarMovies(movieId: 1, first: 5) { movieId genres } }")["data"]["similarMovies"]
    assert len(similar) == 5 and 1 not in {m["movieId"] for m in similar}
    assert sum("Animation" in m["genres"] or "Children's" in m["genres"] for m in similar) >= 3
    assert code(gql('{ searchMovies(query: "  ") { score } }')) == "BAD_USER_INPUT"
    assert code(gql("{ similarMovies(movieId: 999999) { title } }")) == "NOT_FOUND"


def test_similar_movies_read_their_rows_in_one_batch(
    recommender: Recommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: each similar movie's row was awaited alone, N batches of one."""
    catalog = recommender.server.app.state.cinerec.services.catalog
    batches: list[list[int]] = []
    read = catalog.movies

    async def counted(movie_ids: list[int]) -> list:
        batches.append(list(movie_ids))
        return await read(movie_ids)

    monkeypatch.setattr(catalog, "movies", counted)
    similar = recommender.server.gql("{ similarMovies(movieId: 50, first: 10) { movieId title } }")
    assert len(similar["data"]["similarMovies"]) == 10
    assert [len(b) for b in batches] == [10]


def test_admin_only_model_operations(recommender: Recommender) -> None:
    gql = recommender.server.gql
    for query in (
        "{ modelVersions { version } }",
        'mutation { promoteModel(version: "1") { version } }',
        "mutation { rollbackModel { version } }",
    ):
        assert code(gql(query, token=recommender.user_token)) == "FORBIDDEN"
        assert code(gql(query)) == "UNAUTHENTICATED"
    assert code(gql(REC, {"u": 2}, token=recommender.user_token)) == "FORBIDDEN"
    assert code(gql(REC, {"u": 2})) == "UNAUTHENTICATED"
    assert code(gql(REC, {"u": 999999}, token=recommender.admin_token)) == "NOT_FOUND"
    assert (
        code(gql('mutation { promoteModel(version: "77") { version } }', token=recommender.admin_token))
        == "NOT_FOUND"
    )


def _served_version(server, token: str) -> str:
    result = server.gql("{ recommendations(userId: 3, first: 1) { rank } }", token=token)
    return result["extensions"]["recommender"]["version"]


def _wait_for_version(server, token: str, version: str) -> None:
    deadline = time.monotonic() + 15
    while _served_version(server, token) != version:
        assert time.monotonic() < deadline, (
            f"replica still serves {_served_version(server, token)}, not {version}"
        )
        time.sleep(0.2)


def test_promotion_and_rollback_under_concurrent_queries(
    recommender: Recommender, server_factory, tmp_path: Path
) -> None:
    replica = server_factory(recommender.settings)  # a second replica: learns of promotions over Redis
    registry = registry_for(recommender.settings)  # type: ignore[arg-type]
    folder = registry.download(RECOMMENDER, "1", tmp_path)
    run_id, source = registry.log_run(
        experiment=RECOMMENDER, params={"copy_of": 1}, metrics={}, artifacts=folder
    )
    version = registry.register(RECOMMENDER, source=source, run_id=run_id)
    assert registry.alias_version(RECOMMENDER, CHAMPION) == "1"  # a later version waits for promotion

    errors: list[object] = []
    seen_versions: set[str] = set()
    stop = threading.Event()

    def query() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                response = client.post(
                    f"{recommender.server.url}/graphql",
                    json={"query": "{ recommendations(userId: 3, first: 5) { rank } }"},
                    headers={"authorization": f"Bearer {recommender.admin_token}"},
                )
                body = response.json()
                if (
                    response.status_code != 200
                    or "errors" in body
                    or len(body["data"]["recommendations"]) != 5
                ):
                    errors.append(body)
                else:
                    seen_versions.add(body["extensions"]["recommender"]["version"])

    threads = [threading.Thread(target=query) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        gql = recommender.server.gql
        promoted = gql(
            f'mutation {{ promoteModel(version: "{version}") {{ version aliases }} }}',
            token=recommender.admin_token,
        )
        assert promoted["data"]["promoteModel"] == {"version": version, "aliases": [CHAMPION]}
        versions = gql("{ modelVersions { version aliases } }", token=recommender.admin_token)["data"][
            "modelVersions"
        ]
        assert {v["version"]: v["aliases"] for v in versions}[version] == [CHAMPION]
        assert _served_version(recommender.server, recommender.admin_token) == version
        _wait_for_version(replica, recommender.admin_token, version)
        # the concurrent clients are served the new version too, before it is rolled back
        deadline = time.monotonic() + 15
        while version not in seen_versions:
            assert time.monotonic() < deadline, f"no concurrent query saw version {version}: {seen_versions}"
            time.sleep(0.05)
        back = gql("mutation { rollbackModel { version aliases } }", token=recommender.admin_token)
        assert back["data"]["rollbackModel"] == {"version": "1", "aliases": [CHAMPION]}
        assert _served_version(recommender.server, recommender.admin_token) == "1"
        _wait_for_version(replica, recommender.admin_token, "1")
        again = gql("mutation { rollbackModel { version } }", token=recommender.admin_token)
        assert code(again) == "BAD_USER_INPUT"  # version 1 was the first champion: nothing before it
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert seen_versions == {"1", version}  # both models answered, and nothing else did
    after = recommender.server.gql(
        "{ recommendations(userId: 3, first: 1) { rank } }", token=recommender.admin_token
    )
    assert after["extensions"]["recommender"]["version"] == "1"


def test_catalog_reads_come_from_the_warmed_cache(recommender: Recommender) -> None:
    server = recommender.server
    query = "{ movie(movieId: 50) { title genres ratingsCount } }"
    deadline = time.monotonic() + 10
    while _metric_labels(server, 'cinerec_cache_requests_total{kind="movie",level="l1",result="hit"}') == 0:
        assert time.monotonic() < deadline, "the catalog cache was never warmed"
        server.gql(query)
    statements = _metric(server, "cinerec_sql_queries_total")
    movie = server.gql(query)["data"]["movie"]
    assert movie["title"] == "Star Wars" and "Sci-Fi" in movie["genres"]
    assert _metric(server, "cinerec_sql_queries_total") == statements  # no SQL at all


def _metric_labels(server, series: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(series)), 0.0)
