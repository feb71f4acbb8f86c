"""Errors that reach API clients. Each carries the ``extensions.code`` the design names.

graphql-core copies an original error's ``extensions`` onto the GraphQL error, so a
service can raise these and the client sees the code; anything else is masked as
INTERNAL by ``graphql_schema.extensions.ErrorCodes``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class CinerecError(Exception):
    code: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions: dict[str, Any] = {"code": self.code, **extra}


class Unauthenticated(CinerecError):
    code = "UNAUTHENTICATED"


class Forbidden(CinerecError):
    code = "FORBIDDEN"


class NotFound(CinerecError):
    code = "NOT_FOUND"


class BadUserInput(CinerecError):
    code = "BAD_USER_INPUT"


class RateLimited(CinerecError):
    code = "RATE_LIMITED"


class QueryTooComplex(CinerecError):
    code = "QUERY_TOO_COMPLEX"


class Unavailable(CinerecError):
    """A dependency (the database) cannot be reached; the request may be retried."""

    code = "UNAVAILABLE"


def is_outage(error: BaseException) -> bool:
    """True for errors that mean the database connection is gone, not that a statement failed."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(error, (ConnectionError, TimeoutError, OSError)):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, (InterfaceError, OperationalError)):
        text = str(error).lower()
        return any(
            s in text
            for s in ("connection", "closed", "terminat", "shutdown", "could not connect", "refused")
        )
    return False
