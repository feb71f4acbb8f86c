"""Prometheus metrics per operation: counts, latency and error codes, with bounded labels."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from graphql import (
    OperationDefinitionNode,
    OperationType,
)
from strawberry.extensions import SchemaExtension

from app.infra.errors import ERROR_CODES

if TYPE_CHECKING:
    from app.infra.metrics import Metrics


def chosen_operation(document: Any, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == name), None)


def _error_code(error: Any) -> str:
    """A bounded label for an error: one of the server's codes."""
    code = (getattr(error, "extensions", None) or {}).get("code")
    if code is None:
        return "GRAPHQL_VALIDATION"
    return code if code in ERROR_CODES else "OTHER"


class OperationMetrics(SchemaExtension):
    """Counts operations and times them (``cinerec_graphql_*``).

    Labels stay bounded whatever clients send: the operation name only when it is one of
    ``known`` (settings ``metrics_operations``), otherwise ``other``; the first root field,
    which the schema bounds.
    """

    def __init__(self, *, known: frozenset[str]) -> None:
        self.known = known

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            ctx = self.execution_context
            name = ctx.operation_name if ctx.operation_name in self.known else "other"
            root = "none"
            document = ctx.graphql_document
            if document is not None and (op := chosen_operation(document, ctx.operation_name)) is not None:
                fields = [s for s in op.selection_set.selections if hasattr(s, "name")]
                if fields:
                    root = fields[0].name.value  # type: ignore[attr-defined]
                    schema_root = {
                        OperationType.QUERY: ctx.schema._schema.query_type,
                        OperationType.MUTATION: ctx.schema._schema.mutation_type,
                        OperationType.SUBSCRIPTION: ctx.schema._schema.subscription_type,
                    }[op.operation]
                    if schema_root is None or root not in schema_root.fields:
                        root = "other"
            result = ctx.result
            failed = result is None or bool(getattr(result, "errors", None)) or bool(ctx.pre_execution_errors)
            status = "error" if failed else "ok"
            metrics = metrics_of(ctx.context)
            if metrics is not None:
                errors = [*(getattr(result, "errors", None) or []), *(ctx.pre_execution_errors or [])]
                for error in errors:
                    metrics.graphql_errors.labels(code=_error_code(error)).inc()
                price = getattr(ctx.context, "price", None)
                if price is not None:
                    metrics.query_cost.observe(price.cost)
                metrics.graphql_requests.labels(operation=name, root=root, status=status).inc()
                principal = getattr(ctx.context, "principal", None)
                if principal is not None and principal.key is not None:
                    metrics.api_key_operations.labels(key=principal.key, status=status).inc()
                metrics.graphql_latency.labels(operation=name, root=root).observe(
                    time.perf_counter() - started
                )


def metrics_of(context: Any) -> Metrics | None:
    services = getattr(context, "services", None)
    return services.metrics if services is not None else None
