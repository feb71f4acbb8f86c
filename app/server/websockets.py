"""graphql-transport-ws with cinerec's auth: the token comes in the ``connection_init``
payload as ``{"authorization": "Bearer <token>"}``.

A socket holds the rights of its token's account as they are now, not as they were at
``connection_init``:
- every operation it sends re-reads the token's account (as every HTTP request does);
- when the token expires, the socket is closed with 4401 (Unauthorized);
- when its account is deleted (4401) or loses rights (4403, Forbidden), an announcement
  closes it on every replica at once, running streams included.

A missing or bad token closes the socket with 4401. An operation refused for lack of rights
(FORBIDDEN, or UNAUTHENTICATED) is reported to the client and then the socket is closed
with 4403 or 4401. One account holds at most ``ws_max_per_account`` open sockets (4429
beyond), and a socket that runs nothing and says nothing for ``ws_idle_seconds`` is closed
(1000).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocketDisconnect
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from uvicorn.protocols.utils import ClientDisconnected
from websockets.exceptions import ConnectionClosed

from app.infra.errors import CinerecError

if TYPE_CHECKING:
    from app.infra.auth import Principal

log = logging.getLogger(__name__)
_CLOSE_FOR = {"FORBIDDEN": (4403, "Forbidden"), "UNAUTHENTICATED": (4401, "Unauthorized")}
UNAUTHORIZED, FORBIDDEN, TOO_MANY, IDLE = 4401, 4403, 4429, 1000


_DISCONNECTS = (WebSocketDisconnected, WebSocketDisconnect, ClientDisconnected, ConnectionClosed)


def is_disconnect(error: BaseException) -> bool:
    """The client went away (closed the socket, lost the network): normal, not a server error."""
    return isinstance(error, _DISCONNECTS) or (
        isinstance(error, RuntimeError)
        and ("after sending 'websocket.close'" in str(error) or "once a close message" in str(error))
    )


def _refusal(message: dict[str, Any]) -> tuple[int, str] | None:
    payload = message.get("payload")
    errors = payload if isinstance(payload, list) else (payload or {}).get("errors") or []
    for error in errors:
        code = (error.get("extensions") or {}).get("code")
        if code in _CLOSE_FOR:
            return _CLOSE_FOR[code]
    return None


def _loses_rights(before: Principal, now: Principal) -> bool:
    """Whether ``now`` may do less than ``before`` (another user, or no longer an admin)."""
    return now.user_id != before.user_id or (before.is_admin and not now.is_admin)


class Sockets:
    """This process's open authenticated sockets, by account: capped per account, and
    re-checked when an account change is announced."""

    def __init__(self, *, per_account: int) -> None:
        self.per_account = per_account
        self._open: defaultdict[int, set[AuthenticatedTransportWS]] = defaultdict(set)

    def add(self, account_id: int, socket: AuthenticatedTransportWS) -> bool:
        held = self._open[account_id]
        if len(held) >= self.per_account:
            return False
        held.add(socket)
        return True

    def discard(self, account_id: int, socket: AuthenticatedTransportWS) -> None:
        held = self._open.get(account_id)
        if held is not None:
            held.discard(socket)
            if not held:
                del self._open[account_id]

    def count(self, account_id: int) -> int:
        return len(self._open.get(account_id, ()))

    async def account_changed(self, account_id: int | None) -> None:
        """Re-check the sockets of one account (None: of every account) against the database."""
        ids = list(self._open) if account_id is None else [account_id]
        sockets = [s for i in ids for s in list(self._open.get(i, ()))]
        await asyncio.gather(*(s.recheck() for s in sockets), return_exceptions=True)


class AuthenticatedTransportWS(BaseGraphQLTransportWSHandler[Any, None]):
    _authorization: str | None = None
    _account_id: int | None = None
    _principal: Principal | None = None
    _watch: asyncio.Task[None] | None = None
    _closed = False
    _last_active = 0.0

    async def handle_connection_init(self, message: Any) -> None:
        payload = message.get("payload") or {}
        # header names are case-insensitive; GraphiQL sends its Headers tab as typed
        named = (
            [v for k, v in payload.items() if str(k).lower() == "authorization"]
            if isinstance(payload, dict)
            else []
        )
        authorization = named[0] if len(named) == 1 else None
        if not isinstance(authorization, str):
            authorization = None
        await self.context.authenticate(authorization)
        refusal: CinerecError | None = self.context.auth_error
        if refusal is None and self.context.principal is None:
            refusal = CinerecError("send {'authorization': 'Bearer <token>'} in connection_init")
        if refusal is not None:
            log.info("websocket refused: %s", refusal.message)
            await self._close(UNAUTHORIZED, "Unauthorized")
            return
        principal: Principal = self.context.principal
        sockets: Sockets = self.context.request.app.state.cinerec.sockets
        if self._account_id is None:  # a second connection_init is strawberry's to refuse (4429)
            if not sockets.add(principal.account_id, self):
                log.info(
                    "websocket refused: account %s holds %s sockets",
                    principal.account_id,
                    sockets.per_account,
                )
                await self._close(TOO_MANY, "Too many open sockets for this account")
                return
            self._account_id = principal.account_id
            self._authorization, self._principal = authorization, principal
            self._last_active = time.monotonic()
            self._watch = asyncio.create_task(self._watch_expiry_and_idle())
        await super().handle_connection_init(message)

    async def handle_message(self, message: Any) -> None:
        self._last_active = time.monotonic()
        await super().handle_message(message)

    async def handle_subscribe(self, message: Any) -> None:
        # every operation uses the account's rights as they are now, as an HTTP request does
        if self.connection_acknowledged and not await self.recheck():
            return
        await super().handle_subscribe(message)

    async def recheck(self) -> bool:
        """Re-read the token's account; close the socket if it lost rights. True: still open."""
        if self._closed or self._principal is None:
            return not self._closed
        before = self._principal
        await self.context.authenticate(self._authorization)
        now = self.context.principal
        if now is None:
            reason = self.context.auth_error.message if self.context.auth_error else "not authenticated"
            log.info("websocket of account %s closed: %s", before.account_id, reason)
            await self._close(UNAUTHORIZED, "Unauthorized")
            return False
        if _loses_rights(before, now):
            log.info("websocket of account %s closed: its rights changed", before.account_id)
            await self._close(FORBIDDEN, "Forbidden")
            return False
        self._principal = now
        return True

    async def _watch_expiry_and_idle(self) -> None:
        """Close the socket when its token expires (4401), or after ``ws_idle_seconds`` with no
        message and no operation running (1000)."""
        settings = self.context.settings
        token = self.context.token
        expires = token.expires_at if token is not None else float("inf")
        while not self._closed:
            idle_at = self._last_active + settings.ws_idle_seconds
            wait = min(expires - time.time(), idle_at - time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if time.time() >= expires:
                await self._close(UNAUTHORIZED, "Unauthorized: token expired")
                return
            if self.operations:
                self._last_active = time.monotonic()  # a running stream is activity
                continue
            await self._close(IDLE, "idle")
            return

    async def _close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(*_DISCONNECTS, RuntimeError):
            await self.websocket.close(code=code, reason=reason)

    async def shutdown(self) -> None:
        if self._watch is not None and self._watch is not asyncio.current_task():
            self._watch.cancel()
        if self._account_id is not None:
            self.context.request.app.state.cinerec.sockets.discard(self._account_id, self)
        await super().shutdown()

    async def handle_task_exception(self, error: Exception) -> None:
        if is_disconnect(error) or self._closed:
            log.debug("websocket closed during an operation: %r", error)
            return
        await super().handle_task_exception(error)

    async def send_message(self, message: Any) -> None:
        if self._closed:
            return  # the socket was closed by the server: nothing more goes out
        await super().send_message(message)
        if message.get("type") in ("next", "error") and (refusal := _refusal(message)):
            await self._close(*refusal)
