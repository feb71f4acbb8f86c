"""The reference web client (web/, built into app/static/client): the page at ``/`` and its
assets under ``/client``. The page may reach only this server (Content-Security-Policy)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

CLIENT = Path(__file__).parent / "static" / "client"
# 'self' covers the page's own ws:// origin in CSP level 3: nothing else may be fetched
POLICY = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


# GraphiQL (CodeMirror, React) sets styles inline and embeds its fonts: allowed on its page only
IDE_POLICY = POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'").replace(
    "img-src 'self' data:", "img-src 'self' data:; font-src 'self' data:"
)


def graphiql() -> Response:
    """GraphiQL from the package (built from web/src/graphiql.js): no request leaves the machine."""
    return FileResponse(
        CLIENT / "graphiql.html",
        headers={
            "Content-Security-Policy": IDE_POLICY,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def page(request: Request) -> Response:
    return FileResponse(
        CLIENT / "index.html",
        headers={
            "Content-Security-Policy": POLICY,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


def routes() -> list[Route | Mount]:
    return [Route("/", page), Mount("/client", StaticFiles(directory=CLIENT), name="client")]
