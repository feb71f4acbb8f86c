"""``cinerec db``: the schema, through Alembic."""

from __future__ import annotations

import asyncio

import typer

from app.infra.migrations import revision_gap, upgrade
from app.infra.settings import get_settings

app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    upgrade(get_settings(), revision)
    typer.echo("database schema is up to date")


@app.command("current")
def db_current() -> None:
    """Print the database's schema revision and the newest one."""
    current, head = asyncio.run(revision_gap(get_settings()))
    typer.echo(f"current: {current or 'none'}  newest: {head}")
