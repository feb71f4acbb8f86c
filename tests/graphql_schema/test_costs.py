"""Every field's price is declared beside it (the IBM cost directives) and printed in the SDL:
a field that does work with no declared cost, or a list with no declared size, fails here
instead of being priced by a default."""

from __future__ import annotations

import pytest
from graphql import GraphQLObjectType, GraphQLSchema, get_named_type, is_list_type, is_non_null_type

from app.infra.settings import Settings
from graphql_schema.costs import declared, type_weight
from graphql_schema.schema import build_schema

ROOTS = {"Query", "Mutation", "Subscription"}


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return build_schema(Settings(env="test"))._schema


def _objects(schema: GraphQLSchema) -> list[GraphQLObjectType]:
    return [
        t
        for t in schema.type_map.values()
        if isinstance(t, GraphQLObjectType) and not t.name.startswith("__")
    ]


def _resolved(field: object) -> bool:
    definition = (getattr(field, "extensions", None) or {}).get("strawberry-definition")
    return getattr(definition, "base_resolver", None) is not None


def test_every_type_declares_its_weight(schema: GraphQLSchema) -> None:
    missing = [t.name for t in _objects(schema) if t.name not in ROOTS and type_weight(t) is None]
    assert not missing, f"object types without @cost: {missing}"


def test_every_field_that_does_work_declares_its_cost(schema: GraphQLSchema) -> None:
    found = declared(schema)
    missing = [
        f"{t.name}.{name}"
        for t in _objects(schema)
        for name, field in t.fields.items()
        if (_resolved(field) or t.name in ROOTS) and found[f"{t.name}.{name}"].weight is None
    ]
    assert not missing, f"fields with a resolver and no @cost: {missing}"


def test_every_list_declares_its_size(schema: GraphQLSchema) -> None:
    found = declared(schema)
    sized = {
        f"{get_named_type(t.fields[name].type).name}.{inner}"
        for t in _objects(schema)
        for name in t.fields
        for inner in found[f"{t.name}.{name}"].sized_fields
    }
    missing = []
    for t in _objects(schema):
        for name, field in t.fields.items():
            type_ = field.type.of_type if is_non_null_type(field.type) else field.type
            owner = f"{t.name}.{name}"
            entry = found[owner]
            if is_list_type(type_) and owner not in sized and entry.slicing is None and entry.assumed is None:
                missing.append(owner)
    assert not missing, f"lists without @listSize: {missing}"


def test_the_sdl_carries_the_directives_as_the_ibm_specification_names_them() -> None:
    sdl = str(build_schema(Settings(env="test")))
    assert "directive @cost(weight: String!) on ARGUMENT_DEFINITION | ENUM | FIELD_DEFINITION" in sdl
    assert (
        "directive @listSize(assumedSize: Int, slicingArguments: [String!], sizedFields: [String!], "
        "requireOneSlicingArgument: Boolean = true) on FIELD_DEFINITION"
    ) in sdl
    assert 'explanation: String! @cost(weight: "470")' in sdl
    assert (
        '@listSize(slicingArguments: ["first"], sizedFields: ["edges"], requireOneSlicingArgument: true)'
        in sdl
    )
    assert 'type Movie @cost(weight: "1")' in sdl
