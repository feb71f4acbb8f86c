"""uvicorn's websocket protocol, closing with 1001 (going away) when the server shuts down.

uvicorn says 1012 (service restart) to every open socket on SIGTERM. A replica going away
behind a load balancer is 1001 to a client: reconnect, you will reach another replica.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

GOING_AWAY = 1001


class GoingAwayProtocol(WebSocketsSansIOProtocol):
    def shutdown(self) -> None:
        if self.close_sent or not self.handshake_complete:
            super().shutdown()  # nothing to say to the client: uvicorn's own handling
            return
        self.stop_keepalive()
        self.queue.put_nowait({"type": "websocket.disconnect", "code": GOING_AWAY})
        self.conn.send_close(GOING_AWAY, "server shutting down")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()
