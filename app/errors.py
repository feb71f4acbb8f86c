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
