"""Property-based fuzzing: queries and mutations generated from the committed schema
(hypothesis-graphql), sent to a live server as an anonymous caller and as a user.

Whatever they ask, the answer is HTTP 200 and no error is INTERNAL (a client's mistake is
never the server's), and the server stays healthy. Examples are derandomised so that CI
runs the same cases every time; ``CINEREC_FUZZ_EXAMPLES`` runs more (and random ones when
``CINEREC_FUZZ_RANDOM=1``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    build_schema,
    get_named_type,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import mutations, queries

from tests.e2e.conftest import ADMIN, USER, Guarded

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
            "createApiKey",
            "revokeApiKey",
            "deleteAccount",
            "deleteMyAccount",
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


# -- every String and ID argument with characters beyond ASCII, every Int literal out of range ------

ODD = "\u00e9t\u00e9 \u4e2d\u6587 \U0001f3ac \u202eabc.\u00e9"  # accents, CJK, emoji, RTL override, a dot


def _value(type_: GraphQLInputType, text: str, depth: int = 0) -> str:
    """A literal of ``type_``: ``text`` for String and ID, something valid for the rest."""
    if isinstance(type_, GraphQLNonNull):
        return _value(type_.of_type, text, depth)
    if isinstance(type_, GraphQLList):
        return f"[{_value(type_.of_type, text, depth)}]"
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    if isinstance(type_, GraphQLInputObjectType):
        fields = [
            f"{name}: {_value(field.type, text, depth + 1)}"
            for name, field in type_.fields.items()
            if depth < 2 and (isinstance(field.type, GraphQLNonNull) or _takes_text(field.type))
        ]
        return "{" + ", ".join(fields) + "}"
    return {"Int": "1", "Float": "1.0", "Boolean": "true"}.get(
        type_.name, json.dumps(text, ensure_ascii=False)
    )


def _takes_text(type_: GraphQLInputType) -> bool:
    named = get_named_type(type_)
    if named.name in ("String", "ID"):
        return True
    return isinstance(named, GraphQLInputObjectType) and any(
        _takes_text(f.type) for f in named.fields.values()
    )


def _documents(root: str) -> list[tuple[str, str]]:
    """(field, document) for each field of ``root`` that takes text anywhere in its arguments."""
    schema = build_schema(SCHEMA)
    fields = getattr(schema, f"{root.lower()}_type").fields
    out = []
    for name, field in fields.items():
        if not any(_takes_text(a.type) for a in field.args.values()):
            continue
        args = ", ".join(
            f"{arg}: {_value(a.type, ODD)}"
            for arg, a in field.args.items()
            if isinstance(a.type, GraphQLNonNull) or _takes_text(a.type)
        )
        named = get_named_type(field.type)
        selection = " { __typename }" if isinstance(named, GraphQLObjectType) else ""
        keyword = "" if root == "Query" else "mutation "
        out.append((name, f"{keyword}{{ {name}({args}){selection} }}"))
    return out


@pytest.mark.parametrize(
    ("field", "document", "admin"),
    [(f, d, False) for f, d in _documents("Query") + _documents("Mutation")]
    + [(f, d, True) for f, d in _documents("Query")],
)
def test_text_beyond_ascii_in_every_string_and_id_argument(
    guarded: Guarded, user_token: str, field: str, document: str, admin: bool
) -> None:
    """Queries as a user and as an admin; mutations as a user (an admin's would change the
    shared catalog: they answer FORBIDDEN here, and their text checks are tested in
    test_security_round3)."""
    token = guarded.token(*ADMIN) if admin else user_token
    _check(guarded, document, token, sum(map(ord, field)) % 60_000)


@pytest.mark.parametrize("literal", ["9" * 5000, "-" + "9" * 4400, "2147483648", "1" + "0" * 400])
def test_int_literals_out_of_range_in_every_int_argument(
    guarded: Guarded, user_token: str, literal: str
) -> None:
    schema = build_schema(SCHEMA)
    for name, field in schema.query_type.fields.items():  # type: ignore[union-attr]
        for arg, definition in field.args.items():
            if get_named_type(definition.type).name != "Int":
                continue
            others = ", ".join(
                f"{o}: {_value(d.type, 'x')}"
                for o, d in field.args.items()
                if o != arg and isinstance(d.type, GraphQLNonNull)
            )
            named = get_named_type(field.type)
            selection = " { __typename }" if isinstance(named, GraphQLObjectType) else ""
            document = f"{{ {name}({arg}: {literal}{', ' + others if others else ''}){selection} }}"
            response = guarded.post(document, token=user_token, client="10.201.0.1")
            assert response.status_code in (200, 400, 429), (document[:200], response.text[:500])
            codes = {e["extensions"]["code"] for e in response.json().get("errors") or []}
            assert codes and codes <= {"BAD_USER_INPUT", "RATE_LIMITED"}, (name, arg, codes)
