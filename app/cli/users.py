"""``cinerec users``: logins and roles."""

from __future__ import annotations

import asyncio
import getpass
from typing import TYPE_CHECKING, Annotated

import typer

from app.infra.announcements import ACCOUNTS, publish_sync
from app.infra.auth import PasswordHasher, Role
from app.infra.database import create_engine, session_factory
from app.infra.errors import CinerecError
from app.infra.migrations import ensure_schema
from app.infra.settings import Settings, get_settings
from app.services import accounts
from app.services.audit import AuditLog

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

app = typer.Typer(help="Logins and roles.", no_args_is_help=True)


def _create(email: str, password: str, *, role: Role, user_id: int | None) -> int:
    return create_login(get_settings(), email, password, role=role, user_id=user_id)


def create_login(settings: Settings, email: str, password: str, *, role: Role, user_id: int | None) -> int:
    """A login in ``settings``' database (what `cinerec users create` and `create-admin` do): its user id."""
    ensure_schema(settings, migrate=True)

    async def run() -> int:
        engine = create_engine(settings)
        hasher = PasswordHasher()
        try:
            async with session_factory(engine)() as session:
                principal = await accounts.create_account(
                    session=session, hasher=hasher, email=email, password=password, role=role, user_id=user_id
                )
                return principal.user_id
        finally:
            hasher.close()
            await engine.dispose()

    return asyncio.run(run())


@app.command("create-admin")
def users_create_admin(
    email: Annotated[str, typer.Option()],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
) -> None:
    """Create an admin login (a new user)."""
    uid = _create(email, password, role=Role.ADMIN, user_id=None)
    typer.echo(f"created admin login {email} for user {uid}")


@app.command("create")
def users_create(
    email: Annotated[str, typer.Option()],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
    user_id: Annotated[
        int | None, typer.Option(help="Link the login to this existing MovieLens user.")
    ] = None,
) -> None:
    """Create a user login, for a new user or an existing MovieLens user."""
    uid = _create(email, password, role=Role.USER, user_id=user_id)
    typer.echo(f"created user login {email} for user {uid}")


def _change(email: str, role: Role | None) -> None:
    """Change (``role``) or delete (None) a login, then tell running servers so that its
    tokens follow at once."""
    settings = get_settings()
    ensure_schema(settings, migrate=True)

    async def run() -> int:
        engine = create_engine(settings)
        sessions = session_factory(engine)
        action = "users delete" if role is None else "users set-role"
        arguments = {"email": email, **({"role": role.value} if role is not None else {})}
        try:
            try:
                async with sessions() as session:
                    if role is None:
                        found = await accounts.delete_account(session=session, email=email)
                    else:
                        found = await accounts.set_role(session=session, email=email, role=role)
            except CinerecError as exc:
                await _audit(sessions, action, arguments, str(exc.extensions.get("code", "ERROR")))
                raise
            await _audit(sessions, action, arguments, "ok")
            return found
        finally:
            await engine.dispose()

    account_id = asyncio.run(run())
    publish_sync(settings, ACCOUNTS, {"accountId": account_id})


async def _audit(
    sessions: async_sessionmaker[AsyncSession], action: str, arguments: dict, result: str
) -> None:
    """The audit log's line for a change made from the command line, by the OS user who ran it."""
    await AuditLog(sessions).record(
        actor=f"cli:{getpass.getuser()}",
        action=action,
        arguments=arguments,
        client="localhost",
        result=result,
    )


@app.command("set-role")
def users_set_role(
    email: Annotated[str, typer.Option()],
    role: Annotated[Role, typer.Option(help="user or admin")],
) -> None:
    """Change a login's role; its tokens carry the new role on their next request."""
    _change(email, role)
    typer.echo(f"login {email} is now {role.value}")


@app.command("delete")
def users_delete(email: Annotated[str, typer.Option()]) -> None:
    """Delete a login (the MovieLens user and ratings stay); its tokens stop working."""
    _change(email, None)
    typer.echo(f"deleted login {email}")
