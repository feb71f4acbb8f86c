"""graphql-transport-ws with cinerec's auth: the token comes in the ``connection_init``
payload as ``{"authorization": "Bearer <token>"}``.

A missing or bad token closes the socket with 4401 (Unauthorized). An operation refused
for lack of rights (FORBIDDEN, or UNAUTHENTICATED) is reported to the client and then
the socket is closed with 4403 (Forbidden) or 4401.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.websockets import WebSocketDisconnect
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from uvicorn.protocols.utils import ClientDisconnected
from websockets.exceptions import ConnectionClosed

from app.errors import CinerecError

log = logging.getLogger(__name__)
_CLOSE_FOR = {"FORBIDDEN": (4403, "Forbidden"), "UNAUTHENTICATED": (4401, "Unauthorized")}


_DISCONNECTS = (WebSocketDisconnected, WebSocketDisconnect, ClientDisconnected, ConnectionClosed)


def is_disconnect(error: BaseException) -> bool:
    """The client went away (closed the socket, lost the network): normal, not a server error."""
    return isinstance(error, _DISCONNECTS) or (
        isinstance(error, RuntimeError) and "after sending 'websocket.close'" in str(error)
    )


def _refusal(message: dict[str, Any]) -> tuple[int, str] | None:
    payload = message.get("payload")
    errors = payload if isinstance(payload, list) else (payload or {}).get("errors") or []
    for error in errors:
        code = (error.get("extensions") or {}).get("code")
        if code in _CLOSE_FOR:
            return _CLOSE_FOR[code]
    return None


class AuthenticatedTransportWS(BaseGraphQLTransportWSHandler[Any, None]):
    async def handle_connection_init(self, message: Any) -> None:
        payload = message.get("payload") or {}
        authorization = payload.get("authorization") if isinstance(payload, dict) else None
        if not isinstance(authorization, str):
            authorization = None
        await self.context.authenticate(authorization)
        refusal: CinerecError | None = self.context.auth_error
        if refusal is None and self.context.principal is None:
            refusal = CinerecError("send {'authorization': 'Bearer <token>'} in connection_init")
        if refusal is not None:
            log.info("websocket refused: %s", refusal.message)
            await self.websocket.close(code=4401, reason="Unauthorized")
            return
        await super().handle_connection_init(message)

    async def handle_task_exception(self, error: Exception) -> None:
        if is_disconnect(error):
            log.debug("websocket client left during an operation: %r", error)
            return
        await super().handle_task_exception(error)

    async def send_message(self, message: Any) -> None:
        await super().send_message(message)
        if message.get("type") in ("next", "error") and (refusal := _refusal(message)):
            await self.websocket.close(code=refusal[0], reason=refusal[1])
