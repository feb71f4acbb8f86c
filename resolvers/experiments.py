"""Model insight resolvers (admin): experiments (start, stop, report) and drift."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.services.drift import StoredDrift
    from app.services.experiments import Report
    from graphql_schema.context import Context


async def start(ctx: Context, *, name: str, arms: Sequence[tuple[str, float]]) -> Report:
    return await ctx.services.experiments.start(name, arms)


async def stop(ctx: Context, *, name: str) -> Report:
    return await ctx.services.experiments.stop(name)


async def report(ctx: Context, *, name: str) -> Report:
    return await ctx.services.experiments.report(name)


async def drift(ctx: Context) -> StoredDrift | None:
    return await ctx.services.drift.refresh()
