"""Persisted queries (Apollo's automatic persisted queries protocol) and the response cache
for anonymous catalog reads.

APQ: a client sends ``extensions.persistedQuery = {version: 1, sha256Hash}`` without the
query; an unknown hash answers ``PersistedQueryNotFound`` (code PERSISTED_QUERY_NOT_FOUND)
and the client sends the query with its hash once, which registers it. Hashes live in
Redis (shared by replicas) and in the process. In allow-list mode only the operations of
a manifest (Apollo's persisted query manifest format) run, and nothing else does.

The response cache keeps the bytes of anonymous catalog responses, keyed by the document
hash, the variables and what they depend on (the catalog generation, the model version),
for ``CINEREC_RESPONSE_CACHE_SECONDS``; the same responses carry ``Cache-Control`` and an
``ETag`` so that nginx or a CDN can answer them too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from app.errors import BadUserInput, CinerecError

if TYPE_CHECKING:
    from app.cache import RedisHealth

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_STORED_QUERY = 20_000  # characters: the body limit bounds it anyway


class PersistedQueryNotFound(CinerecError):
    code = "PERSISTED_QUERY_NOT_FOUND"


class PersistedQueryNotSupported(CinerecError):
    code = "PERSISTED_QUERY_NOT_SUPPORTED"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_manifest(path: Path) -> dict[str, str]:
    """hash -> query from an Apollo persisted query manifest (``operations[].id`` and ``body``),
    or a plain JSON object of hash -> query."""
    data = json.loads(path.read_text())
    if isinstance(data, dict) and isinstance(data.get("operations"), list):
        pairs = {op["id"]: op["body"] for op in data["operations"]}
    elif isinstance(data, dict):
        pairs = {str(k): str(v) for k, v in data.items()}
    else:
        raise ValueError(f"{path}: not a persisted query manifest")
    for digest, body in pairs.items():
        if sha256(body) != digest:
            raise ValueError(f"{path}: the hash {digest[:12]}... does not match its query")
    return pairs


class PersistedQueries:
    def __init__(
        self,
        health: RedisHealth,
        *,
        prefix: str,
        allowlist: dict[str, str] | None = None,
        enabled: bool = True,
        maxsize: int = 10_000,
    ) -> None:
        self.health = health
        self.enabled = enabled
        self.key = f"{prefix}:pq"
        self.allowlist = allowlist
        self.maxsize = maxsize
        self._local: OrderedDict[str, str] = OrderedDict()

    def _remember(self, digest: str, query: str) -> None:
        self._local[digest] = query
        self._local.move_to_end(digest)
        while len(self._local) > self.maxsize:
            self._local.popitem(last=False)

    async def resolve(
        self, query: str | None, extensions: dict[str, Any] | None
    ) -> tuple[str | None, str | None]:
        """(the query to run, its hash when persisted). Raises PERSISTED_QUERY_NOT_FOUND for
        an unknown hash (the client then sends the query), BAD_USER_INPUT for a hash that
        does not match, PERSISTED_QUERY_NOT_SUPPORTED for an ad hoc query in allow-list mode."""
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is not None and not self.enabled:
            raise PersistedQueryNotSupported("persisted queries are turned off here: send the query")
        if persisted is None:
            if self.allowlist is not None and query is not None:
                raise PersistedQueryNotSupported(
                    "only persisted queries of this deployment's manifest are accepted"
                )
            return query, None
        if not isinstance(persisted, dict) or persisted.get("version") != 1:
            raise PersistedQueryNotSupported("persistedQuery version 1 is the one supported")
        digest = persisted.get("sha256Hash")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise BadUserInput("persistedQuery.sha256Hash must be 64 lowercase hex digits")
        if self.allowlist is not None:
            known = self.allowlist.get(digest)
            if known is None:
                raise PersistedQueryNotFound("PersistedQueryNotFound")
            if query is not None and query != known:
                raise BadUserInput("provided sha does not match query")
            return known, digest
        if query is not None:
            if sha256(query) != digest:
                raise BadUserInput("provided sha does not match query")
            if len(query) <= MAX_STORED_QUERY:
                await self._store(digest, query)
            return query, digest
        found = await self._lookup(digest)
        if found is None:
            raise PersistedQueryNotFound("PersistedQueryNotFound")
        return found, digest

    async def _store(self, digest: str, query: str) -> None:
        self._remember(digest, query)
        if (redis := self.health.usable()) is not None:
            try:
                await redis.hset(self.key, digest, query)
            except (RedisError, OSError) as exc:
                self.health.failed(exc)

    async def _lookup(self, digest: str) -> str | None:
        if digest in self._local:
            return self._local[digest]
        if (redis := self.health.usable()) is not None:
            try:
                found = await redis.hget(self.key, digest)
            except (RedisError, OSError) as exc:
                self.health.failed(exc)
                return None
            if found is not None:
                query = found.decode() if isinstance(found, bytes) else str(found)
                self._remember(digest, query)
                return query
        return None


class ResponseCache:
    """Finished anonymous responses, by key: in the process, and in Redis for the replicas."""

    def __init__(self, health: RedisHealth, *, prefix: str, ttl: float, maxsize: int = 20_000) -> None:
        self.health = health
        self.prefix = prefix
        self.ttl = ttl
        self.maxsize = maxsize
        self._local: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def key(digest: str, variables: Any, operation: str | None, depends: str) -> str:
        canonical = json.dumps(variables or {}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(
            f"{digest}\x1f{canonical}\x1f{operation or ''}\x1f{depends}".encode()
        ).hexdigest()

    def get_local(self, key: str) -> bytes | None:
        entry = self._local.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    async def get(self, key: str) -> bytes | None:
        found = self.get_local(key)
        if found is not None:
            return found
        if (redis := self.health.usable()) is not None:
            try:
                raw = await redis.get(f"{self.prefix}:resp:{key}")
            except (RedisError, OSError) as exc:
                self.health.failed(exc)
                return None
            if raw is not None:
                body = raw.encode() if isinstance(raw, str) else bytes(raw)
                self._put_local(key, body)
                return body
        return None

    def _put_local(self, key: str, body: bytes) -> None:
        self._local[key] = (time.monotonic() + self.ttl, body)
        self._local.move_to_end(key)
        while len(self._local) > self.maxsize:
            self._local.popitem(last=False)

    def put_soon(self, key: str, body: bytes) -> None:
        """Into this process now, into Redis in the background (the response is not kept waiting)."""
        self._put_local(key, body)
        if self.health.usable() is not None:
            task = asyncio.get_running_loop().create_task(self._put_shared(key, body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _put_shared(self, key: str, body: bytes) -> None:
        if (redis := self.health.usable()) is not None:
            try:
                await redis.set(f"{self.prefix}:resp:{key}", body, px=int(self.ttl * 1000))
            except (RedisError, OSError) as exc:
                self.health.failed(exc)

    async def put(self, key: str, body: bytes) -> None:
        self._put_local(key, body)
        if (redis := self.health.usable()) is not None:
            try:
                await redis.set(f"{self.prefix}:resp:{key}", body, px=int(self.ttl * 1000))
            except (RedisError, OSError) as exc:
                self.health.failed(exc)


def etag(body: bytes) -> str:
    return 'W/"' + hashlib.sha256(body).hexdigest()[:32] + '"'
