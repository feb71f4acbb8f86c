"""Passwords (argon2 through pwdlib) and JWT access tokens (HS256 through pyjwt)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

import jwt
from cachetools import TTLCache
from pwdlib import PasswordHash

from app.infra.errors import RateLimited, Unauthenticated

if TYPE_CHECKING:
    from app.infra.metrics import Metrics
    from app.infra.settings import Settings

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


class PasswordHasher:
    """argon2 (about 150 ms of CPU each) off the event loop, on ``threads`` worker threads.

    argon2 releases the GIL, so with one thread a burst of logins takes one core and the
    event loop keeps the other. At most ``max_waiting`` hashes queue; beyond that a login
    is refused (RATE_LIMITED) rather than queued for seconds. An unknown email is checked
    against a dummy hash, so it takes as long as a wrong password (no account enumeration).
    """

    def __init__(self, *, threads: int = 1, max_waiting: int = 32, metrics: Metrics | None = None) -> None:
        self._checks = metrics.password_checks if metrics is not None else None
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")
        self._max_waiting = max_waiting
        self._waiting = 0
        self._dummy: str | None = None

    async def _run(self, fn: object, *args: str) -> object:
        if self._waiting >= self._max_waiting:
            raise RateLimited(
                "too many logins in progress: try again in 1 s", retryAfterSeconds=1, retryAfter=1
            )
        self._waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)  # type: ignore[arg-type]
        finally:
            self._waiting -= 1

    async def warm(self) -> None:
        """Make the dummy hash now, so that the first unknown email costs what the others do."""
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return str(await self._run(hash_password, password))

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """True when ``password`` matches; with no hash (unknown account), False after the same work."""
        if self._checks is not None:
            self._checks.inc()
        if password_hash is None:
            await self.warm()
            await self._run(verify_password, password, self._dummy)  # type: ignore[arg-type]
            return False
        return bool(await self._run(verify_password, password, password_hash))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def issue_token(principal: Principal, settings: Settings, *, now: datetime | None = None) -> str:
    issued = now or datetime.now(UTC)
    claims = {
        "sub": str(principal.account_id),
        "uid": principal.user_id,
        "role": principal.role.value,
        # to the microsecond: a sign-out refuses the tokens issued before it, not a login
        # made in the same second after it
        "iat": issued.timestamp(),
        "exp": issued + timedelta(minutes=settings.jwt_expiry_minutes),
    }
    return jwt.encode(claims, settings.signing_secret(), algorithm=ALGORITHM)


@dataclass(frozen=True)
class Token:
    """What a verified token says: who, and from when until when (Unix seconds)."""

    claimed: Principal
    issued_at: float
    expires_at: float


# Verified tokens by their digest, so that a client's every request does not pay for the
# signature check again; an entry is used only while its token has not expired.
_VERIFIED: TTLCache[bytes, Token] = TTLCache(maxsize=50_000, ttl=300)


def read_token(token: str, settings: Settings) -> Token:
    """What a token says; raises :class:`Unauthenticated` for expired or tampered tokens.
    Whether its account still exists, as it did when the token was issued, is the caller's
    check (``app.services.accounts.ActiveAccounts``)."""
    key = hashlib.sha256(f"{settings.signing_secret()}\x1f{token}".encode()).digest()
    cached = _VERIFIED.get(key)
    if cached is not None:
        if cached.expires_at > time.time():
            return cached
        raise Unauthenticated("token expired: log in again")
    found = _decode(token, settings)
    _VERIFIED[key] = found
    return found


def _decode(token: str, settings: Settings) -> Token:
    try:
        claims = jwt.decode(
            token,
            settings.signing_secret(),
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub", "iat"]},
        )
        principal = Principal(
            account_id=int(claims["sub"]), user_id=int(claims["uid"]), role=Role(claims["role"])
        )
        return Token(principal, float(claims["iat"]), float(claims["exp"]))
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("token expired: log in again") from exc
    except (jwt.InvalidTokenError, KeyError, ValueError, TypeError) as exc:
        raise Unauthenticated("invalid token") from exc


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None when absent."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()
