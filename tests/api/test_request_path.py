"""The request path: GraphQL over HTTP's media type, one batch for similar movies, and the
request-level checks every field relies on."""

from __future__ import annotations

import httpx
import pytest

from app.server.web_client import CLIENT
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


@pytest.mark.parametrize("name", ["app.js", "app.css", "graphiql.js"])
def test_the_clients_files_go_compressed_where_the_browser_takes_gzip_and_revalidate(
    catalog: Catalog, name: str
) -> None:
    on_disk = (CLIENT / name).read_bytes()
    http = catalog.server.http
    packed = http.get(f"/client/{name}", headers={"accept-encoding": "gzip, deflate, br"})
    assert packed.status_code == 200 and packed.headers["content-encoding"] == "gzip"
    assert packed.content == on_disk  # httpx undid the gzip: the same bytes
    assert packed.num_bytes_downloaded < len(on_disk) / 2, (packed.num_bytes_downloaded, len(on_disk))
    assert "Accept-Encoding" in packed.headers["vary"] and packed.headers["cache-control"] == "no-cache"
    assert packed.headers["content-type"].startswith(
        ("text/javascript", "application/javascript", "text/css")
    )
    plain = http.get(f"/client/{name}", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.num_bytes_downloaded == len(on_disk)
    refused = http.get(f"/client/{name}", headers={"accept-encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers
    # the browser's next visit: unchanged, so 304 and no body, whichever encoding it kept
    for kept in (packed, plain):
        again = http.get(
            f"/client/{name}", headers={"accept-encoding": "gzip", "if-none-match": kept.headers["etag"]}
        )
        assert again.status_code == 304 and not again.content
