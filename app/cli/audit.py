"""``cinerec audit``: check the audit log's hash chain."""

from __future__ import annotations

import asyncio

import typer

from app.infra.database import create_engine, session_factory
from app.infra.migrations import ensure_schema
from app.infra.settings import get_settings
from app.services.audit import AuditLog, ChainCheck

app = typer.Typer(help="The audit log.", no_args_is_help=True)


@app.command("verify")
def audit_verify() -> None:
    """Walk the audit log's hash chain: exit 0 and print the head (keep it elsewhere: only the
    removal of the last lines leaves the chain whole), or exit 1 and name the first broken line."""
    settings = get_settings()
    ensure_schema(settings, migrate=False)

    async def run() -> ChainCheck:
        engine = create_engine(settings)
        try:
            return await AuditLog(session_factory(engine)).verify()
        finally:
            await engine.dispose()

    found = asyncio.run(run())
    if not found.ok:
        typer.secho(
            f"audit log broken at line {found.broken_at}: {found.problem} "
            f"(lines 1 to {found.head_id} hold, head {found.head_hash})",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"audit log intact: {found.lines} lines, head {found.head_id} {found.head_hash}")
