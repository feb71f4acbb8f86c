"""A catalog that changes while serving, on two replicas sharing PostgreSQL and Redis: a movie
added on one is searchable, similar and recommendable on the other before any retraining; a
retired one leaves every list on both; a dismissal on one holds on the other."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Databases, LiveServer, TrainedHome
from tests.e2e.conftest import ADMIN, LOGIN, USER, add_logins, code, wait_until


@dataclass
class Replicas:
    a: LiveServer
    b: LiveServer
    admin: str
    user: str  # MovieLens user 1


@pytest.fixture(scope="module")
def replicas(
    databases: Databases, module_server_factory: Callable[..., LiveServer], ml100k_trained: TrainedHome
) -> Replicas:
    """Two servers on one copy of the trained ML-100K home."""
    settings = databases.copy(
        ml100k_trained, redis_url="redis://127.0.0.1:6379/0", llm_backend="none", account_cache_seconds=0
    )
    add_logins(settings, user_id=1)
    a = module_server_factory(settings)
    b = module_server_factory(settings.model_copy())
    admin = a.gql(LOGIN, {"e": ADMIN[0], "p": ADMIN[1]})["data"]["login"]["token"]
    user = a.gql(LOGIN, {"e": USER[0], "p": USER[1]})["data"]["login"]["token"]
    return Replicas(a, b, admin, user)


ADD = """mutation($m: MovieInput!) { addMovie(movie: $m) { movieId title year genres retired } }"""
SEARCH = "query($q: String!) { searchMovies(query: $q, first: 10) { movie { movieId } } }"
SIMILAR = "query($m: Int!) { similarMovies(movieId: $m, first: 10) { movieId } }"
RECS = """query($f: RecommendationFilter) {
  recommendations(userId: 1, first: 20, filter: $f) { movie { movieId } } }"""


def ids(result: dict, field: str) -> list[int]:
    assert "errors" not in result, result
    rows = result["data"][field]
    return [r["movie"]["movieId"] if "movie" in r else r["movieId"] for r in rows]


def _add(rep: Replicas, **movie: Any) -> dict:
    added = rep.a.gql(ADD, {"m": movie}, token=rep.admin)
    assert "errors" not in added, added
    return added["data"]["addMovie"]


def test_an_added_movie_is_searchable_similar_and_recommendable_on_the_other_replica(rep: Replicas) -> None:
    # a fixed title: a random suffix put it below Toy Story's 10th neighbour for 3 titles in
    # 100 (cosine 0.668 at worst against 0.683); "Toy Story 5" is at 0.764
    added = _add(
        rep,
        title="Toy Story 5",
        year=2031,
        genres=["Animation", "Children's", "Comedy"],
        tags=["toys that come alive"],
    )
    movie = added["movieId"]
    assert movie > 1682 and added["genres"] == ["Animation", "Children's", "Comedy"] and not added["retired"]
    wait_until(
        lambda: (
            movie in ids(rep.b.gql(SEARCH, {"q": "toys that come alive when nobody watches"}), "searchMovies")
        ),
        "the other replica finds it",
        seconds=10,
    )
    assert 1 in ids(rep.b.gql(SIMILAR, {"m": movie}), "similarMovies")  # Toy Story, by content
    assert movie in ids(rep.b.gql(SIMILAR, {"m": 1}), "similarMovies")
    # the only movie of 2031: recommendable to a user whose taste its content matches
    only = {"anyGenres": ["Animation"], "yearFrom": 2031}
    assert ids(rep.b.gql(RECS, {"f": only}, token=rep.user), "recommendations") == [movie]
    why = rep.b.gql(
        "query($f: RecommendationFilter) { recommendations(userId: 1, first: 1, filter: $f) "
        "{ evidence { movie { movieId } } } }",
        {"f": only},
        token=rep.user,
    )["data"]["recommendations"][0]["evidence"]
    assert 1 in [e["movie"]["movieId"] for e in why]  # user 1 rated Toy Story 5: the closest evidence


def test_a_retired_movie_leaves_every_list_on_both_replicas_and_keeps_its_ratings(rep: Replicas) -> None:
    before = ids(rep.a.gql(RECS, {"f": None}, token=rep.user), "recommendations")
    retired = before[0]  # a trained movie at the top of user 1's list
    count = rep.a.gql(f"{{ movie(movieId: {retired}) {{ ratingsCount }} }}")["data"]["movie"]["ratingsCount"]
    # a movie whose similar list holds the retired one (cosine similarity is symmetric)
    similar_to = next(
        m
        for m in ids(rep.a.gql(SIMILAR, {"m": retired}), "similarMovies")
        if retired in ids(rep.b.gql(SIMILAR, {"m": m}), "similarMovies")
    )
    title = rep.a.gql(f"{{ movie(movieId: {retired}) {{ title }} }}")["data"]["movie"]["title"]
    assert retired in ids(rep.b.gql(SEARCH, {"q": title}), "searchMovies")  # found by its title before
    answer = rep.a.gql(
        f"mutation {{ retireMovie(movieId: {retired}) {{ retired ratingsCount }} }}", token=rep.admin
    )
    assert answer["data"]["retireMovie"] == {"retired": True, "ratingsCount": count}
    for server in (rep.a, rep.b):
        wait_until(
            lambda s=server: retired not in ids(s.gql(RECS, {"f": None}, token=rep.user), "recommendations"),
            "the retirement was heard",
            seconds=10,
        )
        assert retired not in ids(server.gql(SIMILAR, {"m": similar_to}), "similarMovies")
        assert retired not in ids(server.gql(SEARCH, {"q": title}), "searchMovies")


def test_a_dismissal_on_one_replica_holds_on_the_other(rep: Replicas) -> None:
    top = ids(rep.b.gql(RECS, {"f": None}, token=rep.user), "recommendations")[0]
    assert rep.a.gql(f"mutation {{ dismissMovie(movieId: {top}) }}", token=rep.user)["data"]["dismissMovie"]
    try:
        wait_until(
            lambda: top not in ids(rep.b.gql(RECS, {"f": None}, token=rep.user), "recommendations"),
            "the dismissal was heard",
            seconds=10,
        )
    finally:
        rep.a.gql(f"mutation {{ undismissMovie(movieId: {top}) }}", token=rep.user)


@pytest.mark.parametrize(
    ("movie", "field"),
    [
        ({"title": "", "genres": ["Drama"]}, "movie.title"),
        ({"title": "A", "genres": []}, "movie.genres"),
        ({"title": "A", "genres": ["Drama"], "year": 1200}, "movie.year"),
        ({"title": "A", "genres": ["Drama"], "imdbId": "tt12"}, "movie.imdbId"),
        ({"title": "A", "genres": ["Drama"], "tags": ["x" * 101]}, "movie.tags"),
    ],
    ids=["empty-title", "no-genres", "year", "imdb", "tag-length"],
)
def test_a_bad_movie_names_its_field_and_writes_nothing(rep: Replicas, movie: dict, field: str) -> None:
    total = rep.a.gql("{ movies(first: 1) { totalCount } }")["data"]["movies"]["totalCount"]
    refused = rep.a.gql(ADD, {"m": movie}, token=rep.admin)
    assert code(refused) == "BAD_USER_INPUT" and refused["errors"][0]["extensions"]["field"] == field
    assert rep.a.gql("{ movies(first: 1) { totalCount } }")["data"]["movies"]["totalCount"] == total


def test_only_an_admin_changes_the_catalog(rep: Replicas) -> None:
    movie = {"title": "Not yours", "genres": ["Drama"]}
    assert code(rep.a.gql(ADD, {"m": movie}, token=rep.user)) == "FORBIDDEN"
    assert code(rep.a.gql(ADD, {"m": movie})) == "UNAUTHENTICATED"
    assert code(rep.a.gql("mutation { retireMovie(movieId: 2) { retired } }", token=rep.user)) == "FORBIDDEN"
    assert (
        code(rep.a.gql("mutation { retireMovie(movieId: 999999) { retired } }", token=rep.admin))
        == "NOT_FOUND"
    )


@pytest.fixture
def rep(replicas: Replicas) -> Replicas:
    return replicas


def test_an_update_changes_what_filters_see(rep: Replicas) -> None:
    added = _add(rep, title=f"Quiet {uuid.uuid4().hex[:4]}", year=2032, genres=["Drama"])
    movie = added["movieId"]
    patched = rep.a.gql(
        f'mutation {{ updateMovie(movieId: {movie}, patch: {{genres: ["Horror"], year: 2033}}) {{ year genres }} }}',
        token=rep.admin,
    )
    assert patched["data"]["updateMovie"] == {"year": 2033, "genres": ["Horror"]}
    wait_until(
        lambda: (
            ids(
                rep.b.gql(RECS, {"f": {"anyGenres": ["Horror"], "yearFrom": 2033}}, token=rep.user),
                "recommendations",
            )
            == [movie]
        ),
        "the other replica sees the new genres",
        seconds=10,
    )


def test_a_movie_the_catalog_lists_twice_is_shown_once(rep: Replicas) -> None:
    """ML-100K lists 18 titles under two ids (Chasing Amy (1997) as 246 and 268): search,
    similar lists and recommendations show the better-known id only, as they do an added twin."""
    twins = {246, 268}
    found = ids(rep.a.gql(SEARCH, {"q": "Chasing Amy"}), "searchMovies")
    assert len(twins & set(found)) == 1, found
    shown = (twins & set(found)).pop()
    added = _add(rep, title="Chasing Amy", year=1997, genres=["Comedy", "Drama", "Romance"])["movieId"]
    twins.add(added)
    wait_until(
        lambda: twins & set(ids(rep.b.gql(SEARCH, {"q": "Chasing Amy"}), "searchMovies")) == {shown},
        "the other replica shows the known Chasing Amy only",
        seconds=10,
    )
    # by content its twins are the closest movies there are: none is listed beside it
    beside = ids(rep.a.gql(SIMILAR, {"m": shown}), "similarMovies")
    assert not twins & set(beside), beside
    page = ids(rep.a.gql(RECS.replace("first: 20", "first: 100"), token=rep.user), "recommendations")
    assert len(twins & set(page)) <= 1, page
