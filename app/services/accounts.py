"""Accounts: registration, login, linking logins to MovieLens users, and whether a token's
account still exists with the role it claims."""

from __future__ import annotations

import re
import time
import unicodedata
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

from cachetools import TTLCache
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from app.infra.auth import Principal, Role, credentials, issue_token, read_token
from app.infra.errors import BadUserInput, NotFound, Unauthenticated
from app.infra.tables import Account, User, accounts, erased_users, users

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from app.infra.auth import PasswordHasher, Token
    from app.infra.settings import Settings
    from app.infra.throttles import LoginThrottle, RegisterThrottle
    from app.services.api_keys import ApiKeys

MIN_PASSWORD = 8
MAX_PASSWORD = 256
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The 10,000 most common passwords of 8+ characters (app/data/common_passwords.txt)."""
    text = resources.files("app").joinpath("data/common_passwords.txt").read_text()
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


def normalise_email(email: str) -> str | None:
    """The address in canonical form, or None if it is not a plausible address."""
    email = email.strip().lower()
    if len(email) > 320 or not _EMAIL.match(email) or any(unicodedata.category(c)[0] == "C" for c in email):
        return None
    return email


def check_password(password: str) -> None:
    """Length, no control characters, not only whitespace, not a common password."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadUserInput(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters", field="password")
    if any(unicodedata.category(c)[0] == "C" for c in password):
        raise BadUserInput("password must not contain control characters", field="password")
    if not password.strip():
        raise BadUserInput("password must not be only whitespace", field="password")
    if password.lower() in common_passwords():
        raise BadUserInput("password is one of the most common passwords: choose another", field="password")


def _principal(account: Account) -> Principal:
    assert account.account_id is not None
    return Principal(account_id=account.account_id, user_id=account.user_id, role=Role(account.role))


async def create_account(
    *,
    session: AsyncSession,
    hasher: PasswordHasher,
    email: str,
    password: str,
    role: Role = Role.USER,
    user_id: int | None = None,
) -> Principal:
    """A login for an existing MovieLens user (``user_id``) or for a new user numbered above all others."""
    canonical = normalise_email(email)
    if canonical is None:
        raise BadUserInput("email is not a valid address", field="email")
    check_password(password)
    password_hash = await hasher.hash(password)  # before any lookup: every outcome costs the same
    if (await session.execute(select(accounts.c.account_id).where(accounts.c.email == canonical))).first():
        raise BadUserInput("an account with this email already exists", field="email")
    if user_id is None:
        # above every user and every erased user: an erased user's id is never given again
        highest = [
            int((await session.execute(select(func.coalesce(func.max(table.c.user_id), 0)))).scalar_one())
            for table in (users, erased_users)
        ]
        user_id = max(highest) + 1
        session.add(User(user_id=user_id))
        await session.flush()  # the account's foreign key needs the user row first
    else:
        if await session.get(User, user_id) is None:
            raise NotFound(f"user {user_id} does not exist")
        if (
            await session.execute(select(accounts.c.account_id).where(accounts.c.user_id == user_id))
        ).first():
            raise BadUserInput(f"user {user_id} already has a login", field="userId")
    account = Account(email=canonical, password_hash=password_hash, role=role.value, user_id=user_id)
    session.add(account)
    try:
        await session.commit()
    except IntegrityError as exc:  # a concurrent registration took the email or the user id
        await session.rollback()
        raise BadUserInput("the account could not be created: email or user id taken; try again") from exc
    return _principal(account)


async def authenticate(
    *, session: AsyncSession, hasher: PasswordHasher, email: str, password: str
) -> Principal:
    """The account's principal; UNAUTHENTICATED otherwise, after the same work whether or not
    the email exists."""
    canonical = normalise_email(email)
    account = None
    if canonical is not None:
        account = (
            await session.execute(select(Account).where(Account.email == canonical))  # type: ignore[arg-type]
        ).scalar_one_or_none()
    ok = await hasher.verify(password, account.password_hash if account is not None else None)
    if account is None or not ok:
        raise Unauthenticated("invalid email or password")
    return _principal(account)


