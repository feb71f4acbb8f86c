"""Passwords (argon2 through pwdlib) and JWT access tokens (HS256 through pyjwt)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

import jwt
from pwdlib import PasswordHash

from app.errors import Unauthenticated

if TYPE_CHECKING:
    from app.settings import Settings

ALGORITHM = "HS256"
_hasher = PasswordHash.recommended()


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the account's MovieLens user id and role."""

    account_id: int
    user_id: int
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_read_user(self, user_id: int) -> bool:
        return self.is_admin or self.user_id == user_id


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    return _hasher.verify(password, password_hash)


def issue_token(principal: Principal, settings: Settings, *, now: datetime | None = None) -> str:
    issued = now or datetime.now(UTC)
    claims = {
        "sub": str(principal.account_id),
        "uid": principal.user_id,
        "role": principal.role.value,
        "iat": issued,
        "exp": issued + timedelta(minutes=settings.jwt_expiry_minutes),
    }
    return jwt.encode(claims, settings.signing_secret(), algorithm=ALGORITHM)


def read_token(token: str, settings: Settings) -> Principal:
    """The principal a token names; raises :class:`Unauthenticated` for expired or tampered tokens."""
    try:
        claims = jwt.decode(
            token, settings.signing_secret(), algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
        return Principal(account_id=int(claims["sub"]), user_id=int(claims["uid"]), role=Role(claims["role"]))
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("token expired: log in again") from exc
    except (jwt.InvalidTokenError, KeyError, ValueError) as exc:
        raise Unauthenticated("invalid token") from exc


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None when absent."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()
