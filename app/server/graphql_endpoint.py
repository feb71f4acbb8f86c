"""The GraphQL endpoint: Strawberry's ASGI view with cinerec's context, request checks,
persisted queries, the response cache and a per-request time budget.

Every refusal a client can cause before execution is a JSON GraphQL error with a code,
never a plain-text 400 or a 500: a body that is not a JSON object, JSON nested too deep to
parse, an unsupported method or content type, a subscription sent over HTTP.

An anonymous catalog query sent as a persisted GET is answered from the response cache
before Strawberry sees it (``_cached``), and once answered, the same GET (the same bytes of
query string) is answered by ``CachedAnswers`` in front of every other layer of the app.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from cross_web import HTTPException
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from strawberry.asgi import GraphQL
from strawberry.types import ExecutionResult

from app.infra.auth import api_key_prefix, credentials, read_token
from app.infra.errors import CinerecError
from app.server import web_client
from app.server.callers import client_address
from app.server.persisted_queries import PersistedQueryNotFound, ResponseCache, registration_cost
from app.server.websockets import AuthenticatedTransportWS
from graphql_schema.charges import bucket_key, charge, empty_bucket, key_bucket
from graphql_schema.context import Context, build_context

if TYPE_CHECKING:
    from cross_web import AsyncHTTPRequestAdapter
    from starlette.types import ASGIApp, Receive, Scope, Send
    from starlette.websockets import WebSocket
    from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData

    from app.server.state import AppState

log = logging.getLogger(__name__)
requests_log = logging.getLogger("cinerec.requests")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


_PROCESS = uuid.uuid4().hex[:16]  # request ids made here: this process's random prefix and a count
_COUNT = itertools.count()


def _request_id(given: str) -> str:
    """The caller's X-Request-ID when it is a plain token (nginx sets one), else a new one
    (unique across processes without a call to the system's random source per request)."""
    return given if given and _REQUEST_ID.fullmatch(given) else f"{_PROCESS}{next(_COUNT):016x}"


def _log_request(request_id: str, entry: dict[str, Any], status: int, started: float) -> None:
    """One line per GraphQL request; with CINEREC_LOG_FORMAT=json the fields are JSON keys."""
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    fields = {"request_id": request_id, "status": status, "duration_ms": duration_ms, **entry}
    requests_log.info(
        "graphql %s status=%s %.1f ms user=%s cost=%s cache=%s id=%s",
        entry.get("operation") or "-",
        status,
        duration_ms,
        entry.get("user") if "key" not in entry else f"key:{entry['key']}",
        entry.get("cost"),
        entry.get("cache"),
        request_id,
        extra=fields,
    )


TARPIT_SECONDS = 0.2  # how long a refusal of a caller already told to wait is held
TARPIT_MAX = 512  # refusals held at once; beyond, they answer at once
JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"


def _media_type(accept: str) -> str:
    """The response's media type (GraphQL over HTTP): application/graphql-response+json when
    the client ranks it at least as high as application/json, else application/json, as
    before the specification (any client that does not ask)."""
    if "graphql-response" not in accept:
        return JSON
    ranks: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranks[media.lower()] = max(q, ranks.get(media.lower(), 0.0))
    wanted = ranks.get(GRAPHQL_RESPONSE, 0.0)
    return GRAPHQL_RESPONSE if wanted > 0 and wanted >= ranks.get(JSON, 0.0) else JSON


def _request_error(response_data: Any) -> bool:
    """No data and errors that name no field: the request failed before execution (it did not
    parse or validate, or was refused), as opposed to a field error during it. An unknown
    persisted-query hash is not a failure but the protocol's first step (the client sends the
    text next): it stays a 200, as Apollo's servers answer it, and a browser logs no error."""
    errors = response_data.get("errors") or []
    if all((e.get("extensions") or {}).get("code") == "PERSISTED_QUERY_NOT_FOUND" for e in errors):
        return False
    return response_data.get("data") is None and bool(errors) and all("path" not in e for e in errors)


def error_body(message: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"data": None, "errors": [{"message": message, "extensions": {"code": code, **extra}}]}


def _response_depends(state: AppState) -> str:
    """What a cached catalog response depends on besides its query: the catalog's generation
    (an ingest moves it) and the serving model (similar movies, search)."""
    served = state.models.current
    return f"{state.generations.peek('catalog', 0)}:{served.version if served else '-'}"


class CachedAnswers:
    """The first layer of the app: an anonymous GET to /graphql whose query string was already
    answered from the response cache (or stored in it) is answered again here, from this
    process, without the other layers, the router, a parse of the query string or a hash:
    an anonymous catalog page costs about what a bare route does. A request with an
    Authorization header (never shared) or an Origin header (CORS has headers to add) goes the
    normal way, as does any miss."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope["path"] != "/graphql"
            or not scope["query_string"]
        ):
            await self.app(scope, receive, send)
            return
        state: AppState | None = getattr(scope["app"].state, "cinerec", None)
        headers = dict(scope["headers"])
        found = (
            state.responses.by_query(scope["query_string"], _response_depends(state))
            if state is not None
            and state.settings.response_cache_seconds
            and b"authorization" not in headers
            and b"origin" not in headers
            else None
        )
        if state is None or found is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        body, tag = found
        request_id = _request_id(headers.get(b"x-request-id", b"").decode("latin-1"))
        status = 304 if headers.get(b"if-none-match", b"").decode("latin-1") == tag else 200
        raw = [
            (b"cache-control", b"public, max-age=%d" % int(state.settings.response_cache_seconds)),
            (b"etag", tag.encode()),
            (b"vary", b"Authorization"),
            (b"x-request-id", request_id.encode()),
        ]
        if status == 200:
            raw += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body if status == 200 else b""})
        state.metrics.cache_requests.labels(kind="response", level="first", result="hit").inc()
        _log_request(request_id, {"cache": "hit"}, status, started)


class _BadJSON(json.JSONDecodeError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "", 0)


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI app with cinerec's per-request context and websocket auth."""

    graphql_transport_ws_handler_class = AuthenticatedTransportWS
    _tarpitted = 0  # refusals waiting now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        request = Request(scope=scope, receive=receive)
        request_id = _request_id(request.headers.get("x-request-id", ""))
        entry: dict[str, Any] = {"cache": "bypass"}
        request.state.cinerec_log = entry
        request.state.cinerec_media = _media_type(request.headers.get("accept", ""))
        response = await self._cached(request)
        if response is not None:
            entry["cache"] = "hit"
        elif (refused := await self._refused_early(request)) is not None:
            entry["cache"] = "refused"
            response = refused
        else:
            try:
                response = await self.run(request)
            except HTTPException as exc:
                code = "BAD_USER_INPUT" if exc.status_code < 500 else "INTERNAL"
                response = JSONResponse(
                    error_body(exc.reason, code),
                    status_code=exc.status_code,
                    media_type=request.state.cinerec_media,
                )
                if exc.status_code == 405:
                    response.headers["Allow"] = "GET, POST"
            if response.status_code == 429:
                await self._hold()  # refused after parsing and pricing: held like an early refusal
        response.headers["X-Request-ID"] = request_id
        await response(scope, receive, send)
        _log_request(request_id, entry, response.status_code, started)

    async def _refused_early(self, request: Request) -> Response | None:
        """429 for a caller whose bucket was empty a moment ago: a flood costs no body parsing,
        no context and no GraphQL work. The answer is held a moment (``_hold``), as is every
        429, so that others keep the cores (a victim's latency beside a flood is the measure)."""
        state: AppState = request.app.state.cinerec
        if not state.services.limits.enabled:
            return None
        user_id, key = None, None
        if "authorization" in request.headers:
            try:
                given = credentials(request.headers["authorization"])
                if given is not None and given[0] == "apikey":
                    key = key_bucket(api_key_prefix(given[1]))
                elif given is not None:
                    user_id = read_token(given[1], state.settings).claimed.user_id
            except CinerecError:
                return None  # the normal path says what is wrong with the token
        if key is None:
            peer = request.client.host if request.client else None
            key = bucket_key(user_id, client_address(peer, request.headers, state.trusted_proxies))
        error = empty_bucket(state.services, key)
        if error is None:
            return None
        await self._hold()
        retry = str((error.extensions or {}).get("retryAfter", 1))
        body = error_body(
            error.message,
            "RATE_LIMITED",
            **{k: v for k, v in (error.extensions or {}).items() if k != "code"},
        )
        return JSONResponse(
            body, status_code=429, headers={"Retry-After": retry}, media_type=request.state.cinerec_media
        )

    async def _hold(self) -> None:
        """Keep a rate-limit refusal waiting ``TARPIT_SECONDS`` (at most ``TARPIT_MAX`` at
        once): a client that does not wait as told sends a few requests a second per
        connection instead of thousands."""
        if self._tarpitted < TARPIT_MAX:
            self._tarpitted += 1
            try:
                await asyncio.sleep(TARPIT_SECONDS)
            finally:
                self._tarpitted -= 1

    async def _cached(self, request: Request) -> Response | None:
        """A stored answer to an anonymous persisted GET, or None to go the normal way."""
        if request.method != "GET" or "authorization" in request.headers:
            return None
        state: AppState = request.app.state.cinerec
        if not state.settings.response_cache_seconds:
            return None
        params = parse_qs(request.scope.get("query_string", b"").decode("latin-1"))
        try:
            extensions = json.loads(params["extensions"][0])
            digest = extensions["persistedQuery"]["sha256Hash"]
            variables = json.loads(params["variables"][0]) if "variables" in params else None
        except (KeyError, IndexError, ValueError, TypeError):
            return None
        if not isinstance(digest, str):
            return None
        operation = params.get("operationName", [None])[0]
        depends = _response_depends(state)
        key = ResponseCache.key(digest, variables, operation, depends)
        found = await state.responses.get(key)
        if found is None:
            request.state.cinerec_log["cache"] = "miss"
            request.state.cinerec_cache_key = (depends, key)  # once stored, known by its query string
            return None
        state.responses.know_query(request.scope["query_string"], depends, key)
        return self._cacheable_response(request, *found, state.settings.response_cache_seconds)

    @staticmethod
    def _cacheable_response(request: Request, body: bytes, tag: str, max_age: float) -> Response:
        headers = {"Cache-Control": f"public, max-age={int(max_age)}", "ETag": tag, "Vary": "Authorization"}
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    async def render_graphql_ide(self, request: Request) -> Response:
        return web_client.graphiql()  # the package's own GraphiQL, not Strawberry's page of CDN scripts

    def should_render_graphql_ide(self, request: Any) -> bool:
        # A persisted GET carries no `query` either: only a browser asking for a page gets GraphiQL.
        return bool(
            request.method == "GET"
            and request.query_params.get("query") is None
            and request.query_params.get("extensions") is None
            and "text/html" in request.headers.get("accept", "")
        )

    def decode_json(self, data: str | bytes) -> object:
        # Every refusal is a JSONDecodeError, which a websocket answers with 4400 and
        # parse_json with a JSON 400 saying which.
        try:
            return json.loads(data)
        except json.JSONDecodeError:
            raise
        except RecursionError as exc:  # nesting deeper than the decoder's stack: the client's doing
            raise _BadJSON("JSON nested too deeply") from exc
        except UnicodeDecodeError as exc:
            raise _BadJSON("the body is not UTF-8 JSON") from exc
        except ValueError as exc:  # an integer of more digits than Python converts (4,300)
            raise _BadJSON(f"a number in the JSON is too long: {exc}") from exc

    def parse_json(self, data: str | bytes) -> Any:
        # The body, `variables` and `extensions` must each be a JSON object.
        try:
            parsed = super().parse_json(data)
        except HTTPException as exc:
            if isinstance(exc.__cause__, _BadJSON):
                raise HTTPException(400, exc.__cause__.msg) from exc
            raise
        if not isinstance(parsed, dict):
            raise HTTPException(400, "expected a JSON object (batched requests are not supported)")
        return parsed

    async def execute_single(  # type: ignore[override]
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Any,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        state: AppState = request.app.state.cinerec
        sub_response.cinerec_request = request  # for create_response: the media type, the cache
        entry: dict[str, Any] = request.state.cinerec_log
        operation = request_data.operation_name
        entry["operation"] = operation[:100] if isinstance(operation, str) else None
        if context.principal is not None and context.principal.is_key:
            entry["key"] = context.principal.key  # the key's name, never its secret
        elif context.principal is not None:
            entry["user"] = context.principal.user_id
        try:
            request_data.query, digest, registers = await state.persisted.resolve(
                request_data.query, request_data.extensions
            )
        except PersistedQueryNotFound as exc:
            # looking up an unknown hash is work too: guessing hashes is charged like a lookup
            refused = await charge(context, 1, "a persisted query lookup")
            error = refused or GraphQLError(exc.message, extensions=exc.extensions)
            return self._refused(sub_response, error)
        except CinerecError as exc:
            return ExecutionResult(data=None, errors=[GraphQLError(exc.message, extensions=exc.extensions)])
        if registers and request_data.query is not None:
            cost = registration_cost(request_data.query)
            if (refused := await charge(context, cost, "registering this persisted query")) is not None:
                return self._refused(sub_response, refused)
        budget = context.settings.request_timeout_seconds
        try:
            async with asyncio.timeout(budget):
                result = await super().execute_single(
                    request, request_adapter, sub_response, context, root_value, request_data
                )
        except TimeoutError:
            log.warning("request cancelled after its %.0f s budget", budget)
            entry["cost"] = context.price.cost if context.price else None
            error = GraphQLError(
                f"the request did not finish within its {budget:g} s budget and was cancelled",
                extensions={"code": "TIMEOUT", "budgetSeconds": budget},
            )
            return ExecutionResult(data=None, errors=[error])
        entry["cost"] = context.price.cost if context.price else None
        if registers and context.document_valid and digest is not None and request_data.query is not None:
            await state.persisted.register(digest, request_data.query)  # kept once it parsed and validated
        self._mark_rate_limited(sub_response, result.errors or [])
        if (
            context.public
            and digest is not None
            and not result.errors
            and state.settings.response_cache_seconds
        ):
            # an anonymous catalog answer: create_response stores it and marks it cacheable
            sub_response.cinerec_cache_key = ResponseCache.key(
                digest, request_data.variables, request_data.operation_name, _response_depends(state)
            )
            entry["cache"] = "stored"
        return result

    @staticmethod
    def _mark_rate_limited(sub_response: Any, errors: list[GraphQLError]) -> None:
        """A RATE_LIMITED error answers HTTP 429 with Retry-After, whoever raised it (the
        bucket, a login or registration throttle, the password-hash queue)."""
        for error in errors:
            extensions = error.extensions or {}
            if extensions.get("code") == "RATE_LIMITED":
                sub_response.status_code = 429
                sub_response.headers["Retry-After"] = str(extensions.get("retryAfter", 1))
                return

    def _refused(self, sub_response: Any, error: GraphQLError) -> ExecutionResult:
        """An answer refused before the operation runs."""
        self._mark_rate_limited(sub_response, [error])
        return ExecutionResult(data=None, errors=[error])

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        key = getattr(sub_response, "cinerec_cache_key", None)
        if key is None:
            asked: Request | None = getattr(sub_response, "cinerec_request", None)
            media = asked.state.cinerec_media if asked is not None else JSON
            if media == GRAPHQL_RESPONSE and _request_error(response_data):
                # GraphQL over HTTP: a request error has no `data`, and a 4xx status
                response_data.pop("data", None)
                if sub_response.status_code in (None, 200):
                    sub_response.status_code = 400
            response = super().create_response(response_data, sub_response)
            response.headers["Content-Type"] = media
            response.headers.setdefault("Cache-Control", "no-store")
            return response
        cost = (response_data.get("extensions") or {}).get("cost")
        if isinstance(cost, dict):
            # a shared answer says what the query costs, not what one caller has left
            response_data["extensions"]["cost"] = {k: cost[k] for k in ("requested", "limit") if k in cost}
        body = self.encode_json(response_data)
        body = body.encode() if isinstance(body, str) else body
        request: Request = sub_response.cinerec_request  # type: ignore[attr-defined]
        state: AppState = request.app.state.cinerec
        tag = state.responses.put_soon(key, body)
        asked = getattr(request.state, "cinerec_cache_key", None)
        if request.method == "GET" and asked is not None and asked[1] == key:
            state.responses.know_query(request.scope["query_string"], *asked)
        response = self._cacheable_response(request, body, tag, state.settings.response_cache_seconds)
        response.headers.raw.extend(sub_response.headers.raw)
        return response

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        # Parse errors leave the operation before schema extensions see them: code them here too.
        response = await super().process_result(request, result)
        for error in response.get("errors") or []:
            if isinstance(error, dict):
                error.setdefault("extensions", {}).setdefault("code", "BAD_USER_INPUT")
        return response

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> Context:
        return await build_context(request=request, response=response, state=request.app.state)
