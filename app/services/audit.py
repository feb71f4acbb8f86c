"""The audit log: who did what to the service, when, from where, and how it ended.

Lines are only ever appended. Each carries the SHA-256 of its own fields and of the line
before it, and line ids run 1, 2, 3… without gaps (each is the one before plus one, taken
under a lock), so :func:`verify_chain` finds an edited line, a deleted one, or one put in
between. On PostgreSQL a trigger refuses UPDATE and DELETE besides (migration 0009). Only
the last lines' removal leaves the chain whole: the head (its id and hash) that ``cinerec
audit verify`` prints is what an operator keeps elsewhere to catch that.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text

from app.infra.tables import audit_log

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

GENESIS = "0" * 64
# a PostgreSQL advisory lock's key: one writer of the chain at a time, across replicas
_LOCK = 0x63696E6572656361  # "cinereca"
# argument names whose values never reach the log
SECRET_ARGUMENTS = frozenset({"password", "newpassword", "token", "key", "secret"})


@dataclass(frozen=True)
class AuditLine:
    entry_id: int
    at: datetime
    actor: str
    action: str
    arguments: dict[str, Any]
    client: str
    result: str
    previous_hash: str
    hash: str


def line_hash(
    previous: str,
    entry_id: int,
    at: datetime,
    actor: str,
    action: str,
    arguments: str,
    client: str,
    result: str,
) -> str:
    fields = [
        previous,
        entry_id,
        at.isoformat(timespec="microseconds"),
        actor,
        action,
        arguments,
        client,
        result,
    ]
    return hashlib.sha256(json.dumps(fields, separators=(",", ":")).encode()).hexdigest()


def without_secrets(arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments with secret values replaced, at any depth."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: ("[secret]" if k.lower().replace("_", "") in SECRET_ARGUMENTS else clean(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(arguments)  # type: ignore[no-any-return]


def pseudonym(secret: str, user_id: int) -> str:
    """What the log calls an erased user: the same user gives the same pseudonym (an operator
    who is told the id can find its line), and the pseudonym does not give the id back."""
    digest = hmac.new(secret.encode(), f"erased-user:{user_id}".encode(), hashlib.sha256).hexdigest()
    return f"erased:{digest[:20]}"


@dataclass(frozen=True)
class ChainCheck:
    """What :func:`verify_chain` found: the lines read, the head, and the first broken line."""

    lines: int
    head_id: int
    head_hash: str
    broken_at: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify_chain(rows: Iterable[Any]) -> ChainCheck:
    """Walk the lines in id order: each id one above the last, each previous hash the last
    line's hash, each hash its fields' hash."""
    previous, expected, count = GENESIS, 1, 0
    for row in rows:
        count += 1
        if row.entry_id != expected:
            what = "deleted" if row.entry_id > expected else "out of order"
            return ChainCheck(count, expected - 1, previous, expected, f"line {expected} is {what}")
        if row.previous_hash != previous:
            return ChainCheck(
                count, expected - 1, previous, row.entry_id, "it does not follow the line before"
            )
        computed = line_hash(
            previous, row.entry_id, row.at, row.actor, row.action, row.arguments, row.client, row.result
        )
        if computed != row.hash:
            return ChainCheck(count, expected - 1, previous, row.entry_id, "its fields were changed")
        previous, expected = row.hash, expected + 1
    return ChainCheck(count, expected - 1, previous)


class AuditLog:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._lock = asyncio.Lock()  # one writer in this process (SQLite has no advisory lock)

    async def record(
        self, *, actor: str, action: str, arguments: dict[str, Any], client: str, result: str
    ) -> AuditLine:
        encoded = json.dumps(without_secrets(arguments), sort_keys=True, default=str)
        at = datetime.now(UTC).replace(tzinfo=None)
        async with self._lock, self.sessions() as session:
            if session.bind is not None and session.bind.dialect.name == "postgresql":
                await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
            last = (
                await session.execute(
                    select(audit_log.c.entry_id, audit_log.c.hash)
                    .order_by(audit_log.c.entry_id.desc())
                    .limit(1)
                )
            ).first()
            entry_id, previous = (last.entry_id + 1, last.hash) if last else (1, GENESIS)
            digest = line_hash(previous, entry_id, at, actor, action[:64], encoded, client[:64], result[:64])
            values = {
                "entry_id": entry_id,
                "at": at,
                "actor": actor[:128],
                "action": action[:64],
                "arguments": encoded,
                "client": client[:64],
                "result": result[:64],
                "previous_hash": previous,
                "hash": digest,
            }
            await session.execute(audit_log.insert().values(**values))
            await session.commit()
        return AuditLine(**{**values, "arguments": json.loads(encoded)})

    async def page(
        self, *, first: int, before: int | None = None, action: str | None = None
    ) -> list[AuditLine]:
        """The newest lines first, older than ``before`` (an entry id) when given."""
        query = select(audit_log).order_by(audit_log.c.entry_id.desc()).limit(first)
        if before is not None:
            query = query.where(audit_log.c.entry_id < before)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            AuditLine(**{**row._asdict(), "arguments": json.loads(row.arguments)})  # type: ignore[arg-type]
            for row in rows
        ]

    async def count(self) -> int:
        async with self.sessions() as session:
            return int((await session.execute(select(func.count()).select_from(audit_log))).scalar_one())

    async def verify(self) -> ChainCheck:
        async with self.sessions() as session:
            rows = (await session.execute(select(audit_log).order_by(audit_log.c.entry_id))).all()
        return verify_chain(rows)
