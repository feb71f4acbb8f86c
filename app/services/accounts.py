"""Accounts: registration, login, and linking logins to MovieLens users."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.auth import Principal, Role, hash_password, verify_password
from app.errors import BadUserInput, NotFound, Unauthenticated
from app.models import Account, User

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

MIN_PASSWORD = 8
MAX_PASSWORD = 256
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
accounts = Account.__table__  # type: ignore[attr-defined]
users = User.__table__  # type: ignore[attr-defined]


def _check_credentials(email: str, password: str) -> str:
    email = email.strip().lower()
    if len(email) > 320 or not _EMAIL.match(email):
        raise BadUserInput("email is not a valid address", field="email")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadUserInput(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters", field="password")
    return email


def _principal(account: Account) -> Principal:
    assert account.account_id is not None
    return Principal(account_id=account.account_id, user_id=account.user_id, role=Role(account.role))


async def create_account(
    *, session: AsyncSession, email: str, password: str, role: Role = Role.USER, user_id: int | None = None
) -> Principal:
    """A login for an existing MovieLens user (``user_id``) or for a new user numbered above all others."""
    email = _check_credentials(email, password)
    if (await session.execute(select(accounts.c.account_id).where(accounts.c.email == email))).first():
        raise BadUserInput("an account with this email already exists", field="email")
    if user_id is None:
        user_id = (
            int((await session.execute(select(func.coalesce(func.max(users.c.user_id), 0)))).scalar_one()) + 1
        )
        session.add(User(user_id=user_id))
        await session.flush()  # the account's foreign key needs the user row first
    else:
        if await session.get(User, user_id) is None:
            raise NotFound(f"user {user_id} does not exist")
        if (
            await session.execute(select(accounts.c.account_id).where(accounts.c.user_id == user_id))
        ).first():
            raise BadUserInput(f"user {user_id} already has a login", field="userId")
    account = Account(email=email, password_hash=hash_password(password), role=role.value, user_id=user_id)
    session.add(account)
    try:
        await session.commit()
    except IntegrityError as exc:  # a concurrent registration took the email or the user id
        await session.rollback()
        raise BadUserInput("the account could not be created: email or user id taken; try again") from exc
    return _principal(account)


async def authenticate(*, session: AsyncSession, email: str, password: str) -> Principal:
    account = (
        await session.execute(select(Account).where(Account.email == email.strip().lower()))  # type: ignore[arg-type]
    ).scalar_one_or_none()
    if account is None or not verify_password(password, account.password_hash):
        raise Unauthenticated("invalid email or password")
    return _principal(account)
