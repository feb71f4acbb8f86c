"""Schema extensions: error codes and masking, Prometheus metrics, and the query limits."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from graphql.error import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)

from app.errors import CinerecError
from app.metrics import GRAPHQL_LATENCY, GRAPHQL_REQUESTS

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)


def _is_internal(error: GraphQLError) -> bool:
    """Errors from our own code paths that are not API errors: bugs, SQL, timeouts."""
    original = error.original_error
    return original is not None and not isinstance(original, (CinerecError, GraphQLError))


class ErrorCodes(MaskErrors):
    """Every error gets ``extensions.code``; unexpected ones are masked as INTERNAL.

    No stack trace, SQL or exception text reaches the client: they go to the log.
    Errors without an original exception are the client's (syntax, validation,
    limits) and are marked BAD_USER_INPUT.
    """

    def __init__(self) -> None:
        super().__init__(should_mask_error=_is_internal, error_message="internal error")

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        log.error("internal error in %s", error.path, exc_info=error.original_error)
        masked = super().anonymise_error(error)
        masked.extensions = {"code": "INTERNAL"}
        return masked

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        processed = super()._process_errors(errors)
        for error in processed:
            if not (error.extensions or {}).get("code"):
                error.extensions = {**(error.extensions or {}), "code": "BAD_USER_INPUT"}
        return processed


class Metrics(SchemaExtension):
    """Counts operations by name and status and times them (``cinerec_graphql_*``)."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        ctx = self.execution_context
        name = ctx.operation_name or "anonymous"
        result = ctx.result
        failed = bool(getattr(result, "errors", None)) or bool(ctx.pre_execution_errors)
        GRAPHQL_REQUESTS.labels(operation=name, status="error" if failed else "ok").inc()
        GRAPHQL_LATENCY.labels(operation=name).observe(time.perf_counter() - started)


class ServedBy(SchemaExtension):
    """Says in the response ``extensions`` which model answered recommendations (or that the
    popularity fallback did), whether the LLM reranked, and what wrote the explanations."""

    def get_results(self) -> dict[str, object]:
        extra = getattr(self.execution_context.context, "extra", {})
        return {key: extra[key] for key in ("recommender", "explanations") if extra.get(key)}


def schema_extensions(settings: Settings) -> list[Callable[[], SchemaExtension] | type[SchemaExtension]]:
    """Extension factories: a fresh extension per request, the caches and rule classes shared.

    The limit rules are built once so that ValidationCache, which is keyed by the rule
    classes, hits across requests.
    """
    rules = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
    ]
    return [
        ErrorCodes,
        Metrics,
        ServedBy,
        lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
        lambda: AddValidationRules(rules),
        lambda: ParserCache(maxsize=1024),
        lambda: ValidationCache(maxsize=1024),
    ]
