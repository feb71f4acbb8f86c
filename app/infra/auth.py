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


class Scope(StrEnum):
    """What a service's API key may do."""

    CATALOG = "catalog"  # read the catalog, as an anonymous caller may, with a bucket of its own
    RECOMMEND = "recommend"  # besides, read any user's profile, recommendations and explanations
    ADMIN = "admin"  # everything an admin may


@dataclass(frozen=True)
class Principal:
    """Who is calling: a person's account (its MovieLens user id and role), or a service's API
    key (``key``: its name; ``user_id`` 0, no user: it acts for users, never as one)."""

    account_id: int
    user_id: int
    role: Role
    key: str | None = None
    scope: Scope | None = None
    key_prefix: str | None = None  # the key's public prefix: its rate-limit bucket

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def is_key(self) -> bool:
        return self.key is not None

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        return f"key:{self.key}" if self.key is not None else f"account:{self.account_id}/user:{self.user_id}"

    def may_read_user(self, user_id: int) -> bool:
        return self.is_admin or self.scope is Scope.RECOMMEND or (not self.is_key and self.user_id == user_id)


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


def credentials(header: str | None) -> tuple[str, str] | None:
    """(scheme, secret) of an ``Authorization: Bearer <token>`` or ``ApiKey <key>`` header
    (scheme ``bearer`` or ``apikey``), or None when absent."""
    if not header:
        return None
    scheme, _, secret = header.partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "apikey") or not secret.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>' or 'ApiKey <key>'")
    return scheme, secret.strip()


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None when absent."""
    found = credentials(header)
    if found is None:
        return None
    if found[0] != "bearer":
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return found[1]


# An API key: "ck_" + a public prefix (finds the row) + "_" + the secret (checked by its hash).
KEY_PREFIX = "ck_"


def new_api_key() -> tuple[str, str, str]:
    """(the whole key, shown once; its public prefix; the SHA-256 of the whole key, stored)."""
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, api_key_hash(key)


def api_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_prefix(key: str) -> str:
    """The public prefix of a key; UNAUTHENTICATED when it is not shaped like one."""
    if not key.startswith(KEY_PREFIX):
        raise Unauthenticated("invalid API key")
    prefix, _, secret = key[len(KEY_PREFIX) :].partition("_")
    if len(prefix) != 12 or not secret:
        raise Unauthenticated("invalid API key")
    return prefix
