"""What operators must trust: service API keys, the audit log, a person's data exported and
erased."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.infra.auth import Scope
from app.infra.errors import BadUserInput, NotFound
from app.services.audit import pseudonym
from resolvers.movies import Page
from resolvers.pagination import check_first, decode_cursor, encode_cursor

if TYPE_CHECKING:
    from app.services.api_keys import ApiKeyInfo
    from graphql_schema.context import Context


async def create_api_key(ctx: Context, *, name: str, scope: str) -> tuple[str, ApiKeyInfo]:
    principal = ctx.require_principal()
    return await ctx.services.api_keys.create(name=name, scope=Scope(scope), by=principal.actor)


async def api_keys(ctx: Context) -> list[ApiKeyInfo]:
    return await ctx.services.api_keys.list()


async def revoke_api_key(ctx: Context, *, name: str) -> ApiKeyInfo:
    return await ctx.services.api_keys.revoke(name)


async def audit_log(ctx: Context, *, first: int, after: str | None, action: str | None) -> Page:
    """The newest lines first; ``after`` is the cursor of the last line of the page before."""
    check_first(first, ctx.settings.max_page_size)
    before = int(decode_cursor(after, (int,))[0]) if after is not None else None
    audit = ctx.services.audit
    lines = await audit.page(first=first + 1, before=before, action=action) if first else []
    edges = [(encode_cursor(line.entry_id), line) for line in lines[:first]]
    return Page(edges, len(lines) > first, before is not None, audit.count)  # type: ignore[arg-type]


async def export_my_data(ctx: Context) -> dict[str, Any]:
    principal = ctx.require_user()
    return await ctx.services.personal.export(principal.account_id)


async def delete_my_account(ctx: Context, *, password: str) -> bool:
    """The caller's account and everything held about them, after their password again."""
    principal = ctx.require_user()
    await ctx.services.accounts.confirm(principal, password=password, client=ctx.client)
    await _erase(ctx, principal.account_id)
    return True


async def delete_account(ctx: Context, *, user_id: int) -> str:
    """An admin erases a user's account; the answer is the pseudonym the audit log keeps."""
    account_id = await ctx.services.accounts.account_of(user_id)
    if account_id is None:
        raise NotFound(f"user {user_id} has no account")
    principal = ctx.require_principal()
    if account_id == principal.account_id:
        raise BadUserInput("use deleteMyAccount to erase your own account", field="userId")
    await _erase(ctx, account_id)
    return pseudonym(ctx.settings.signing_secret(), user_id)


async def _erase(ctx: Context, account_id: int) -> None:
    await ctx.services.personal.erase(account_id)
    await ctx.services.accounts.gone(account_id)
