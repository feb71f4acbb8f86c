"""The audit log's writer: after a mutation ran, one line per audited root field (every
admin mutation, which includes making and revoking keys, and every account erasure) with
who, what, the arguments without secrets, from where, and how it ended (``ok`` or the
error's code: a refused attempt is a line too)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING, Any

from graphql import FieldNode, GraphQLError, OperationType
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from strawberry.extensions import SchemaExtension

from app.services.audit import pseudonym
from graphql_schema.extensions.operation_metrics import chosen_operation
from graphql_schema.permissions import IsAdmin

if TYPE_CHECKING:
    from graphql import GraphQLField, GraphQLObjectType

log = logging.getLogger(__name__)

ERASE_SELF = "deleteMyAccount"
ERASE_OTHER = "deleteAccount"
_BACKREF = "strawberry-definition"  # where strawberry keeps a graphql-core field's definition


def audited(field: GraphQLField) -> bool:
    definition = (field.extensions or {}).get(_BACKREF)
    permissions = getattr(definition, "permission_classes", None) or []
    return any(p is IsAdmin for p in permissions)


@cache  # one schema, built once: its audited fields do not change
def audited_mutations(mutation_type: GraphQLObjectType | None) -> frozenset[str]:
    """The root mutations the log records: the admin's, and the erasure of one's own account."""
    if mutation_type is None:
        return frozenset()
    return frozenset({n for n, f in mutation_type.fields.items() if audited(f)} | {ERASE_SELF})


def _outcome(errors: list[GraphQLError], key: str) -> str:
    for error in errors:
        if error.path and error.path[0] == key:
            code = (error.extensions or {}).get("code")  # ErrorCodes fills in the rest later
            return str(code or ("INTERNAL" if error.original_error is not None else "BAD_USER_INPUT"))
    return "ok"


class AuditTrail(SchemaExtension):
    async def on_execute(self) -> AsyncIterator[None]:
        yield
        ctx = self.execution_context
        context = ctx.context
        services = getattr(context, "services", None)
        if services is None or ctx.graphql_document is None:
            return
        operation = chosen_operation(ctx.graphql_document, ctx.operation_name)
        if operation is None or operation.operation is not OperationType.MUTATION:
            return
        mutation_type = ctx.schema._schema.mutation_type
        names = audited_mutations(mutation_type)
        roots = operation.selection_set.selections
        audited_nodes = [n for n in roots if isinstance(n, FieldNode) and n.name.value in names]
        if not audited_nodes:  # a person's own rating or click: not the log's
            return
        errors = list(getattr(ctx.result, "errors", None) or [])
        principal = context.principal
        secret = context.settings.signing_secret()
        coerced = get_variable_values(
            ctx.schema._schema, operation.variable_definitions or (), ctx.variables or {}
        )
        variables = coerced if isinstance(coerced, VariableValues) else None
        for node in audited_nodes:
            action = node.name.value
            field = mutation_type.fields[action]  # type: ignore[union-attr]
            try:
                arguments: dict[str, Any] = _plain(get_argument_values(field, node, variables))
            except GraphQLError:
                arguments = {}
            actor = principal.actor if principal is not None else "anonymous"
            if action == ERASE_SELF and principal is not None:
                actor = pseudonym(secret, principal.user_id)
            if action == ERASE_OTHER and isinstance(arguments.get("userId"), int):
                arguments["userId"] = pseudonym(secret, arguments["userId"])
            key = node.alias.value if node.alias else action
            try:
                await services.audit.record(
                    actor=actor,
                    action=action,
                    arguments=arguments,
                    client=context.client,
                    result=_outcome(errors, key),
                )
            except Exception:
                # the change itself is done: say loudly that its line is missing
                log.exception("audit: could not record %s by %s", action, actor)


def _plain(value: Any) -> Any:
    """Arguments as JSON holds them: enums by their value (graphql-core keys the arguments by
    the schema's names already)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    return value
