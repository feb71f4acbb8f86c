"""Error codes and masking: every error gets ``extensions.code``; nothing internal reaches
the client."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from graphql.error import GraphQLError
from strawberry.extensions import MaskErrors

from app.infra.errors import CinerecError, is_outage

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def _is_internal(error: GraphQLError) -> bool:
    """Errors from our own code paths that are not API errors: bugs, SQL, timeouts."""
    original = error.original_error
    return original is not None and not isinstance(original, (CinerecError, GraphQLError))


class ErrorCodes(MaskErrors):
    """Every error gets ``extensions.code``; unexpected ones are masked as INTERNAL, a lost
    database connection as UNAVAILABLE.

    No stack trace, SQL or exception text reaches the client: they go to the log.
    Errors without an original exception are the client's (syntax, validation,
    limits) and are marked BAD_USER_INPUT.
    """

    def __init__(self, *, hide_suggestions: bool = False) -> None:
        super().__init__(should_mask_error=_is_internal, error_message="internal error")
        self.hide_suggestions = hide_suggestions

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        if error.original_error is not None and is_outage(error.original_error):
            log.warning("database unreachable in %s: %s", error.path, error.original_error)
            masked.message = "the database is unreachable: try again shortly"
            masked.extensions = {"code": "UNAVAILABLE"}
            return masked
        log.error("internal error in %s", error.path, exc_info=error.original_error)
        masked.extensions = {"code": "INTERNAL"}
        return masked

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        processed = super()._process_errors(errors)
        for error in processed:
            if not (error.extensions or {}).get("code"):
                error.extensions = {**(error.extensions or {}), "code": "BAD_USER_INPUT"}
            if self.hide_suggestions:
                error.message = without_suggestions(error.message)
        return processed


# graphql-core's "Did you mean 'modelVersions'?" names fields that introspection would hide.
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")


def without_suggestions(message: str) -> str:
    return _SUGGESTION.sub("", message)
