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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache, TTLCache

from app.infra.cache import Unavailable
from app.infra.errors import BadUserInput, CinerecError

if TYPE_CHECKING:
    from app.infra.cache import RedisHealth

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


# Store a registered query and forget the least recently used ones beyond the byte budget:
# KEYS hash (digest -> query), sorted set (digest by last use), byte count. ARGV digest, query,
# now (ms), budget (bytes), overhead per entry (bytes).
_STORE = """
local overhead = tonumber(ARGV[5])
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('INCRBY', KEYS[3], #ARGV[2] + overhead)
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
while total > tonumber(ARGV[4]) do
  local oldest = redis.call('ZPOPMIN', KEYS[2])
  if #oldest == 0 then break end
  local n = redis.call('HSTRLEN', KEYS[1], oldest[1])
  if redis.call('HDEL', KEYS[1], oldest[1]) == 1 then
    total = redis.call('DECRBY', KEYS[3], n + overhead)
  end
end
return total
"""
# A lookup: the query, and its last use moved to now when it is there.
_LOOKUP = """
local found = redis.call('HGET', KEYS[1], ARGV[1])
if found then redis.call('ZADD', KEYS[2], 'XX', ARGV[2], ARGV[1]) end
return found
"""
ENTRY_OVERHEAD = 160  # bytes Redis spends on a hash field and a sorted-set member, about


