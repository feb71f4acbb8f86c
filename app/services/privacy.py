"""A person's own data: everything held about them, exported as JSON, and erased in one
transaction (GDPR articles 15, 17 and 20).

What is held about a user id: the account (email, role, when made and last signed out), the
user's demographics, ratings, tags, dismissals, deleted-rating tombstones, clicks, and
impressions; each experiment's arm is a hash of the user id, not stored, and is exported as
computed. Erasure deletes every row of them, takes the user's ratings out of each movie's
statistics, and keeps the user id in ``erased_users`` (a number, nothing else) so that no new
account is ever given it: a model trained before the erasure still holds the user's history
under that id until the next training, which reads the ratings table and so forgets them.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from strawberry.utils.str_converters import to_camel_case

from app.infra.errors import NotFound
from app.infra.tables import (
    accounts,
    clicks,
    deleted_ratings,
    dismissals,
    erased_users,
    experiments,
    impressions,
    ratings,
    tags,
    users,
)
from app.services.experiments import Arm, Running
from app.services.ratings import without_rating

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from app.infra.cache import Generations


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _at(seconds: float | None) -> str | None:
    return datetime.fromtimestamp(seconds, UTC).isoformat() if seconds is not None else None


async def _rows(session: AsyncSession, table: Any, user_id: int, *order: Any) -> list[dict[str, Any]]:
    query = select(table).where(table.c.user_id == user_id).order_by(*order)
    return [dict(r._mapping) for r in (await session.execute(query)).all()]


async def _account(session: AsyncSession, account_id: int) -> Any:
    found = (await session.execute(select(accounts).where(accounts.c.account_id == account_id))).first()
    if found is None:
        raise NotFound("this account no longer exists")
    return found


class PersonalData:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], generations: Generations) -> None:
        self.sessions = sessions
        self.generations = generations

    async def export(self, account_id: int) -> dict[str, Any]:
        """Everything held about the account's user, as JSON-ready values."""
        async with self.sessions() as session:
            account = await _account(session, account_id)
            user_id = account.user_id
            user = (await session.execute(select(users).where(users.c.user_id == user_id))).first()
            held = {
                "ratings": await _rows(session, ratings, user_id, ratings.c.timestamp, ratings.c.movie_id),
                "tags": await _rows(session, tags, user_id, tags.c.timestamp, tags.c.tag_id),
                "dismissals": await _rows(session, dismissals, user_id, dismissals.c.dismissed_at),
                "deletedRatings": await _rows(
                    session, deleted_ratings, user_id, deleted_ratings.c.deleted_at
                ),
                "clicks": await _rows(session, clicks, user_id, clicks.c.clicked_at, clicks.c.click_id),
                "impressions": await _rows(
                    session, impressions, user_id, impressions.c.shown_at, impressions.c.impression_id
                ),
            }
            tests = (await session.execute(select(experiments).order_by(experiments.c.started_at))).all()
        arms = []
        for test in tests:
            running = Running(
                test.name,
                test.salt,
                tuple(Arm(a["alias"], a["version"], float(a["weight"])) for a in json.loads(test.arms)),
                test.window_seconds,
            )
            arm = running.arm_for(user_id)
            arms.append(
                {
                    "experiment": test.name,
                    "arm": arm.alias,
                    "version": arm.version,
                    "active": test.active,
                    "startedAt": _at(test.started_at),
                    "stoppedAt": _at(test.stopped_at),
                }
            )
        return {
            "exportedAt": datetime.now(UTC).isoformat(),
            "account": {
                "accountId": account.account_id,
                "email": account.email,
                "role": account.role,
                "createdAt": _iso(account.created_at),
                "signedOutAt": _at(account.signed_out_at),
            },
            "user": {
                "userId": user_id,
                **(
                    {k: user._mapping[k] for k in ("age", "gender", "occupation", "zip_code")}
                    if user is not None
                    else {}
                ),
            },
            **{
                name: [{to_camel_case(k): v for k, v in row.items() if k != "user_id"} for row in rows]
                for name, rows in held.items()
            },
            "experimentArms": arms,
        }

    async def erase(self, account_id: int) -> tuple[int, dict[str, int]]:
        """(the erased user id, rows deleted by table), all in one transaction."""
        async with self.sessions() as session:
            account = await _account(session, account_id)
            user_id = account.user_id
            rated = (
                await session.execute(
                    select(ratings.c.movie_id, ratings.c.rating).where(ratings.c.user_id == user_id)
                )
            ).all()
            # each rated movie's statistics without this user's rating (movie ids in order: two
            # erasures touching the same movies lock them in the same order)
            for movie_id, value in sorted(rated):
                await session.execute(without_rating(movie_id, value))
            deleted: dict[str, int] = {}
            for table in (ratings, tags, dismissals, deleted_ratings, clicks, impressions, accounts, users):
                result = await session.execute(delete(table).where(table.c.user_id == user_id))
                deleted[table.name] = int(result.rowcount)  # type: ignore[attr-defined]
            await session.execute(erased_users.insert().values(user_id=user_id))
            await session.commit()
        await self.generations.bump("user", user_id)
        await asyncio.gather(*(self.generations.bump("movie", movie_id) for movie_id, _ in rated))
        return user_id, deleted
