"""What an operation will cost, read from the document and its variables before anything runs.

One walk over the operation as graphql-core will execute it: fields are grouped by response
key and fragments are followed once per selection set (``collect_fields``' rule), so a
fragment spread twice in one place is counted once, as it runs once. Each merged selection
is analysed once (memoised on the field nodes it merges), so a chain of fragments that each
spread the previous one twice costs linear time to price, however large the price. A hard
cap on the walk's steps bounds the time whatever the document's shape.

The price follows Shopify's calculated query cost, from what the schema declares beside each
field (``graphql_schema.costs``: the IBM ``@cost`` and ``@listSize`` directives): an object
costs its type's weight, a scalar 0, a field with its own ``@cost`` that weight instead, and a
list or connection multiplies its selection by its size (its slicing argument ``first``, or
its assumed size). Introspection is priced like any field, its lists sized by what the schema
holds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    is_list_type,
    is_non_null_type,
    value_from_ast,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef

from app.serving.recommendations import cursor_rank
from graphql_schema.costs import Declared, declared, type_weight

DEFAULT_LIST_BOUND = 100  # a list whose size is declared nowhere (a test keeps this from happening)
MAX_STEPS = 50_000  # merged selections walked; beyond this the document is refused as too complex


class TooComplex(Exception):
    """The document could not be priced within the step budget."""


@dataclass(frozen=True)
class Price:
    """Totals over the merged selection tree, as it will execute."""

    cost: int
    depth: int  # the deepest path outside introspection
    aliases: int
    generations: int = 0  # explanations the LLM would write (GENERATING fields, per item)
    introspection_depth: int = 0  # the deepest path under __schema or __type


_ZERO = Price(0, 0, 0)
# Fields whose value is an LLM explanation; selecting several on one item generates it once.
GENERATING = {"Recommendation.explanation", "Recommendation.explanationSource"}
# Introspection lists whose size follows their parent: the same list read under
# __Schema.types is priced at its average size, since the types' sizes add up to the total.
_PER_TYPE = ("fields", "inputFields", "enumValues", "interfaces", "possibleTypes")


@cache
def introspection_sizes(schema: GraphQLSchema) -> dict[tuple[str, bool], float]:
    """How many items each introspection list holds in this schema: keyed by (``Type.field``,
    whether read for every type), the largest for one type or the average over all of them."""
    types = list(schema.type_map.values())
    outputs = [t for t in types if isinstance(t, (GraphQLObjectType, GraphQLInterfaceType))]
    fields = [f for t in outputs for f in t.fields.values()]
    per_type: dict[str, list[int]] = {
        "fields": [len(t.fields) for t in outputs],
        "inputFields": [len(t.fields) for t in types if isinstance(t, GraphQLInputObjectType)],
        "enumValues": [len(t.values) for t in types if isinstance(t, GraphQLEnumType)],
        "interfaces": [len(getattr(t, "interfaces", ())) for t in outputs],
        "possibleTypes": [
            len(schema.get_possible_types(t)) for t in types if isinstance(t, GraphQLInterfaceType)
        ],
    }
    directive_args = [len(d.args) for d in schema.directives]
    sizes: dict[tuple[str, bool], float] = {
        ("__Schema.types", False): len(types),
        ("__Schema.directives", False): len(schema.directives),
        ("__Field.args", False): max((len(f.args) for f in fields), default=0),
        ("__Field.args", True): sum(len(f.args) for f in fields) / max(len(fields), 1),
        ("__Directive.args", False): max(directive_args, default=0),
        ("__Directive.args", True): sum(directive_args) / max(len(directive_args), 1),
    }
    for name, counts in per_type.items():
        sizes[(f"__Type.{name}", False)] = max(counts, default=0)
        sizes[(f"__Type.{name}", True)] = sum(counts) / max(len(types), 1)
    return sizes


class _Pricer:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.declared = declared(schema)
        self.memo: dict[tuple[str, tuple[int, ...], float, tuple[str, ...], bool], Price] = {}
        self.steps = 0

    def _included(self, node: FieldNode | FragmentSpreadNode | InlineFragmentNode) -> bool:
        for directive in node.directives or ():
            name = directive.name.value
            if name not in ("skip", "include"):
                continue
            value: Any = True
            for arg in directive.arguments or ():
                if arg.name.value == "if":
                    value = self._literal(arg.value)
            if (name == "skip" and value is True) or (name == "include" and value is False):
                return False
        return True

    def _literal(self, node: Any) -> Any:
        if isinstance(node, VariableNode):
            return self.variables.get(node.name.value)
        return getattr(node, "value", None)  # @skip/@include take Boolean literals: already bool

    def _collect(
        self, selection_sets: tuple[SelectionSetNode, ...], into: dict[str, list[FieldNode]]
    ) -> None:
        """Fields grouped by response key; each fragment followed once (graphql-core's rule)."""
        visited: set[str] = set()
        stack = list(reversed(selection_sets))
        while stack:
            self.steps += 1
            if self.steps > MAX_STEPS:
                raise TooComplex
            selection_set = stack.pop()
            pending: list[SelectionSetNode] = []
            for selection in selection_set.selections:
                if not self._included(selection):  # type: ignore[arg-type]
                    continue
                if isinstance(selection, FieldNode):
                    key = selection.alias.value if selection.alias else selection.name.value
                    into.setdefault(key, []).append(selection)
                elif isinstance(selection, InlineFragmentNode):
                    pending.append(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    if name in visited or name not in self.fragments:
                        continue
                    visited.add(name)
                    pending.append(self.fragments[name].selection_set)
            stack.extend(reversed(pending))

    def _size(
        self,
        owner: str,
        declaration: Declared | None,
        definition: GraphQLField,
        node: FieldNode,
        every_type: bool,
    ) -> float:
        """How many items a list or connection field returns at most: its slicing argument (a
        literal, a variable or the argument's default), else its assumed size, or for
        introspection what the schema holds."""
        if owner.startswith("__"):
            sizes = introspection_sizes(self.schema)
            return sizes.get((owner, every_type), sizes.get((owner, False), DEFAULT_LIST_BOUND))
        if declaration is None:
            return DEFAULT_LIST_BOUND
        if declaration.slicing is None or (argument := definition.args.get(declaration.slicing)) is None:
            return declaration.assumed if declaration.assumed is not None else DEFAULT_LIST_BOUND
        value: Any = argument.default_value
        for arg in node.arguments or ():
            if arg.name.value == declaration.slicing:
                value = value_from_ast(arg.value, argument.type, dict(self.variables))
        if isinstance(value, int) and not isinstance(value, bool):
            return max(value, 0)
        return DEFAULT_LIST_BOUND  # missing or invalid: execution refuses it; price it high meanwhile

    def _argument(self, definition: GraphQLField, node: FieldNode, name: str) -> Any:
        """An argument's value as it will execute: given, from a variable, or its default."""
        argument = definition.args.get(name)
        if argument is None:
            return None
        for arg in node.arguments or ():
            if arg.name.value == name:
                return value_from_ast(arg.value, argument.type, dict(self.variables))
        return argument.default_value

    def _grows(self, declaration: Declared, definition: GraphQLField, node: FieldNode, items: float) -> float:
        """What a field's work adds with its arguments' values: a page's depth and diversity,
        a text's length (``@pageDepthCost``, ``@textCost``)."""
        extra = 0.0
        if (paged := declaration.page_depth) is not None:
            # a first page (up to 100 deep) costs what its items cost; deeper, each 100 ranks
            # skipped, and for a diversified list MMR's (depth/100)^2, in whole points
            after = self._argument(definition, node, paged.cursor_argument)
            offset = cursor_rank(after) if isinstance(after, str) else 0
            depth = offset + items
            extra += paged.weight * (offset // 100)
            diversity = self._argument(definition, node, paged.diversity_argument)
            if isinstance(diversity, (int, float)) and diversity > 0 and depth > 100:
                extra += paged.diverse_weight * int((depth / 100) ** 2)
        if (text := declaration.text) is not None:
            value = self._argument(definition, node, text.argument)
            if isinstance(value, str):
                extra += text.weight * len(value) / 100
        return extra

    @staticmethod
    def _weight(named: GraphQLNamedType) -> int:
        """What one object of ``named`` costs where a field returns it (a scalar or enum: 0)."""
        if not isinstance(named, GraphQLObjectType):
            return 0
        declared_weight = type_weight(named)
        return 1 if declared_weight is None else declared_weight  # introspection's types: 1

    def _definition(self, parent: GraphQLObjectType, name: str) -> GraphQLField | None:
        if name == "__schema" and parent is self.schema.query_type:
            return SchemaMetaFieldDef
        if name == "__type" and parent is self.schema.query_type:
            return TypeMetaFieldDef
        return parent.fields.get(name)  # None for __typename: free and shallow

    def price(
        self,
        parent: GraphQLNamedType,
        nodes: tuple[SelectionSetNode, ...],
        size: float = 1,
        sized: tuple[str, ...] = (),
        every_type: bool = False,
    ) -> Price:
        """The price of ``nodes`` merged, selected on ``parent``; ``size`` is the page size that
        ``parent``'s lists named in ``sized`` hold (a connection's ``edges``); ``every_type``
        when ``parent`` is an introspection object read for every type of the schema."""
        key = (parent.name, tuple(id(n) for n in nodes), size, sized, every_type)
        if (found := self.memo.get(key)) is not None:
            return found
        if not isinstance(parent, GraphQLObjectType):
            return _ZERO  # this schema has no interfaces or unions; scalars end the walk
        grouped: dict[str, list[FieldNode]] = {}
        self._collect(nodes, grouped)
        cost: float = 0
        depth = aliases = introspection_depth = 0
        generations: float = 0
        generating = False
        for fields in grouped.values():
            first = fields[0]
            name = first.name.value
            aliases += any(f.alias and f.alias.value != name for f in fields)
            definition = self._definition(parent, name)
            if definition is None:
                depth = max(depth, 1)
                continue
            owner = f"{parent.name}.{name}"
            declaration = self.declared.get(owner)
            own = declaration.weight if declaration is not None else None
            if owner in GENERATING:
                # explanation and explanationSource of one item are one generation: priced once
                cost += 0 if generating else (own or 0)
                generating = True
                depth = max(depth, 1)
                continue
            named = get_named_type(definition.type)
            nullable = definition.type.of_type if is_non_null_type(definition.type) else definition.type
            children = tuple(f.selection_set for f in fields if f.selection_set)
            if declaration is not None and declaration.sized_fields:  # a connection: `first` sizes its lists
                page = self._size(owner, declaration, definition, first, every_type)
                child = self.price(named, children, page, declaration.sized_fields) if children else _ZERO
                cost += (self._weight(named) if own is None else own) + child.cost
                generations += child.generations
            elif is_list_type(nullable):
                if name in sized:
                    items = size
                else:
                    items = self._size(owner, declaration, definition, first, every_type)
                # a list read for every type: its items' own lists add up to the schema's totals
                spread = owner in ("__Schema.types", "__Schema.directives") or (
                    every_type and name in (*_PER_TYPE, "args")
                )
                child = self.price(named, children, every_type=spread) if children else _ZERO
                cost += (own or 0) + items * (self._weight(named) + child.cost)
                if declaration is not None:
                    cost += self._grows(declaration, definition, first, items)
                generations += items * child.generations
            else:
                child = self.price(named, children) if children else _ZERO
                cost += (self._weight(named) if own is None else own) + child.cost
                generations += child.generations
            if definition in (SchemaMetaFieldDef, TypeMetaFieldDef):
                introspection_depth = max(introspection_depth, 1 + child.depth)
            else:
                depth = max(depth, 1 + child.depth)
                introspection_depth = max(introspection_depth, child.introspection_depth)
            aliases += child.aliases
        # costs are whole points, except introspection's averaged lists until the total is taken
        found = Price(cost, depth, aliases, generations + int(generating), introspection_depth)  # type: ignore[arg-type]
        self.memo[key] = found
        return found


def price_operation(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any] | None,
) -> Price:
    """Cost, depth and alias count of ``operation`` as it will execute with ``variables``.

    Raises :class:`TooComplex` when the document is too large to price in bounded time.
    """
    root = {
        OperationType.QUERY: schema.query_type,
        OperationType.MUTATION: schema.mutation_type,
        OperationType.SUBSCRIPTION: schema.subscription_type,
    }[operation.operation]
    if root is None:
        return _ZERO
    pricer = _Pricer(schema, fragments, variables or {})
    found = pricer.price(root, (operation.selection_set,))
    return Price(
        math.ceil(found.cost - 1e-9),
        found.depth,
        found.aliases,
        math.ceil(found.generations - 1e-9),
        found.introspection_depth,
    )
