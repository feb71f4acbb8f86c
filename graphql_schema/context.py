"""The per-request context: the caller, where they call from, the services and loaders a
request may use, and what the request learns for its extensions (its price, what served it).
It carries no application state: resolvers reach the app through ``services`` only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.infra.errors import CinerecError, Forbidden, Unauthenticated, Unavailable, is_outage
from app.server.callers import client_address
from graphql_schema.charges import bucket_key, key_bucket
from resolvers.loaders import Loaders, create_loaders

if TYPE_CHECKING:
    from starlette.datastructures import State
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.websockets import WebSocket

    from app.infra.auth import Principal, Token
    from app.infra.settings import Settings
    from app.infra.throttles import Budget
    from app.services.services import Services
    from app.serving.explanations import ExplanationsServed
    from app.serving.recommendations import ServedBy
    from graphql_schema.analysis import Price


@dataclass
class Served:
    """What answered this request's model fields, for the response's ``extensions``."""

    recommender: ServedBy | None = None
    explanations: ExplanationsServed | None = None


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | None
    settings: Settings
    services: Services
    loaders: Loaders
    client: str  # the caller's address (see app.server.callers)
    principal: Principal | None = None
    auth_error: CinerecError | None = None
    token: Token | None = None  # the caller's verified token (its expiry closes a websocket)
    price: Price | None = None  # what the operation was priced at before it ran
    budget: Budget | None = None  # the caller's rate-limit bucket after this operation's cost
    public: bool = False  # an anonymous read of the catalog only: its response may be shared
    document_valid: bool = False  # the document parsed and validated (set by the operation guard)
    served: Served = field(default_factory=Served)

    @property
    def bucket_key(self) -> str:
        """Whose rate-limit bucket this request draws on: the key's, the user's, else the address's."""
        if self.principal is not None and self.principal.key_prefix is not None:
            return key_bucket(self.principal.key_prefix)
        return bucket_key(self.principal.user_id if self.principal is not None else None, self.client)

    @property
    def is_websocket(self) -> bool:
        return self.request.scope["type"] == "websocket"

    def require_user(self) -> Principal:
        """A person signed in: their own ratings, dismissals and account are theirs only, and a
        service's key acts as no user (FORBIDDEN)."""
        principal = self.require_principal()
        if principal.is_key:
            raise Forbidden("an API key acts for no user of its own: sign in as the person")
        return principal

    def require_principal(self) -> Principal:
        if self.auth_error is not None:
            raise self.auth_error
        if self.principal is None:
            raise Unauthenticated(
                "authentication required: send 'Authorization: Bearer <token>' (or 'ApiKey <key>')"
            )
        return self.principal

    async def authenticate(self, authorization: str | None) -> None:
        """Take the caller from an ``Authorization`` value; a bad token is kept and raised
        only where authentication is needed. The token's account must still exist, and its
        current role counts, not the one the token was issued with."""
        self.principal, self.auth_error, self.token = None, None, None
        try:
            found = await self.services.accounts.caller(authorization)
            if found is not None:
                self.principal, self.token = found
        except CinerecError as exc:
            self.auth_error = exc
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.auth_error = Unavailable("the database is unreachable: try again shortly")


async def build_context(*, request: Request | WebSocket, response: Response | None, state: State) -> Context:
    """A context for one request (or one websocket connection)."""
    app = state.cinerec
    peer = request.client.host if request.client else None
    ctx = Context(
        request=request,
        response=response,
        settings=app.settings,
        services=app.services,
        loaders=create_loaders(app.services),
        client=client_address(peer, request.headers, app.trusted_proxies),
    )
    await ctx.authenticate(request.headers.get("authorization"))
    return ctx
