"""Rate limits as the API answers them: every charge a request makes goes through
:func:`charge` (its operation's price, and what persisted queries cost before one runs), and
a caller whose bucket was empty a moment ago is refused by :func:`empty_bucket` before its
body is read. The buckets themselves are ``app.infra.throttles.RateLimiter``'s."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError


def refusal(context: Any, message: str, code: str, **extra: Any) -> GraphQLError:
    """An error that refuses the operation before it runs, counted by reason."""
    services = getattr(context, "services", None)
    if services is not None:
        services.metrics.refusals.labels(reason=code.lower()).inc()
    return GraphQLError(message, extensions={"code": code, **extra})


async def charge(context: Any, cost: int, what: str) -> GraphQLError | None:
    """Take ``cost`` points from the caller's bucket (per user, or per client address when
    anonymous): None when they fit, else a RATE_LIMITED error (HTTP 429 and Retry-After).
    An HTTP response carries the bucket in ``RateLimit-*`` headers."""
    services = getattr(context, "services", None)
    if services is None:
        return None
    principal = context.principal
    budget = await services.limits.take(context.bucket_key, principal.role.value if principal else None, cost)
    if budget is None:
        return None  # limits are off
    context.budget = budget
    # HTTP only: a websocket's "response" is the socket itself
    response = None if context.is_websocket else context.response
    if response is not None:
        response.headers["RateLimit-Limit"] = str(int(budget.capacity))
        response.headers["RateLimit-Remaining"] = str(int(budget.remaining))
        response.headers["RateLimit-Reset"] = str(max(int(budget.full_in + 0.999), 0))
    if budget.allowed:
        return None
    wait = max(int(budget.retry_after + 0.999), 1)
    return refusal(
        context,
        f"rate limit: {what} costs {cost} and {int(budget.remaining)} of "
        f"{int(budget.capacity)} points are left; try again in {wait} s",
        "RATE_LIMITED",
        cost=cost,
        remaining=int(budget.remaining),
        retryAfter=wait,
        retryAfterSeconds=wait,
    )


def bucket_key(user_id: int | None, client: str) -> str:
    """Whose bucket a request draws on: the user's, else the client address's."""
    return f"user:{user_id}" if user_id is not None else f"addr:{client}"


def key_bucket(prefix: str) -> str:
    """A service key's bucket, by the key's public prefix."""
    return f"key:{prefix}"


def empty_bucket(services: Any, key: str) -> GraphQLError | None:
    """RATE_LIMITED when the bucket ``key`` was empty a moment ago (as this replica saw it): a
    flood is refused before its body is even read."""
    wait = services.limits.empty_for(key)
    if wait <= 0:
        return None
    seconds = max(int(wait + 0.999), 1)
    services.metrics.refusals.labels(reason="rate_limited").inc()
    return GraphQLError(
        f"rate limit: your bucket is empty; try again in {seconds} s",
        extensions={"code": "RATE_LIMITED", "retryAfter": seconds, "retryAfterSeconds": seconds},
    )
