"""``cinerec serve``."""

from __future__ import annotations

from typing import Annotated

import typer

from app.migrate import ensure_schema
from app.settings import get_settings


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes.")] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
    migrate: Annotated[
        bool | None, typer.Option(help="Run pending migrations first (default: CINEREC_AUTO_MIGRATE).")
    ] = None,
) -> None:
    """Serve the GraphQL API (GraphiQL at /graphql) with uvicorn."""
    import uvicorn

    settings = get_settings()
    ensure_schema(settings, migrate=settings.auto_migrate if migrate is None else migrate)
    typer.echo(
        f"cinerec serving GraphQL at http://{host}:{port}/graphql ({settings.database_url.split(':')[0]})"
    )
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=access_log,
        # SIGTERM: stop accepting, let in-flight requests finish, but never wait forever
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
    )
