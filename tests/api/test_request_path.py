"""The request path: GraphQL over HTTP's media type, one batch for similar movies, and the
request-level checks every field relies on."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import Catalog

GRAPHQL_RESPONSE = "application/graphql-response+json"


def _post(catalog: Catalog, query: str, accept: str) -> httpx.Response:
    return catalog.server.http.post("/graphql", json={"query": query}, headers={"accept": accept})


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("{ movie(movieId: 1) { title ", "does not parse"),
        ("{ movie(movieId: 1) { nope } }", "does not validate"),
    ],
)
def test_a_request_error_is_a_400_under_graphql_response_json(catalog: Catalog, query: str, why: str) -> None:
    response = _post(catalog, query, GRAPHQL_RESPONSE)
    assert response.status_code == 400, why
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    body = response.json()
    assert "data" not in body and body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    legacy = _post(catalog, query, "application/json")  # application/json behaves as it did
    assert legacy.status_code == 200 and legacy.headers["content-type"].startswith("application/json")
    assert legacy.json()["data"] is None


def test_executed_operations_answer_200_under_either_media_type(catalog: Catalog) -> None:
    ok = _post(catalog, "{ movie(movieId: 1) { title } }", f"{GRAPHQL_RESPONSE}, application/json;q=0.9")
    assert ok.status_code == 200 and ok.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert ok.json()["data"]["movie"]["title"] == "Movie 1, The"
    # a field error (anonymous `me`) happens during execution: 200, with `data`
    field_error = _post(catalog, "{ me { userId } }", GRAPHQL_RESPONSE)
    assert field_error.status_code == 200 and field_error.json()["data"] is None
    assert field_error.json()["errors"][0]["path"] == ["me"]
    anything = _post(catalog, "{ genres }", "*/*")
    assert anything.headers["content-type"].startswith("application/json")
    preferred = _post(catalog, "{ genres }", f"application/json, {GRAPHQL_RESPONSE};q=0.5")
    assert preferred.headers["content-type"].startswith("application/json")


def test_a_malformed_body_is_a_400_in_the_media_type_asked_for(catalog: Catalog) -> None:
    response = catalog.server.http.post(
        "/graphql",
        content=b"[1, 2]",
        headers={"content-type": "application/json", "accept": GRAPHQL_RESPONSE},
    )
    assert response.status_code == 400 and response.headers["content-type"].startswith(GRAPHQL_RESPONSE)


def test_an_unknown_persisted_hash_is_the_protocols_first_step_not_a_400(catalog: Catalog) -> None:
    """A browser client (urql, Apollo) asks by hash first: a miss must not log a failed request."""
    extensions = '{"persistedQuery": {"version": 1, "sha256Hash": "' + "ab" * 32 + '"}}'
    response = catalog.server.http.get(
        "/graphql",
        params={"extensions": extensions},
        headers={"accept": f"{GRAPHQL_RESPONSE}, application/json;q=0.9"},
    )
    assert response.status_code == 200
    assert response.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    refused = _post(catalog, "{ movie(movieId: 1) { title ", GRAPHQL_RESPONSE)
    assert refused.status_code == 400  # a real request error still is one
