"""The schema layer on its own, no server: permissions, the checks before execution, and how
errors are coded and masked."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from graphql import GraphQLError
from sqlalchemy.exc import OperationalError

from app.infra.auth import Principal, Role, Scope
from app.infra.errors import BadUserInput, Forbidden, Unauthenticated
from app.infra.settings import Settings
from app.services.api_keys import key_principal
from graphql_schema.context import Context
from graphql_schema.extensions import ErrorCodes
from graphql_schema.permissions import IsAdmin, IsAuthenticated, OwnerOrAdmin
from graphql_schema.schema import build_schema

USER = Principal(account_id=1, user_id=7, role=Role.USER)
ADMIN = Principal(account_id=2, user_id=99, role=Role.ADMIN)


class FakeContext:
    """Just what permissions and the guard read."""

    def __init__(self, principal: Principal | None = None, auth_error: Exception | None = None) -> None:
        self.principal, self.auth_error = principal, auth_error
        self.is_websocket = False
        self.price = None
        self.app = None

    def require_principal(self) -> Principal:
        if self.auth_error is not None:
            raise self.auth_error
        if self.principal is None:
            raise Unauthenticated("authentication required")
        return self.principal

    require_user = Context.require_user  # the real rule: a service's key is no user


def info(context: FakeContext) -> SimpleNamespace:
    return SimpleNamespace(context=context)


def test_is_authenticated_raises_each_callers_own_reason() -> None:
    permission = IsAuthenticated()
    with pytest.raises(Unauthenticated, match="expired"):
        permission.has_permission(None, info(FakeContext(auth_error=Unauthenticated("token expired"))))
    with pytest.raises(Unauthenticated, match="authentication required"):
        permission.has_permission(None, info(FakeContext()))  # not the previous caller's message
    assert permission.has_permission(None, info(FakeContext(USER)))
    assert permission.message.startswith("authentication required")  # the shared instance is untouched


def test_a_services_key_reads_within_its_scope_and_is_never_a_user() -> None:
    catalog, recommend, admin = (key_principal(i, f"k{i}", s, f"{i:012d}") for i, s in enumerate(Scope, 1))
    for key in (catalog, recommend, admin):
        with pytest.raises(Forbidden, match="acts for no user"):
            IsAuthenticated().has_permission(None, info(FakeContext(key)))
        assert key.user_id == 0 and key.account_id < 0  # no person's user or account
    owner = OwnerOrAdmin()
    assert not owner.has_permission(None, info(FakeContext(catalog)), user_id=7)
    assert owner.has_permission(None, info(FakeContext(recommend)), user_id=7)
    assert not owner.has_permission(None, info(FakeContext(catalog)), user_id=0)  # not even "its own"
    assert not IsAdmin().has_permission(None, info(FakeContext(recommend)))
    assert IsAdmin().has_permission(None, info(FakeContext(admin)))


def test_owner_or_admin_and_is_admin() -> None:
    owner = OwnerOrAdmin()
    assert owner.has_permission(None, info(FakeContext(USER)), user_id=7)
    assert not owner.has_permission(None, info(FakeContext(USER)), user_id=8)
    assert owner.has_permission(None, info(FakeContext(ADMIN)), user_id=8)
    assert owner.has_permission(SimpleNamespace(user_id=7), info(FakeContext(USER)))  # the parent User
    with pytest.raises(Unauthenticated):
        owner.has_permission(None, info(FakeContext()), user_id=7)
    assert IsAdmin().has_permission(None, info(FakeContext(ADMIN)))
    assert not IsAdmin().has_permission(None, info(FakeContext(USER)))


@pytest.fixture(scope="module")
def schema():
    return build_schema(Settings(env="test", max_query_depth=3, max_aliases=2, max_query_cost=100))


async def run(schema, query: str, variables: dict | None = None, websocket: bool = False) -> dict:
    context = FakeContext()
    context.is_websocket = websocket
    result = await schema.execute(query, variable_values=variables, context_value=context)
    assert result.errors, result
    return result.errors[0].extensions | {"message": result.errors[0].message}


@pytest.mark.parametrize(
    ("query", "code", "says"),
    [
        (
            "{ user(userId: 1) { ratings { edges { node { movie { title } } } } } }",
            "QUERY_TOO_COMPLEX",
            "depth",
        ),
        ("{ a: genres b: genres c: genres }", "QUERY_TOO_COMPLEX", "aliases"),
        ("{ recommendations(userId: 1, first: 50) { explanation } }", "QUERY_TOO_COMPLEX", "cost"),
        ("query A { genres } query B { genres }", "BAD_USER_INPUT", "operationName"),
        ('{ movies(filter: {genre: "a\\u0000"}) { totalCount } }', "BAD_USER_INPUT", "NUL"),
        ("subscription { explanation(userId: 1, movieId: 1) { text } }", "BAD_USER_INPUT", "websockets"),
    ],
)
async def test_the_guard_refuses_before_anything_runs(schema, query: str, code: str, says: str) -> None:
    found = await run(schema, query)
    assert found["code"] == code and says in found["message"]


async def test_refusals_carry_their_numbers(schema) -> None:
    found = await run(
        schema, "query($n: Int!) { recommendations(userId: 1, first: $n) { rank } }", {"n": 100}
    )
    assert (found["cost"], found["limit"]) == (10 + 100, 100)


def _coded(error: GraphQLError) -> GraphQLError:
    [out] = ErrorCodes()._process_errors([error])
    return out


def test_errors_are_coded_and_internal_ones_masked() -> None:
    bug = _coded(GraphQLError("boom: SELECT secret FROM x", original_error=ValueError("SELECT secret")))
    assert bug.message == "internal error" and bug.extensions == {"code": "INTERNAL"}
    ours = _coded(GraphQLError("nope", original_error=Forbidden("nope")))
    assert ours.extensions == {"code": "FORBIDDEN"}
    client = _coded(GraphQLError("Cannot query field 'x'"))
    assert client.extensions == {"code": "BAD_USER_INPUT"}
    outage = _coded(
        GraphQLError("x", original_error=OperationalError("SELECT 1", {}, Exception("connection was closed")))
    )
    assert outage.extensions == {"code": "UNAVAILABLE"} and "unreachable" in outage.message
    bad = BadUserInput("first must be at most 100", field="first")
    assert _coded(GraphQLError(bad.message, original_error=bad, extensions=bad.extensions)).extensions == {
        "code": "BAD_USER_INPUT",
        "field": "first",
    }
