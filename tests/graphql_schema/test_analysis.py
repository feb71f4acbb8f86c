"""Pricing a document as it will execute: sizes from literals, variables and defaults;
fragments counted once where execution runs them once; depth and aliases from one walk."""

from __future__ import annotations

import pytest
from graphql import FragmentDefinitionNode, GraphQLSchema, OperationDefinitionNode, parse

from app.infra.settings import Settings
from graphql_schema import analysis
from graphql_schema.analysis import Price, TooComplex, price_operation
from graphql_schema.costs import EXPLANATION
from graphql_schema.schema import build_schema


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return build_schema(Settings(env="test"))._schema


def price(schema: GraphQLSchema, query: str, variables: dict | None = None) -> Price:
    document = parse(query)
    [operation] = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    return price_operation(schema, operation, fragments, variables)


def test_list_sizes_come_from_literals_variables_and_defaults(schema: GraphQLSchema) -> None:
    # 10 for the scoring call, then each item: the Recommendation (1) and its movie (1)
    assert price(schema, "{ recommendations(userId: 1, first: 5) { movie { title } } }").cost == 10 + 5 * 2
    by_variable = "query($n: Int!) { recommendations(userId: 1, first: $n) { movie { title } } }"
    assert price(schema, by_variable, {"n": 7}).cost == 10 + 7 * 2
    assert price(schema, "{ recommendations(userId: 1) { rank } }").cost == 10 + 10 * 1  # default first: 10


def test_expensive_fields_carry_their_cost(schema: GraphQLSchema) -> None:
    query = "{ recommendations(userId: 1, first: 100) { explanation } }"
    assert price(schema, query).cost == 10 + 100 * (1 + EXPLANATION)


def test_connections_multiply_their_edges(schema: GraphQLSchema) -> None:
    query = "{ movies(first: 30) { totalCount edges { node { title genres } } pageInfo { endCursor } } }"
    # movies 1, totalCount 1, 30 edges of (edge 1 + node 1), pageInfo 1
    assert price(schema, query).cost == 1 + 1 + 30 * 2 + 1


def test_a_fragment_spread_many_times_is_priced_once_as_it_runs_once(schema: GraphQLSchema) -> None:
    frags = ["fragment F0 on Movie { title }"]
    frags += [f"fragment F{i} on Movie {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 40)]
    chain = price(schema, "query { movie(movieId: 1) { ...F39 } }\n" + "\n".join(frags))
    assert chain == Price(cost=1, depth=2, aliases=0)


def test_merged_fields_from_several_fragments_are_one_field(schema: GraphQLSchema) -> None:
    query = """{ recommendations(userId: 1, first: 4) { ...A ...B } }
      fragment A on Recommendation { movie { title } }
      fragment B on Recommendation { movie { year } rank }"""
    assert price(schema, query).cost == 10 + 4 * (1 + 1)


def test_aliases_and_skipped_fields(schema: GraphQLSchema) -> None:
    query = "{ a: movie(movieId: 1) { title } b: movie(movieId: 2) { title } c: genres }"
    assert price(schema, query) == Price(cost=3, depth=2, aliases=3)  # genres: one read, 1
    skipped = (
        "query($s: Boolean!) { a: movie(movieId: 1) { title } b: movie(movieId: 2) @skip(if: $s) { title } }"
    )
    assert price(schema, skipped, {"s": True}).aliases == 1
    assert price(schema, skipped, {"s": False}).aliases == 2


def test_depth_counts_levels_as_graphql_depth_limits_do(schema: GraphQLSchema) -> None:
    deep = "{ user(userId: 1) { ratings { edges { node { movie { title } } } } } }"
    assert price(schema, deep).depth - 1 == 5  # Strawberry's QueryDepthLimiter also says 5


def test_pricing_is_bounded_in_steps(schema: GraphQLSchema, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analysis, "MAX_STEPS", 10)
    many = "{ " + " ".join(f"m{i}: movie(movieId: {i}) {{ title }}" for i in range(20)) + " }"
    with pytest.raises(TooComplex):
        price(schema, many)


def test_explanations_are_counted_per_item_once(schema: GraphQLSchema) -> None:
    query = """query($n: Int) { a: recommendations(userId: 1, first: $n) { explanation explanationSource evidence { reason } }
      me { recommendations(first: 2) { explanation } } b: recommendations(userId: 2, first: 4) { rank } }"""
    assert price(schema, query, {"n": 3}).generations == 3 + 2
    # asking for the text and its source is one generation, priced once
    both = "{ recommendations(userId: 1, first: 4) { explanation explanationSource } }"
    one = "{ recommendations(userId: 1, first: 4) { explanation } }"
    assert price(schema, both).cost == price(schema, one).cost
    assert price(schema, "{ movie(movieId: 1) { title } }").generations == 0


def test_introspection_is_priced_like_any_field(schema: GraphQLSchema) -> None:
    types = list(schema.type_map.values())
    fields = sum(
        len(getattr(t, "fields", {})) for t in types if not hasattr(t, "of_type") and hasattr(t, "interfaces")
    )
    # the __schema object, then each type an object
    assert price(schema, "{ __schema { types { name } } }").cost == 1 + len(types)
    # read for every type, a list is priced at its average: the total is the schema's count
    assert price(schema, "{ __schema { types { fields { name } } } }").cost == 1 + len(types) + fields
    # one type named: its lists are priced at the largest any type holds
    most = max(len(t.fields) for t in types if hasattr(t, "interfaces"))
    assert price(schema, '{ __type(name: "Query") { fields { name } } }').cost == 1 + most
    # aliases multiply it as they multiply the work
    aliased = "{ __schema { a: types { name } b: types { name } } }"
    assert price(schema, aliased).cost == 1 + 2 * len(types)


def test_introspection_depth_is_counted_apart(schema: GraphQLSchema) -> None:
    from graphql import get_introspection_query

    standard = price(schema, get_introspection_query(descriptions=True))
    assert standard.depth == 0 and standard.introspection_depth - 1 == 14  # GraphiQL's query
    chain = '{ __type(name: "Query") { ' + "ofType { " * 16 + "name" + " }" * 16 + " } }"
    assert price(schema, chain).introspection_depth - 1 == 17
