"""Each field's price, declared beside the field as the IBM GraphQL cost directives
(``@cost`` and ``@listSize``, the specification Apollo Router's demand control reads), and
printed in the SDL so that clients and gateways see what we charge.

- ``@cost(weight)`` on an object type: what one object of it costs where a field returns it
  (1 for every type here); on a field: what the field itself costs, beyond the objects it
  returns (a model call, a read). Scalars and enums weigh 0, as the specification says.
- ``@listSize(slicingArguments: ["first"])``: a list holds at most ``first`` items;
  ``sizedFields: ["edges"]`` says which list of a connection ``first`` sizes;
  ``assumedSize`` bounds a list without a ``first``.

``graphql_schema.analysis`` prices operations from these declarations and nothing else; a
test walks the schema and fails on a field that does work with no declared cost, or on a
list with no declared size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import strawberry
from graphql import GraphQLObjectType, GraphQLSchema
from strawberry.schema_directive import Location


@strawberry.schema_directive(
    name="cost",
    locations=[
        Location.ARGUMENT_DEFINITION,
        Location.ENUM,
        Location.FIELD_DEFINITION,
        Location.INPUT_FIELD_DEFINITION,
        Location.OBJECT,
        Location.SCALAR,
    ],
    description="The weight of a field or type, as the IBM GraphQL cost directive specification defines it.",
)
class Cost:
    weight: str


@strawberry.schema_directive(
    name="listSize",
    locations=[Location.FIELD_DEFINITION],
    description="How many items a list field returns, as the IBM GraphQL cost directive specification "
    "defines it.",
)
class ListSize:
    # unset arguments are left out of the printed SDL
    assumed_size: int | None = strawberry.UNSET
    slicing_arguments: list[str] | None = strawberry.UNSET
    sized_fields: list[str] | None = strawberry.UNSET
    require_one_slicing_argument: bool | None = True


@strawberry.schema_directive(
    name="pageDepthCost",
    locations=[Location.FIELD_DEFINITION],
    description="Work that grows with how deep a page goes: `weight` per 100 ranks the cursor skips, and "
    "with diversity above 0 and a depth (the cursor's rank plus the page size) over 100, `diverseWeight` "
    "per whole (depth/100)^2 (maximal marginal relevance compares each pick with all the pool).",
)
class PageDepthCost:
    cursor_argument: str
    diversity_argument: str
    weight: int
    diverse_weight: int


@strawberry.schema_directive(
    name="textCost",
    locations=[Location.FIELD_DEFINITION],
    description="Work that grows with a text argument: `weight` per 100 characters (an embedding's "
    "cost follows its tokens).",
)
class TextCost:
    argument: str
    weight: int


def cost(weight: int) -> Cost:
    return Cost(weight=str(weight))


def sliced(argument: str = "first", *, sized: list[str] | None = None) -> ListSize:
    """A list (or, with ``sized``, a connection's lists) holding at most ``argument`` items."""
    return ListSize(slicing_arguments=[argument], sized_fields=sized or strawberry.UNSET)


def assumed(size: int) -> ListSize:
    return ListSize(assumed_size=size)


def page_depth(cursor: str = "after", diversity: str = "diversity") -> PageDepthCost:
    return PageDepthCost(
        cursor_argument=cursor,
        diversity_argument=diversity,
        weight=PAGE_DEPTH,
        diverse_weight=DIVERSE_DEPTH,
    )


def text_cost(argument: str, weight: int) -> TextCost:
    return TextCost(argument=argument, weight=weight)


OBJECT = [cost(1)]  # the weight of one object of a type: every type here declares it
# Measured (benchmarks/field_costs.py, ML-100K, one worker, the in-process LLM on 2 cores), in
# movie lookups: one explanation costs 471; recommendations 5.4, searchMovies 8.6 and
# similarMovies 1.1, priced above that.
EXPLANATION = 470
RECOMMENDATIONS = 10  # one scoring call; each item costs its own weight more
EVIDENCE = 3  # the most evidence facts an explanation rests on
# Measured (benchmarks/stall.py, ML-100K): the top of a deeper ranking costs little more to
# take (1 per 100 ranks skipped); a diversified page at depth d runs MMR over a pool of 3d,
# about 1 ms per (d/100)^2 on these cores (0.12 s at depth 1,100), priced at 2 per
# (d/100)^2 beyond a first page of 100 (5 ms: less than its items).
PAGE_DEPTH = 1
DIVERSE_DEPTH = 2
SEARCH_TEXT = 20  # per 100 characters of query: the embedding's cost grows with its tokens


@dataclass(frozen=True)
class Declared:
    """What the schema declares of one field: its own weight (None: the type's), the weight of
    the objects it returns, and how its list is sized."""

    weight: int | None
    type_weight: int | None
    slicing: str | None = None
    assumed: int | None = None
    sized_fields: tuple[str, ...] = ()
    page_depth: PageDepthCost | None = None
    text: TextCost | None = None


def _directives(definition: Any) -> list[Any]:
    strawberry_definition = (getattr(definition, "extensions", None) or {}).get("strawberry-definition")
    return list(getattr(strawberry_definition, "directives", None) or ())


def type_weight(named: Any) -> int | None:
    """The ``@cost`` an object type declares, or None."""
    for directive in _directives(named):
        if isinstance(directive, Cost):
            return int(directive.weight)
    return None


@cache
def declared(schema: GraphQLSchema) -> dict[str, Declared]:
    """Every object field's declaration, keyed ``Type.field``."""
    from graphql import get_named_type

    found: dict[str, Declared] = {}
    for type_ in schema.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
            continue
        for name, field in type_.fields.items():
            weight = slicing = assumed_size = None
            sized: tuple[str, ...] = ()
            depth: PageDepthCost | None = None
            text: TextCost | None = None
            for directive in _directives(field):
                if isinstance(directive, Cost):
                    weight = int(directive.weight)
                elif isinstance(directive, ListSize):
                    slicing = directive.slicing_arguments[0] if directive.slicing_arguments else None
                    assumed_size = directive.assumed_size or None  # unset: None
                    sized = tuple(directive.sized_fields or ())
                elif isinstance(directive, PageDepthCost):
                    depth = directive
                elif isinstance(directive, TextCost):
                    text = directive
            found[f"{type_.name}.{name}"] = Declared(
                weight, type_weight(get_named_type(field.type)), slicing, assumed_size, sized, depth, text
            )
    return found
