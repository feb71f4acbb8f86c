"""Schema extensions, one per module: error codes and masking (``error_codes``), Prometheus
metrics (``operation_metrics``), what answered (``served_by``), the audit log's lines
(``audit_trail``) and the checks every operation
passes before any resolver runs (``operation_guard``). ``schema_extensions`` builds them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from graphql.validation import (
    ASTValidationRule,
    MaxIntrospectionDepthRule,
    NoSchemaIntrospectionCustomRule,
)
from strawberry.extensions import SchemaExtension

from graphql_schema.document_cache import DocumentCache, Documents
from graphql_schema.extensions.audit_trail import AuditTrail
from graphql_schema.extensions.error_codes import ErrorCodes
from graphql_schema.extensions.operation_guard import OperationGuard
from graphql_schema.extensions.operation_metrics import OperationMetrics
from graphql_schema.extensions.served_by import ServedBy

if TYPE_CHECKING:
    from app.infra.settings import Settings


def schema_extensions(settings: Settings) -> list[Callable[[], SchemaExtension] | type[SchemaExtension]]:
    """Extension factories: a fresh extension per request, the caches and rule classes shared.

    The validation rules are built once so that the document cache, which keeps each
    document's errors with the rules that found them, hits across requests. Depth and alias
    limits are not validation rules: graphql validation rules expand fragments without
    memoising, and a chain of fragments each spreading the last twice froze the server.
    ``OperationGuard`` prices the document as it will execute, in linear time. Introspection
    is priced and depth-limited like any field; ``MaxIntrospectionDepthRule`` (graphql-core's)
    also refuses its cycles (``fields { type { fields { ... } } }``) before they are priced.
    """
    rules: list[type[ASTValidationRule]] = [MaxIntrospectionDepthRule]
    if not settings.introspection_enabled:
        rules.append(NoSchemaIntrospectionCustomRule)
    known = frozenset(settings.metrics_operations)
    hide = not settings.introspection_enabled  # suggestions would name what introspection hides
    documents = Documents(max_bytes=settings.document_cache_bytes, hide_suggestions=hide)
    extra_rules = tuple(rules)
    return [
        lambda: ErrorCodes(hide_suggestions=hide),
        lambda: OperationMetrics(known=known),
        ServedBy,
        AuditTrail,
        lambda: DocumentCache(documents, max_tokens=settings.max_tokens, rules=extra_rules),
        lambda: OperationGuard(
            max_depth=settings.max_query_depth,
            max_aliases=settings.max_aliases,
            max_cost=settings.max_query_cost,
            max_explanations=settings.llm_max_explanations,
            max_introspection_depth=settings.max_introspection_depth,
        ),
    ]
