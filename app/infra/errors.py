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


_OUTAGE_PHRASES = (
    "connection",
    "closed",
    "terminat",
    "shutting down",
    "starting up",
    "could not connect",
    "refused",
    "recovery mode",
)


def is_outage(error: BaseException) -> bool:
    """True for errors that mean the database cannot be reached right now (down, restarting,
    a connection lost), not that a statement was wrong. Follows the cause chain, since
    SQLAlchemy wraps the driver's error."""
    from asyncpg.exceptions import (
        CannotConnectNowError,
        OperatorInterventionError,
        PostgresConnectionError,
        TooManyConnectionsError,
    )
    from asyncpg.exceptions import (
        InterfaceError as PgInterfaceError,
    )
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    seen: BaseException | None = error
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(
            seen,
            (
                ConnectionError,
                TimeoutError,
                OSError,
                CannotConnectNowError,
                OperatorInterventionError,  # admin shutdown, crash shutdown
                PostgresConnectionError,
                TooManyConnectionsError,
            ),
        ):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, (InterfaceError, OperationalError, PgInterfaceError)):
            text = str(seen).lower()
            if any(phrase in text for phrase in _OUTAGE_PHRASES):
                return True
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return False


def _codes(kind: type[CinerecError]) -> set[str]:
    return {kind.code}.union(*(_codes(k) for k in kind.__subclasses__()))


# Every code a response can carry: bounded labels for the errors metric.
ERROR_CODES: frozenset[str] = frozenset(_codes(CinerecError))
