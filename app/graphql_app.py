"""The GraphQL endpoint: Strawberry's ASGI view with cinerec's context, request checks and
per-request time budget.

Every refusal a client can cause before execution is a JSON GraphQL error with a code,
never a plain-text 400 or a 500: a body that is not a JSON object, JSON nested too deep to
parse, an unsupported method or content type, a subscription sent over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from cross_web import HTTPException
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import JSONResponse
from strawberry.asgi import GraphQL
from strawberry.types import ExecutionResult

from app.websocket import AuthenticatedTransportWS
from graphql_schema.context import Context, build_context

if TYPE_CHECKING:
    from cross_web import AsyncHTTPRequestAdapter
    from starlette.types import Receive, Scope, Send
    from starlette.websockets import WebSocket
    from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData

log = logging.getLogger(__name__)


def error_body(message: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"data": None, "errors": [{"message": message, "extensions": {"code": code, **extra}}]}


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI app with cinerec's per-request context and websocket auth."""

    graphql_transport_ws_handler_class = AuthenticatedTransportWS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            response = await self.run(Request(scope=scope, receive=receive))
        except HTTPException as exc:
            code = "BAD_USER_INPUT" if exc.status_code < 500 else "INTERNAL"
            response = JSONResponse(error_body(exc.reason, code), status_code=exc.status_code)
        await response(scope, receive, send)

    def decode_json(self, data: str | bytes) -> object:
        try:
            return json.loads(data)
        except RecursionError as exc:  # nesting deeper than the decoder's stack: the client's doing
            raise HTTPException(400, "JSON nested too deeply") from exc
        except UnicodeDecodeError as exc:
            raise HTTPException(400, "the body is not UTF-8 JSON") from exc

    def parse_json(self, data: str | bytes) -> Any:
        # The body, `variables` and `extensions` must each be a JSON object.
        parsed = super().parse_json(data)
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
        budget = context.settings.request_timeout_seconds
        try:
            async with asyncio.timeout(budget):
                return await super().execute_single(
                    request, request_adapter, sub_response, context, root_value, request_data
                )
        except TimeoutError:
            log.warning("request cancelled after its %.0f s budget", budget)
            error = GraphQLError(
                f"the request did not finish within its {budget:g} s budget and was cancelled",
                extensions={"code": "TIMEOUT", "budgetSeconds": budget},
            )
            return ExecutionResult(data=None, errors=[error])

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        # Parse errors leave the operation before schema extensions see them: code them here too.
        response = await super().process_result(request, result)
        for error in response.get("errors") or []:
            if isinstance(error, dict):
                error.setdefault("extensions", {}).setdefault("code", "BAD_USER_INPUT")
        return response

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> Context:
        return await build_context(request=request, response=response, state=request.app.state)
