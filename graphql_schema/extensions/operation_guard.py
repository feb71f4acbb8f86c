"""The checks every operation passes before any resolver runs: one operation chosen, clean
strings, depth, aliases and a price within the limits, then the charge to the caller's bucket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    OperationDefinitionNode,
    OperationType,
    StringValueNode,
    visit,
)
from graphql.error import GraphQLError
from graphql.language import Visitor
from strawberry.extensions import SchemaExtension

from graphql_schema.analysis import Price, TooComplex, price_operation
from graphql_schema.charges import charge, refusal
from graphql_schema.document_cache import digest
from graphql_schema.extensions.operation_metrics import chosen_operation

if TYPE_CHECKING:
    pass


# Root fields anyone may read and whose answers are the same for everyone.
PUBLIC_ROOTS = frozenset({"movie", "movies", "genres", "similarMovies", "searchMovies"})


def _public(operation: OperationDefinitionNode, context: Any) -> bool:
    """An anonymous query of catalog fields only: its response can be cached and shared."""
    if operation.operation is not OperationType.QUERY or context.principal is not None or context.auth_error:
        return False
    request = getattr(context, "request", None)
    if request is None or request.headers.get("authorization"):
        return False
    selections = operation.selection_set.selections
    return all(isinstance(s, FieldNode) and s.name.value in PUBLIC_ROOTS for s in selections)


def _bad_string(value: str) -> bool:
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, from a JSON "\\ud800" escape
        return True
    return False


def _find_bad_string(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return _bad_string(value)
    if depth > 32:
        return False  # variable values are shaped by the schema's input types; nothing is this deep
    if isinstance(value, dict):
        return any(_find_bad_string(k, depth + 1) or _find_bad_string(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_find_bad_string(v, depth + 1) for v in value)
    return False


class _StringLiterals(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.bad = False

    def enter_string_value(self, node: StringValueNode, *_: Any) -> None:
        if _bad_string(node.value):
            self.bad = True


# By the digest of the document's text (and of the variables): the same query sent again is
# neither walked for its string literals nor priced a second time. Keys are 32 bytes whatever
# the client sends, so these hold at most a few MB.
_LITERALS: LRUCache[bytes, bool] = LRUCache(maxsize=4096)
_PRICES: LRUCache[bytes, Price] = LRUCache(maxsize=8192)


def _bad_literals(query: str, document: Any) -> bool:
    key = digest(query)
    found = _LITERALS.get(key)
    if found is None:
        literals = _StringLiterals()
        visit(document, literals)
        found = _LITERALS[key] = literals.bad
    return found


def _price(
    schema: Any,
    query: str,
    asked: str | None,
    operation: OperationDefinitionNode,
    document: Any,
    variables: Any,
) -> Price:
    try:
        key: bytes | None = digest(
            "\x1f".join((query, asked or "", json.dumps(variables or {}, sort_keys=True)))
        )
    except (TypeError, ValueError):
        key = None
    if key is not None and (found := _PRICES.get(key)) is not None:
        return found
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    price = price_operation(schema, operation, fragments, variables)
    if key is not None:
        _PRICES[key] = price
    return price


def _llm_writes(context: Any) -> bool:
    """Whether explanations come from an LLM now (the template costs nothing to write)."""
    services = getattr(context, "services", None)
    return services is not None and services.explanations.written_by_llm


class OperationGuard(SchemaExtension):
    """Before any resolver runs: exactly one operation is chosen, it is not a subscription
    over HTTP, every string is clean Unicode without NUL, and its depth, aliases and cost
    (priced as it will execute, see :mod:`graphql_schema.analysis`) are within the limits.
    A refused operation answers BAD_USER_INPUT or QUERY_TOO_COMPLEX with nothing run."""

    def __init__(
        self,
        *,
        max_depth: int,
        max_aliases: int,
        max_cost: int,
        max_explanations: int = 0,
        max_introspection_depth: int = 14,
    ) -> None:
        self.max_depth = max_depth
        self.max_introspection_depth = max_introspection_depth
        self.max_aliases = max_aliases
        self.max_cost = max_cost
        self.max_explanations = max_explanations  # 0: no limit

    def _check(self) -> GraphQLError | None:
        ctx = self.execution_context
        context = ctx.context
        document = ctx.graphql_document
        assert document is not None
        if context is not None and hasattr(context, "document_valid"):
            context.document_valid = True  # parsed and validated: a persisted query may be kept
        # What the client sent: Strawberry's `operation_name` falls back to the first operation's
        # name, which would run the first of several operations instead of refusing.
        asked: str | None = getattr(ctx, "_provided_operation_name", ctx.operation_name)
        operation = chosen_operation(document, asked)
        if operation is None:
            count = sum(isinstance(d, OperationDefinitionNode) for d in document.definitions)
            if asked is None:
                return refusal(
                    context,
                    f"the document holds {count} operations: say which to run in operationName",
                    "BAD_USER_INPUT",
                )
            return refusal(context, f"no operation named {asked!r} in the document", "BAD_USER_INPUT")
        if operation.operation is OperationType.SUBSCRIPTION and not getattr(context, "is_websocket", True):
            return refusal(
                context,
                "subscriptions are served over websockets (graphql-transport-ws at /graphql), not HTTP",
                "BAD_USER_INPUT",
            )
        if _bad_literals(ctx.query or "", document) or _find_bad_string(ctx.variables or {}):
            return refusal(
                context,
                "strings must be valid Unicode without NUL characters or unpaired surrogates",
                "BAD_USER_INPUT",
            )
        try:
            price = _price(ctx.schema._schema, ctx.query or "", asked, operation, document, ctx.variables)
        except TooComplex:
            return refusal(context, "the query is too large to price", "QUERY_TOO_COMPLEX")
        if context is not None and hasattr(context, "price"):
            context.price = price
            context.public = _public(operation, context)
        depth = max(price.depth - 1, 0)  # nesting levels above the leaves, as graphql depth limits count
        if depth > self.max_depth:
            return refusal(
                context,
                f"query depth {depth} exceeds the maximum of {self.max_depth}",
                "QUERY_TOO_COMPLEX",
                depth=depth,
                maxDepth=self.max_depth,
            )
        depth = max(price.introspection_depth - 1, 0)
        if depth > self.max_introspection_depth:
            return refusal(
                context,
                f"introspection depth {depth} exceeds the maximum of {self.max_introspection_depth}",
                "QUERY_TOO_COMPLEX",
                depth=depth,
                maxDepth=self.max_introspection_depth,
            )
        if price.aliases > self.max_aliases:
            return refusal(
                context,
                f"{price.aliases} aliases exceed the maximum of {self.max_aliases}",
                "QUERY_TOO_COMPLEX",
                aliases=price.aliases,
                maxAliases=self.max_aliases,
            )
        if price.cost > self.max_cost:
            return refusal(
                context,
                f"query cost {price.cost} exceeds the maximum of {self.max_cost}",
                "QUERY_TOO_COMPLEX",
                cost=price.cost,
                limit=self.max_cost,
            )
        if self.max_explanations and price.generations > self.max_explanations and _llm_writes(context):
            # more than the LLM writes within a request's budget: refused now, not answered from
            # templates after the timeout
            return refusal(
                context,
                f"{price.generations} explanations requested; the LLM writes at most {self.max_explanations} "
                "per request (ask for fewer, or stream them one by one with the explanation subscription)",
                "QUERY_TOO_COMPLEX",
                explanations=price.generations,
                maxExplanations=self.max_explanations,
            )
        return None

    async def _charge(self) -> GraphQLError | None:
        price = getattr(self.execution_context.context, "price", None)
        if price is None:
            return None
        return await charge(self.execution_context.context, max(price.cost, 1), "this operation")

    async def on_execute(self) -> AsyncIterator[None]:  # type: ignore[override]
        error = self._check()
        if error is None:
            error = await self._charge()
        if error is not None:
            if self.execution_context.operation_type is OperationType.SUBSCRIPTION:
                raise error  # subscribe() has no result slot to fill: the error ends the stream
            self.execution_context.result = GraphQLExecutionResult(data=None, errors=[error])
        yield

    def get_results(self) -> dict[str, Any]:
        """``extensions.cost``: what the operation was priced at, the most one may cost, and
        what is left in the caller's bucket."""
        context = self.execution_context.context
        price = getattr(context, "price", None)
        if price is None:
            return {}
        cost: dict[str, Any] = {"requested": max(price.cost, 1), "limit": self.max_cost}
        budget = getattr(context, "budget", None)
        if budget is not None:
            cost.update(
                remaining=int(budget.remaining),
                bucket=int(budget.capacity),
                restorePerSecond=budget.restore_per_second,
            )
        return {"cost": cost}
