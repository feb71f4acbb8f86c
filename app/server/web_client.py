"""The reference web client (web/, built into app/static/client): the page at ``/`` and its
assets under ``/client``. The page may reach only this server (Content-Security-Policy)."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

CLIENT = Path(__file__).parents[1] / "static" / "client"
# 'self' covers the page's own ws:// origin in CSP level 3: nothing else may be fetched
POLICY = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


# GraphiQL (CodeMirror, React) sets styles inline and embeds its fonts: allowed on its page only
IDE_POLICY = POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'").replace(
    "img-src 'self' data:", "img-src 'self' data:; font-src 'self' data:"
)


def _headers(policy: str) -> dict[str, str]:
    """What every HTML response carries, wherever it is served from: it runs only what this
    server sends, and no other site may frame it (a framed page would click for its user)."""
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    }


def graphiql() -> Response:
    """GraphiQL from the package (built from web/src/graphiql.js): no request leaves the machine."""
    return FileResponse(CLIENT / "graphiql.html", headers=_headers(IDE_POLICY))


async def page(request: Request) -> Response:
    return FileResponse(CLIENT / "index.html", headers=_headers(POLICY))


# text worth compressing; gzip where the client takes it (every browser does)
COMPRESSED = (".js", ".css", ".html", ".svg", ".json")


def takes_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (by name or ``*``, at a weight above 0)."""
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.partition(";")
        if coding.strip() in ("gzip", "*"):
            weight = params.strip().removeprefix("q=") or "1"
            try:
                return float(weight) > 0
            except ValueError:
                return False
    return False


class ClientFiles(StaticFiles):
    """The client's built files: gzip-compressed where the client takes it (each file once per
    process, off the event loop), revalidated by ETag on every use (``no-cache``: the names carry
    no content hash); an HTML file with its page's headers, every file ``nosniff``, and
    GraphiQL's files only where GraphiQL is on."""

    def __init__(self, *, graphiql: bool) -> None:
        super().__init__(directory=CLIENT)
        self.graphiql = graphiql
        self._gzipped: dict[tuple[str, int, int], bytes] = {}  # (path, mtime, size) -> body

    async def get_response(self, path: str, scope: Scope) -> Response:
        if not self.graphiql and Path(path).name.startswith("graphiql"):
            raise HTTPException(status_code=404)
        response = await super().get_response(path, scope)
        if path.endswith(".html"):
            response.headers.update(
                _headers(IDE_POLICY if Path(path).name.startswith("graphiql") else POLICY)
            )
        else:
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Cache-Control"] = "no-cache"
        if (
            isinstance(response, FileResponse)
            and response.status_code == 200
            and path.endswith(COMPRESSED)
            and takes_gzip(Headers(scope=scope).get("accept-encoding", ""))
        ):
            return await self._compressed(response)
        return response

    async def _compressed(self, response: FileResponse) -> Response:
        stat = response.stat_result
        if stat is None:
            stat = await asyncio.to_thread(Path(response.path).stat)
        key = (str(response.path), stat.st_mtime_ns, stat.st_size)
        if (body := self._gzipped.get(key)) is None:
            path = Path(response.path)
            body = await asyncio.to_thread(lambda: gzip.compress(path.read_bytes(), 9, mtime=0))
            self._gzipped[key] = body
        headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        # the same file in another encoding: a weak tag, which revalidates against either
        headers.update(
            {"content-encoding": "gzip", "vary": "Accept-Encoding", "etag": f"W/{headers['etag']}"}
        )
        return Response(body, headers=headers, media_type=response.media_type)


def routes(*, graphiql: bool) -> list[Route | Mount]:
    return [Route("/", page), Mount("/client", ClientFiles(graphiql=graphiql), name="client")]
