"""Service API keys: created and revoked by admins, shown once, stored hashed.

A revoked key must fail on its next request on every replica. Each replica keeps the keys it
has checked, tagged with the keys' epoch: a random token in Redis that every revocation
replaces before it answers. A request reads the epoch (one GET, about a tenth of the database
lookup it saves, measured in docs/benchmarks.md) and uses its cached check only under the same
epoch; without Redis, or with the key missing (Redis restarted), it reads the database. The
revocation's announcement also clears every replica's checks and closes the key's sockets."""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cachetools import TTLCache
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from app.infra.auth import Principal, Role, Scope, api_key_hash, api_key_prefix, new_api_key
from app.infra.cache import Unavailable
from app.infra.errors import BadUserInput, NotFound, Unauthenticated
from app.infra.tables import api_keys

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from app.infra.cache import RedisHealth

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


def _info(row: Any) -> ApiKeyInfo:
    fields = {k: v for k, v in row._mapping.items() if k != "secret_hash"}
    return ApiKeyInfo(**{**fields, "scope": Scope(row.scope)})


class ApiKeys:
    """Admins' keys for services (``Authorization: ApiKey <key>``)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        health: RedisHealth,
        *,
        prefix: str,
        ttl: float = 60.0,
    ) -> None:
        self.sessions = sessions
        self.health = health
        self.epoch_key = f"{prefix}:api-keys:epoch"
        # prefix -> (the epoch it was checked under, its stored hash, its principal)
        self._checked: TTLCache[str, tuple[str, str, Principal]] = TTLCache(maxsize=10_000, ttl=ttl)
        # told of a revocation, to forget it and close the key's sockets on every replica
        self.revoked: Callable[[str, int], Awaitable[None]] | None = None

    async def _epoch(self) -> str | None:
        found = await self.health.run(lambda redis: redis.get(self.epoch_key))
        if isinstance(found, Unavailable):
            # a revocation during the outage could not replace the epoch: what was checked
            # before it is not trusted after it
            self.forget()
            return None
        if found is None:
            return None
        return found.decode() if isinstance(found, bytes) else str(found)

    async def _new_epoch(self) -> None:
        await self.health.run(lambda redis: redis.set(self.epoch_key, secrets.token_hex(16)))

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
        await self._new_epoch()  # before answering: every replica's next check reads the database
        if self.revoked is not None:
            await self.revoked(row.prefix, -row.key_id)
        return _info(row)

    async def verify(self, key: str) -> Principal:
        """The key's principal; UNAUTHENTICATED for an unknown, wrong or revoked key."""
        prefix = api_key_prefix(key)
        epoch = await self._epoch()
        if epoch is None:  # the first use since Redis started, or no Redis: the database says
            await self._new_epoch()
            epoch = await self._epoch()
        checked = self._checked.get(prefix)
        if epoch is None or checked is None or checked[0] != epoch:
            async with self.sessions() as session:
                row = (
                    await session.execute(
                        select(api_keys).where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
                    )
                ).first()
            if row is None:
                raise Unauthenticated("invalid or revoked API key")
            checked = (
                epoch or "",
                row.secret_hash,
                key_principal(row.key_id, row.name, Scope(row.scope), row.prefix),
            )
            if epoch is not None:
                self._checked[prefix] = checked
        if not hmac.compare_digest(checked[1], api_key_hash(key)):
            raise Unauthenticated("invalid or revoked API key")
        return checked[2]

    def forget(self) -> None:
        """Drop every check this replica holds (a revocation here or elsewhere, a Redis outage)."""
        self._checked.clear()
