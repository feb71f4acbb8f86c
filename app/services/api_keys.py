"""Service API keys: created and revoked by admins, shown once, stored hashed, and read from
the database on every use (one lookup by the key's indexed prefix), so that a revoked key
fails on its next request on every replica, Redis or not; the revocation's announcement
closes the key's open sockets everywhere."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from app.infra.auth import Principal, Role, Scope, api_key_hash, api_key_prefix, new_api_key
from app.infra.errors import BadUserInput, NotFound, Unauthenticated
from app.infra.tables import api_keys

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")


@dataclass(frozen=True)
class ApiKeyInfo:
    """A key as an admin lists it: never its secret."""

    key_id: int
    name: str
    scope: Scope
    prefix: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


def key_principal(key_id: int, name: str, scope: Scope, prefix: str) -> Principal:
    """A key's principal: no user of its own (user id 0; MovieLens ids start at 1), an account
    id no person's account has (negative), admin rights for the admin scope only."""
    role = Role.ADMIN if scope is Scope.ADMIN else Role.USER
    return Principal(account_id=-key_id, user_id=0, role=role, key=name, scope=scope, key_prefix=prefix)


def _info(row: object) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=row.key_id,  # type: ignore[attr-defined]
        name=row.name,  # type: ignore[attr-defined]
        scope=Scope(row.scope),  # type: ignore[attr-defined]
        prefix=row.prefix,  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
        created_by=row.created_by,  # type: ignore[attr-defined]
        revoked_at=row.revoked_at,  # type: ignore[attr-defined]
    )


class ApiKeys:
    """Admins' keys for services (``Authorization: ApiKey <key>``)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        # told of a revocation, to close the key's sockets on every replica
        self.revoked: Callable[[str, int], Awaitable[None]] | None = None

    async def create(self, *, name: str, scope: Scope, by: str) -> tuple[str, ApiKeyInfo]:
        """(the key, to be shown once; what is stored about it)."""
        if not _NAME.match(name):
            raise BadUserInput(
                "a key's name is 2 to 63 characters: lowercase letters, digits, '.', '_' and '-'",
                field="name",
            )
        key, prefix, digest = new_api_key()
        now = datetime.now(UTC).replace(tzinfo=None)
        async with self.sessions() as session:
            try:
                row = (
                    await session.execute(
                        api_keys.insert()
                        .values(
                            name=name,
                            scope=scope.value,
                            prefix=prefix,
                            secret_hash=digest,
                            created_at=now,
                            created_by=by,
                        )
                        .returning(*api_keys.c)
                    )
                ).one()
                await session.commit()
            except IntegrityError as exc:
                await session.rollback()
                raise BadUserInput(f"a key named {name!r} exists already", field="name") from exc
        return key, _info(row)

    async def list(self) -> list[ApiKeyInfo]:
        async with self.sessions() as session:
            rows = (await session.execute(select(api_keys).order_by(api_keys.c.key_id))).all()
        return [_info(r) for r in rows]

    async def revoke(self, name: str) -> ApiKeyInfo:
        """The key fails from its next request on, on every replica; revoking twice is a no-op."""
        now = datetime.now(UTC).replace(tzinfo=None)
        async with self.sessions() as session:
            await session.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            row = (await session.execute(select(api_keys).where(api_keys.c.name == name))).first()
            await session.commit()
        if row is None:
            raise NotFound(f"no API key named {name!r}")
        if self.revoked is not None:
            await self.revoked(row.prefix, -row.key_id)
        return _info(row)

    async def verify(self, key: str) -> Principal:
        """The key's principal; UNAUTHENTICATED for an unknown, wrong or revoked key."""
        prefix = api_key_prefix(key)
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(api_keys).where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
                )
            ).first()
        if row is None or not hmac.compare_digest(row.secret_hash, api_key_hash(key)):
            raise Unauthenticated("invalid or revoked API key")
        return key_principal(row.key_id, row.name, Scope(row.scope), row.prefix)