def registration_cost(query: str) -> int:
    """Points a new registration takes from the caller's bucket: one per 100 characters stored."""
    return max(1, len(query) // 100)


class PersistedQueries:
    """Apollo's automatic persisted queries, or an allow-list. A query is registered only once
    its text has parsed and validated (:meth:`register`, after the operation ran); the stores
    are bounded by bytes, least recently used first out: ``max_bytes`` in Redis, shared by the
    replicas, and ``local_bytes`` in the process."""

    def __init__(
        self,
        health: RedisHealth,
        *,
        prefix: str,
        allowlist: dict[str, str] | None = None,
        enabled: bool = True,
        max_bytes: int = 8 * 1024 * 1024,
        local_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.health = health
        self.enabled = enabled
        self.keys = [f"{prefix}:pq", f"{prefix}:pq:used", f"{prefix}:pq:bytes"]
        self.allowlist = allowlist
        self.max_bytes = max_bytes
        self._local: LRUCache[str, str] = LRUCache(maxsize=local_bytes, getsizeof=lambda q: len(q) + 64)
        redis = health.redis
        self._store = redis.register_script(_STORE) if redis is not None else None
        self._lookup = redis.register_script(_LOOKUP) if redis is not None else None

    async def resolve(
        self, query: str | None, extensions: dict[str, Any] | None
    ) -> tuple[str | None, str | None, bool]:
        """(the query to run, its hash when persisted, whether running it registers it).
        Raises PERSISTED_QUERY_NOT_FOUND for an unknown hash (the client then sends the query),
        BAD_USER_INPUT for a hash that does not match or a query too long to keep,
        PERSISTED_QUERY_NOT_SUPPORTED for an ad hoc query in allow-list mode."""
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is not None and not self.enabled:
            raise PersistedQueryNotSupported("persisted queries are turned off here: send the query")
        if persisted is None:
            if self.allowlist is not None and query is not None:
                raise PersistedQueryNotSupported(
                    "only persisted queries of this deployment's manifest are accepted"
                )
            return query, None, False
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
            return known, digest, False
        if query is not None:
            if sha256(query) != digest:
                raise BadUserInput("provided sha does not match query")
            if len(query) > MAX_STORED_QUERY:
                raise BadUserInput(
                    f"a persisted query is at most {MAX_STORED_QUERY} characters: send it without a hash"
                )
            return query, digest, digest not in self._local
        found = await self._find(digest)
        if found is None:
            raise PersistedQueryNotFound("PersistedQueryNotFound")
        return found, digest, False

    async def register(self, digest: str, query: str) -> None:
        """Keep a query that parsed and validated, under its hash."""
        self._local[digest] = query
        if self._store is not None:
            store = self._store
            args: list[str | int] = [digest, query, int(time.time() * 1000), self.max_bytes, ENTRY_OVERHEAD]
            await self.health.run(lambda _: store(keys=self.keys, args=args))

    async def _find(self, digest: str) -> str | None:
        if (found := self._local.get(digest)) is not None:
            return found
        if self._lookup is not None:
            lookup = self._lookup
            raw = await self.health.run(
                lambda _: lookup(keys=self.keys[:2], args=[digest, int(time.time() * 1000)])
            )
            if raw is not None and not isinstance(raw, Unavailable):
                query = raw.decode() if isinstance(raw, bytes) else str(raw)
                self._local[digest] = query
                return query
        return None


QUERY_STRING_KEPT = 4096  # longer GET query strings are answered by parsing them each time


class ResponseCache:
    """Finished anonymous responses, by key: in the process (bounded by ``local_bytes``, each
    for ``ttl`` seconds), and in Redis for the replicas (each for ``ttl`` seconds)."""

    def __init__(
        self, health: RedisHealth, *, prefix: str, ttl: float, local_bytes: int = 32 * 1024 * 1024
    ) -> None:
        self.health = health
        self.prefix = prefix
        self.ttl = ttl
        # (body, its ETag): the tag is worked out once, when the body is kept, not on each hit
        self._local: TTLCache[str, tuple[bytes, str]] = TTLCache(
            maxsize=local_bytes, ttl=max(ttl, 1e-3), getsizeof=lambda entry: len(entry[0]) + 192
        )
        self._tasks: set[asyncio.Task[None]] = set()
        # a GET's query string as sent -> its key: the same bytes again need no parse or hash
        # (bounded by bytes, query strings included: padding the JSON of the variables makes
        # many query strings of one answer)
        self._queries: TTLCache[bytes, tuple[str, str, int]] = TTLCache(
            maxsize=local_bytes // 8, ttl=max(ttl, 1e-3), getsizeof=lambda known: known[2]
        )

    def know_query(self, query_string: bytes, depends: str, key: str) -> None:
        """Remember that a GET with this query string is answered by ``key``'s entry while
        what it depends on is ``depends`` (the part of the key that changes)."""
        if len(query_string) <= QUERY_STRING_KEPT:
            self._queries[query_string] = (depends, key, len(query_string) + len(depends) + 256)

    def by_query(self, query_string: bytes, depends: str) -> tuple[bytes, str] | None:
        """(body, ETag) kept in this process for a GET with this query string, when it was
        answered under the same ``depends`` (catalog generation and serving model)."""
        known = self._queries.get(query_string)
        if known is None or known[0] != depends:
            return None
        return self._local.get(known[1])

    @staticmethod
    def key(digest: str, variables: Any, operation: str | None, depends: str) -> str:
        canonical = json.dumps(variables or {}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(
            f"{digest}\x1f{canonical}\x1f{operation or ''}\x1f{depends}".encode()
        ).hexdigest()

    async def get(self, key: str) -> tuple[bytes, str] | None:
        """(the stored body, its ETag), or None."""
        found = self._local.get(key)
        if found is not None:
            return found
        raw = await self.health.run(lambda redis: redis.get(f"{self.prefix}:resp:{key}"))
        if raw is not None and not isinstance(raw, Unavailable):
            return self._put_local(key, raw.encode() if isinstance(raw, str) else bytes(raw))
        return None

    def _put_local(self, key: str, body: bytes) -> tuple[bytes, str]:
        entry = (body, etag(body))
        if len(body) + 192 <= self._local.maxsize:
            self._local[key] = entry
        return entry

    def put_soon(self, key: str, body: bytes) -> str:
        """Into this process now, into Redis in the background (the response is not kept
        waiting); returns the body's ETag."""
        _, tag = self._put_local(key, body)
        if self.health.usable() is not None:
            task = asyncio.get_running_loop().create_task(self._put_shared(key, body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return tag

    async def _put_shared(self, key: str, body: bytes) -> None:
        await self.health.run(
            lambda redis: redis.set(f"{self.prefix}:resp:{key}", body, px=int(self.ttl * 1000))
        )


def etag(body: bytes) -> str:
    return 'W/"' + hashlib.sha256(body).hexdigest()[:32] + '"'
