"""Property-based fuzzing: queries and mutations generated from the committed schema
(hypothesis-graphql), sent to a live server as an anonymous caller and as a user.

Whatever they ask, the answer is HTTP 200 and no error is INTERNAL (a client's mistake is
never the server's), and the server stays healthy. Examples are derandomised so that CI
runs the same cases every time; ``CINEREC_FUZZ_EXAMPLES`` runs more (and random ones when
``CINEREC_FUZZ_RANDOM=1``).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import mutations, queries

from tests.e2e.conftest import USER, Guarded

SCHEMA = (Path(__file__).resolve().parents[2] / "schema.graphql").read_text()
EXAMPLES = int(os.environ.get("CINEREC_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("CINEREC_FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


def _check(guarded: Guarded, query: str, token: str | None, address: int) -> None:
    response = guarded.post(query, token=token, client=f"10.200.{address // 250}.{address % 250}")
    if response.status_code == 429:  # the caller's bucket ran dry: a clear answer, not a failure
        assert response.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED", response.text
        return
    assert response.status_code == 200, (query, response.text)
    errors = response.json().get("errors") or []
    internal = [e for e in errors if e.get("extensions", {}).get("code") in ("INTERNAL", None)]
    assert not internal, (query, internal)


@pytest.fixture(scope="module")
def user_token(guarded: Guarded) -> str:
    return guarded.token(*USER)


@FUZZ
@given(query=queries(SCHEMA), anonymous=st.booleans(), address=st.integers(0, 60_000))
def test_generated_queries_never_fail_the_server(
    guarded: Guarded, user_token: str, query: str, anonymous: bool, address: int
) -> None:
    _check(guarded, query, None if anonymous else user_token, address)


@FUZZ
@given(
    mutation=mutations(
        SCHEMA,
        fields=[
            "register",
            "login",
            "rateMovie",
            "promoteModel",
            "rollbackModel",
            "deleteRating",
            "dismissMovie",
            "undismissMovie",
            "recordClick",
            "addMovie",
            "updateMovie",
            "retireMovie",
        ],
    ),
    address=st.integers(0, 60_000),
)
def test_generated_mutations_never_fail_the_server(
    guarded: Guarded, user_token: str, mutation: str, address: int
) -> None:
    # as a user: admin mutations must answer FORBIDDEN, never run
    _check(guarded, mutation, user_token, address)


@FUZZ
@given(query=queries(SCHEMA, fields=["recommendations", "homePage"]), address=st.integers(0, 60_000))
def test_generated_recommendation_arguments_never_fail_the_server(
    guarded: Guarded, user_token: str, query: str, address: int
) -> None:
    # filters, cursors, diversity and home pages with whatever values the schema admits
    _check(guarded, query, user_token, address)


def test_the_server_is_healthy_after_fuzzing(guarded: Guarded) -> None:
    assert httpx.get(f"{guarded.server.url}/healthz").json() == {"status": "ok"}
    assert guarded.gql("{ movie(movieId: 1) { title } }")["data"]["movie"]["title"] == "Movie 1, The"
