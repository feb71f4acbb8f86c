"""The committed SDL matches the served schema; internal failures never leak details."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from graphql import (
    build_client_schema,
    build_schema,
    get_introspection_query,
    lexicographic_sort_schema,
    print_schema,
)

from tests.api.conftest import Catalog
from tests.conftest import Databases, InProcessServer

ROOT = Path(__file__).resolve().parents[2]


def test_committed_sdl_matches_the_served_schema(catalog: Catalog) -> None:
    served = catalog.server.gql(get_introspection_query(descriptions=True, specified_by_url=True))["data"]
    committed = (ROOT / "schema.graphql").read_text()
    assert print_schema(lexicographic_sort_schema(build_client_schema(served))) == print_schema(
        lexicographic_sort_schema(build_schema(committed))
    ), "schema.graphql is stale: run `cinerec schema export`"


def test_database_failure_is_masked_as_internal(
    databases: Databases, in_process_factory: Callable[..., InProcessServer]
) -> None:
    settings = databases.settings("postgresql", llm_backend="none")
    settings.database_url = settings.database_url.rsplit("/", 1)[0] + "/cinerec_no_such_database"
    server = in_process_factory(settings)
    result = server.gql("{ movie(movieId: 1) { title } }")
    [error] = result["errors"]
    assert error["extensions"] == {"code": "INTERNAL"} and error["message"] == "internal error"
    assert "cinerec_no_such_database" not in str(result) and "Traceback" not in str(result)
    ready = server.http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["database"] == "unreachable"