async def set_role(*, session: AsyncSession, email: str, role: Role) -> int:
    """Change an account's role; returns its account id."""
    found = (
        await session.execute(
            update(accounts)
            .where(accounts.c.email == email.strip().lower())
            .values(role=role.value)
            .returning(accounts.c.account_id)
        )
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(f"no account with email {email}")
    await session.commit()
    return int(found)


async def delete_account(*, session: AsyncSession, email: str) -> int:
    """Delete a login (its MovieLens user and ratings stay); returns its account id."""
    found = (
        await session.execute(
            delete(accounts).where(accounts.c.email == email.strip().lower()).returning(accounts.c.account_id)
        )
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(f"no account with email {email}")
    await session.commit()
    return int(found)


class ActiveAccounts:
    """Checks each token against its account: it must still exist, be the account the token
    was issued for (created no later than the token), and its role and user are read from the
    database, not trusted from the token. Read through a short cache (``ttl`` seconds), dropped
    at once when an account change is announced."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, ttl: float) -> None:
        self.sessions = sessions
        # account id -> (its principal now, when it was created and last signed out in Unix
        # seconds), or None: gone
        self._cache: TTLCache[int, tuple[Principal, float, float] | None] = TTLCache(maxsize=100_000, ttl=ttl)

    async def verify(self, token: Token) -> Principal:
        account_id = token.claimed.account_id
        if account_id in self._cache:
            found = self._cache[account_id]
        else:
            async with self.sessions() as session:
                row = (
                    await session.execute(
                        select(
                            accounts.c.user_id,
                            accounts.c.role,
                            accounts.c.created_at,
                            accounts.c.signed_out_at,
                        ).where(accounts.c.account_id == account_id)
                    )
                ).first()
            found = (
                (
                    Principal(account_id, row.user_id, Role(row.role)),
                    _unix_seconds(row.created_at),
                    row.signed_out_at or 0.0,
                )
                if row
                else None
            )
            self._cache[account_id] = found
        # A token older than its account was issued to an account that no longer exists, even
        # if its id were given again (ids are never reused: migration 0006; this is the second lock).
        if found is None or int(found[1]) > token.issued_at:
            raise Unauthenticated("this token's account no longer exists")
        if token.issued_at <= found[2]:
            raise Unauthenticated("this token was signed out: log in again")
        return found[0]

    def forget(self, account_id: int | None = None) -> None:
        if account_id is None:
            self._cache.clear()
        else:
            self._cache.pop(account_id, None)


def _unix_seconds(moment: datetime) -> float:
    """A stored naive UTC time as Unix seconds."""
    return moment.replace(tzinfo=UTC).timestamp() if moment.tzinfo is None else moment.timestamp()


class AccountService:
    """Registration, login and the caller behind a token: what the API's account fields use.

    A registration is limited per client address; a login holds a place in the login throttle
    while its password is checked (only a failure counts); a token's account is checked on
    every use (``ActiveAccounts``)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        settings: Settings,
        hasher: PasswordHasher,
        logins: LoginThrottle,
        registrations: RegisterThrottle,
        active: ActiveAccounts,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.hasher = hasher
        self.logins = logins
        self.registrations = registrations
        self.active = active
        # told of an account's change, to forget it and recheck its sockets on every replica
        self.changed: Callable[[int], Awaitable[None]] | None = None
        self.keys: ApiKeys | None = None  # services' keys, when this app takes them

    async def register(self, *, email: str, password: str, client: str) -> tuple[str, Principal]:
        """(a token, the new account's principal)."""
        await self.registrations.attempt(client)
        async with self.sessions() as session:
            principal = await create_account(
                session=session, hasher=self.hasher, email=email, password=password
            )
        return issue_token(principal, self.settings), principal

    async def login(self, *, email: str, password: str, client: str) -> tuple[str, Principal]:
        async with self.logins.attempt(email, client), self.sessions() as session:
            principal = await authenticate(
                session=session, hasher=self.hasher, email=email, password=password
            )
        return issue_token(principal, self.settings), principal

    async def sign_out(self, principal: Principal) -> None:
        """Every token of the account issued until now fails from here on, on every replica
        (the account-change announcement), and its open sockets close."""
        async with self.sessions() as session:
            await session.execute(
                update(accounts)
                .where(accounts.c.account_id == principal.account_id)
                .values(signed_out_at=time.time())
            )
            await session.commit()
        self.active.forget(principal.account_id)
        if self.changed is not None:
            await self.changed(principal.account_id)

    async def confirm(self, principal: Principal, *, password: str, client: str) -> None:
        """The caller's password again, before something that cannot be undone; a wrong one is
        BAD_USER_INPUT (the session stays valid) and counts as a failed login."""
        async with self.sessions() as session:
            email = (
                await session.execute(
                    select(accounts.c.email).where(accounts.c.account_id == principal.account_id)
                )
            ).scalar_one_or_none()
        if email is None:
            raise Unauthenticated("this token's account no longer exists")
        try:
            async with self.logins.attempt(email, client), self.sessions() as session:
                await authenticate(session=session, hasher=self.hasher, email=email, password=password)
        except Unauthenticated as exc:  # counted as a failed login; the session itself is fine
            raise BadUserInput("wrong password: nothing was changed", field="password") from exc

    async def account_of(self, user_id: int) -> int | None:
        """The account id of a user's login, None when the user has none."""
        async with self.sessions() as session:
            found = (
                await session.execute(select(accounts.c.account_id).where(accounts.c.user_id == user_id))
            ).scalar_one_or_none()
        return int(found) if found is not None else None

    async def gone(self, account_id: int) -> None:
        """An account was erased: its tokens fail and its sockets close, on every replica."""
        self.active.forget(account_id)
        if self.changed is not None:
            await self.changed(account_id)

    async def caller(self, authorization: str | None) -> tuple[Principal, Token | None] | None:
        """Who an ``Authorization`` value names (None: nothing given): a person's token or a
        service's key (no token, no expiry); UNAUTHENTICATED for a bad, expired or orphaned
        token and a wrong or revoked key."""
        given = credentials(authorization)
        if given is None:
            return None
        scheme, secret = given
        if scheme == "apikey":
            if self.keys is None:
                raise Unauthenticated("API keys are not accepted here")
            return await self.keys.verify(secret), None
        token = read_token(secret, self.settings)
        return await self.active.verify(token), token
