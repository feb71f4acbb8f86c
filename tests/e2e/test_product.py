"""The product API on the real server (PostgreSQL, ML-100K, a trained model): filters before
the top is taken, pages that continue one ranking, diversity, and what clients get wrong."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.e2e.conftest import Recommender, code

LIST = """query($u: Int!, $n: Int!, $f: RecommendationFilter, $a: String, $d: Float!) {
  recommendations(userId: $u, first: $n, filter: $f, after: $a, diversity: $d) {
    rank score cursor id movie { movieId title year genres ratingsCount }
  }
}"""


def recs(
    rec: Recommender,
    *,
    user: int = 1,
    first: int = 10,
    filter: dict | None = None,
    after: str | None = None,
    diversity: float = 0.0,
    token: str | None = None,
) -> dict[str, Any]:
    variables = {"u": user, "n": first, "f": filter, "a": after, "d": diversity}
    return rec.server.gql(LIST, variables, token=token or rec.admin_token)


def items(result: dict[str, Any]) -> list[dict[str, Any]]:
    assert "errors" not in result, result
    return result["data"]["recommendations"]


def test_a_filter_applies_before_the_top_is_taken(recommender: Recommender) -> None:
    unfiltered = items(recs(recommender, first=100))
    assert not any("Documentary" in r["movie"]["genres"] for r in unfiltered)  # none in the top 100
    found = items(recs(recommender, filter={"anyGenres": ["documentary"]}))
    assert len(found) == 10 and all("Documentary" in r["movie"]["genres"] for r in found)
    scores = [r["score"] for r in found]
    assert scores == sorted(scores, reverse=True) and [r["rank"] for r in found] == list(range(1, 11))
    rated = {
        e["node"]["movie"]["movieId"]
        for e in recommender.server.gql(
            "{ user(userId: 1) { ratings(first: 100) { edges { node { movie { movieId } } } } } }",
            token=recommender.admin_token,
        )["data"]["user"]["ratings"]["edges"]
    }
    assert not rated & {r["movie"]["movieId"] for r in found}


def test_every_filter_holds_for_every_item(recommender: Recommender) -> None:
    top = items(recs(recommender, first=3))
    exclude = [r["movie"]["movieId"] for r in top]
    f = {
        "allGenres": ["Drama", "Romance"],
        "yearFrom": 1990,
        "yearTo": 1996,
        "minRatings": 50,
        "excludeMovieIds": exclude,
    }
    found = items(recs(recommender, first=20, filter=f))
    assert found
    for r in found:
        movie = r["movie"]
        assert {"Drama", "Romance"} <= set(movie["genres"]) and 1990 <= movie["year"] <= 1996
        assert movie["ratingsCount"] >= 50 and movie["movieId"] not in exclude


def test_pages_continue_one_ranking(recommender: Recommender) -> None:
    whole = items(recs(recommender, first=15, diversity=0.5))
    pages, after = [], None
    for _ in range(3):
        page = items(recs(recommender, first=5, after=after, diversity=0.5))
        pages += page
        after = page[-1]["cursor"]
    assert [r["movie"]["movieId"] for r in pages] == [
        r["movie"]["movieId"] for r in whole
    ]  # no repeat, no gap
    assert [r["rank"] for r in pages] == list(range(1, 16))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"), "invalid after"),
        (lambda c: "x" + c, "invalid after"),
    ],
    ids=["tampered", "garbled"],
)
def test_a_tampered_cursor_is_refused(recommender: Recommender, change: Any, says: str) -> None:
    cursor = items(recs(recommender, first=2))[-1]["cursor"]
    refused = recs(recommender, first=2, after=change(cursor))
    assert code(refused) == "BAD_USER_INPUT" and says in refused["errors"][0]["message"]
    assert refused["errors"][0]["extensions"]["field"] == "after"


def test_a_cursor_is_bound_to_its_user_and_its_list(recommender: Recommender) -> None:
    cursor = items(recs(recommender, first=2))[-1]["cursor"]
    other_user = recs(recommender, user=2, first=2, after=cursor)
    assert code(other_user) == "BAD_USER_INPUT" and "another user" in other_user["errors"][0]["message"]
    other_list = recs(recommender, first=2, after=cursor, filter={"anyGenres": ["Comedy"]})
    assert code(other_list) == "BAD_USER_INPUT" and "another list" in other_list["errors"][0]["message"]


def test_diversity_widens_the_list_and_is_bounded(recommender: Recommender) -> None:
    from ml.diversity import intra_list_diversity

    plain = items(recs(recommender, first=10))
    diverse = items(recs(recommender, first=10, diversity=0.8))
    assert [r["movie"]["movieId"] for r in plain] != [r["movie"]["movieId"] for r in diverse]
    model = _model(recommender)  # the measure MMR trades relevance for: content embeddings apart

    def spread(rows: list[dict[str, Any]]) -> float:
        columns = model.item_index([r["movie"]["movieId"] for r in rows])
        return intra_list_diversity(columns, model.item_embeddings)

    assert spread(diverse) > spread(plain)
    assert [r["score"] for r in plain] == sorted((r["score"] for r in plain), reverse=True)
    refused = recs(recommender, diversity=1.5)
    assert code(refused) == "BAD_USER_INPUT" and refused["errors"][0]["extensions"]["field"] == "diversity"


@pytest.mark.parametrize(
    ("filter", "field"),
    [
        ({"anyGenres": ["Comedyy"]}, "filter.anyGenres"),
        ({"allGenres": ["Drama", "Nope"]}, "filter.allGenres"),
        ({"yearFrom": 2000, "yearTo": 1990}, "filter.yearFrom"),
        ({"minRatings": -1}, "filter.minRatings"),
        ({"excludeMovieIds": list(range(1001))}, "filter.excludeMovieIds"),
    ],
    ids=["unknown-any", "unknown-all", "inverted-years", "negative-count", "too-many-excluded"],
)
def test_a_bad_filter_names_its_field(recommender: Recommender, filter: dict, field: str) -> None:
    refused = recs(recommender, filter=filter)
    assert code(refused) == "BAD_USER_INPUT" and refused["errors"][0]["extensions"]["field"] == field


# -- feedback ---------------------------------------------------------------------------------


def _model(rec: Recommender) -> Any:
    return rec.server.app.state.cinerec.models.current.model


def _score_of(result: list[dict[str, Any]], movie: int) -> float | None:
    return next((r["score"] for r in result if r["movie"]["movieId"] == movie), None)


def test_a_dismissal_hides_the_movie_and_counts_against_what_is_like_it(recommender: Recommender) -> None:
    token = recommender.user_token  # user 1
    before = items(recs(recommender, first=100, token=token))
    dismissed = before[0]["movie"]["movieId"]
    model = _model(recommender)
    ease = model.components["ease"].weights
    column = int(model.item_index([dismissed])[0])
    listed = [r["movie"]["movieId"] for r in before[1:]]
    # the listed movie EASE ties most to the dismissed one: its score must fall
    closest = max(listed, key=lambda m: ease[column, int(model.item_index([m])[0])])
    gql = recommender.server.gql
    assert (
        gql(f"mutation {{ dismissMovie(movieId: {dismissed}) }}", token=token)["data"]["dismissMovie"] is True
    )
    assert (
        gql(f"mutation {{ dismissMovie(movieId: {dismissed}) }}", token=token)["data"]["dismissMovie"]
        is False
    )
    try:
        after = items(recs(recommender, first=100, token=token))
        assert dismissed not in {r["movie"]["movieId"] for r in after}
        assert _score_of(after, closest) < _score_of(before, closest)  # negative taste, not only a filter
        kept = items(recs(recommender, first=100, token=token, filter={"includeDismissed": True}))
        assert dismissed in {r["movie"]["movieId"] for r in kept}
    finally:
        assert gql(f"mutation {{ undismissMovie(movieId: {dismissed}) }}", token=token)["data"][
            "undismissMovie"
        ]
    again = items(recs(recommender, first=1, token=token))
    assert again[0]["movie"]["movieId"] == dismissed and again[0]["score"] == pytest.approx(
        before[0]["score"]
    )


def test_dismissing_an_unknown_movie_names_the_field(recommender: Recommender) -> None:
    refused = recommender.server.gql(
        "mutation { dismissMovie(movieId: 999999) }", token=recommender.user_token
    )
    assert code(refused) == "BAD_USER_INPUT" and refused["errors"][0]["extensions"]["field"] == "movieId"
    assert code(recommender.server.gql("mutation { dismissMovie(movieId: 1) }")) == "UNAUTHENTICATED"


def test_a_deleted_rating_leaves_the_statistics_the_history_and_the_model_rows(
    recommender: Recommender,
) -> None:
    token, gql = recommender.user_token, recommender.server.gql
    state = recommender.server.app.state.cinerec
    mine = "{ me { ratingsCount ratings(first: 100) { edges { node { rating movie { movieId } } } } } }"
    before = gql(mine, token=token)["data"]["me"]
    trained = {e["node"]["movie"]["movieId"]: e["node"]["rating"] for e in before["ratings"]["edges"]}
    movie, rating = next(iter(trained.items()))  # a rating the model was trained on
    count = gql(f"{{ movie(movieId: {movie}) {{ ratingsCount }} }}")["data"]["movie"]["ratingsCount"]
    deleted = gql(f"mutation {{ deleteRating(movieId: {movie}) {{ ratingsCount }} }}", token=token)
    assert deleted["data"]["deleteRating"]["ratingsCount"] == count - 1
    try:
        after = gql(mine, token=token)["data"]["me"]
        assert after["ratingsCount"] == before["ratingsCount"] - 1
        assert movie not in {e["node"]["movie"]["movieId"] for e in after["ratings"]["edges"]}
        history = asyncio.run_coroutine_threadsafe(
            state.services.recommendations.histories.read(_model(recommender), [1]), _loop(recommender)
        ).result(30)
        assert movie not in dict(history.pairs()[1])
        column = int(_model(recommender).item_index([movie])[0])
        assert history.matrix()[0, column] == 0  # the model's stored row no longer holds it
        missing = gql(f"mutation {{ deleteRating(movieId: {movie}) {{ ratingsCount }} }}", token=token)
        assert code(missing) == "NOT_FOUND"
    finally:
        gql(f"mutation {{ rateMovie(movieId: {movie}, rating: {rating}) {{ rating }} }}", token=token)
    assert gql(f"{{ movie(movieId: {movie}) {{ ratingsCount }} }}")["data"]["movie"]["ratingsCount"] == count


def _loop(rec: Recommender) -> Any:
    """The server thread's event loop (the services' async parts run on it)."""
    return rec.server.server.servers[0].get_loop()


# -- a home page ---------------------------------------------------------------------------------

HOME = """query($u: Int!) { homePage(userId: $u) { rows { title kind items(first: 10) {
  rank score cursor movie { movieId title genres } evidence { reason movie { title } } } } } }"""


def _metric(rec: Recommender, name: str) -> float:
    import httpx

    text = httpx.get(f"{rec.server.url}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_a_home_page_is_titled_rows_of_one_batch_with_no_movie_twice(recommender: Recommender) -> None:
    batches = _metric(recommender, "cinerec_model_score_batches_total")
    page = recommender.server.gql(HOME, {"u": 1}, token=recommender.user_token)
    assert "errors" not in page, page
    assert _metric(recommender, "cinerec_model_score_batches_total") - batches == 1  # one scoring call
    rows = page["data"]["homePage"]["rows"]
    kinds = [r["kind"] for r in rows]
    assert kinds[:2] == ["TOP", "BECAUSE"] and "GENRE" in kinds and "POPULAR" in kinds and len(rows) >= 4
    titles = {r["kind"]: r["title"] for r in rows}
    assert titles["TOP"] == "Top picks for you"
    assert titles["BECAUSE"].startswith("Because you liked ") and titles["BECAUSE"].endswith(")")
    assert titles["GENRE"].endswith(" picks for you")
    assert titles["POPULAR"] == "Popular in April 1998"  # ML-100K's newest ratings: not "this month"
    movies = [i["movie"]["movieId"] for r in rows for i in r["items"]]
    assert len(movies) == len(set(movies)) and all(len(r["items"]) == 10 for r in rows)
    genre = titles["GENRE"].removesuffix(" picks for you")
    assert all(genre in i["movie"]["genres"] for r in rows if r["kind"] == "GENRE" for i in r["items"])
    assert all(i["evidence"] and i["cursor"] is None for r in rows for i in r["items"])
    assert page["extensions"]["recommender"]["version"] == "1"


def test_another_users_home_page_is_forbidden(recommender: Recommender) -> None:
    assert code(recommender.server.gql(HOME, {"u": 2}, token=recommender.user_token)) == "FORBIDDEN"
    assert code(recommender.server.gql(HOME, {"u": 999999}, token=recommender.admin_token)) == "NOT_FOUND"


# -- clicks ---------------------------------------------------------------------------------------

CLICK = "mutation($r: ID!) { recordClick(recommendationId: $r) }"


def test_a_click_is_counted_once_by_its_recommendation_and_only_for_its_user(
    recommender: Recommender,
) -> None:
    shown = items(recs(recommender, first=3, token=recommender.user_token))
    clicks = _metric(recommender, 'cinerec_recommendation_clicks_total{arm="none",experiment="none"}')
    gql = recommender.server.gql
    assert gql(CLICK, {"r": shown[0]["id"]}, token=recommender.user_token)["data"]["recordClick"] is True
    assert gql(CLICK, {"r": shown[0]["id"]}, token=recommender.user_token)["data"]["recordClick"] is False
    assert (
        _metric(recommender, 'cinerec_recommendation_clicks_total{arm="none",experiment="none"}')
        == clicks + 1
    )
    tampered = shown[1]["id"][:-3] + ("AAA" if not shown[1]["id"].endswith("AAA") else "BBB")
    refused = gql(CLICK, {"r": tampered}, token=recommender.user_token)
    assert (
        code(refused) == "BAD_USER_INPUT"
        and refused["errors"][0]["extensions"]["field"] == "recommendationId"
    )
    others = items(recs(recommender, user=2, first=1))  # shown to user 2 (asked by an admin)
    assert code(gql(CLICK, {"r": others[0]["id"]}, token=recommender.user_token)) == "FORBIDDEN"
    assert code(gql(CLICK, {"r": shown[2]["id"]})) == "UNAUTHENTICATED"


def test_an_experiment_reports_click_through_per_arm(recommender: Recommender) -> None:
    gql, admin = recommender.server.gql, recommender.admin_token
    assert "errors" not in gql(
        'mutation { promoteModel(version: "1", alias: "twin") { version } }', token=admin
    )
    name = "clicks-per-arm"
    started = gql(
        f'mutation {{ startExperiment(name: "{name}", arms: [{{alias: "champion", weight: 1}}, '
        '{alias: "twin", weight: 1}]) { name } }',
        token=admin,
    )
    assert "errors" not in started, started
    try:
        shown = items(recs(recommender, first=5, token=recommender.user_token))  # user 1, in one arm
        for item in shown[:2]:
            assert gql(CLICK, {"r": item["id"]}, token=recommender.user_token)["data"]["recordClick"]
        report = gql(
            f'{{ experiment(name: "{name}") {{ arms {{ alias users impressions clicks clickThroughRate '
            "clickThroughRateLow clickThroughRateHigh } } }",
            token=admin,
        )["data"]["experiment"]
        arm = next(a for a in report["arms"] if a["users"])
        assert (
            arm["impressions"] == 5 and arm["clicks"] == 2 and arm["clickThroughRate"] == pytest.approx(0.4)
        )
        assert arm["clickThroughRateLow"] <= 0.4 <= arm["clickThroughRateHigh"]
        other = next(a for a in report["arms"] if a["alias"] != arm["alias"])
        assert other["clicks"] == 0
    finally:
        gql(f'mutation {{ stopExperiment(name: "{name}") {{ active }} }}', token=admin)
        from app.infra.model_registry import registry_for
        from ml.registry import RECOMMENDER

        # the registry outlives this test: other tests read version 1's aliases
        registry_for(recommender.settings).client.delete_registered_model_alias(RECOMMENDER, "twin")


# -- a page after the model changed ---------------------------------------------------------------


def test_a_cursor_from_before_a_promotion_is_refused_with_its_reason(
    recommender: Recommender, tmp_path: Any
) -> None:
    from app.infra.model_registry import registry_for
    from ml.registry import RECOMMENDER

    registry = registry_for(recommender.settings)
    folder = registry.download(RECOMMENDER, "1", tmp_path)
    run_id, source = registry.log_run(
        experiment=RECOMMENDER, params={"copy_of": 1}, metrics={}, artifacts=folder
    )
    version = registry.register(RECOMMENDER, source=source, run_id=run_id)
    cursor = items(recs(recommender, first=2))[-1]["cursor"]
    gql, admin = recommender.server.gql, recommender.admin_token
    assert "errors" not in gql(
        f'mutation {{ promoteModel(version: "{version}") {{ version }} }}', token=admin
    )
    try:
        refused = recs(recommender, first=2, after=cursor)
        assert code(refused) == "BAD_USER_INPUT"
        assert refused["errors"][0]["extensions"]["reason"] == "MODEL_CHANGED"
        assert "start again from the first page" in refused["errors"][0]["message"]
        fresh = items(recs(recommender, first=2))  # the first page of the new ranking
        assert items(recs(recommender, first=2, after=fresh[-1]["cursor"]))
    finally:  # back to version 1 with the champion's history as it was (other tests roll back)
        assert gql("mutation { rollbackModel { version } }", token=admin)["data"]["rollbackModel"] == {
            "version": "1"
        }
