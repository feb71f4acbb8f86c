"""The in-process cache level is bounded by memory, not by entries: a stranger who asks for
many distinct searches cannot grow it past its budget."""

from __future__ import annotations

from app.infra.cache import Kind, RedisHealth, TwoLevelCache, approx_size
from app.infra.metrics import Metrics
from app.server.persisted_queries import ResponseCache


async def test_l1_holds_at_most_its_byte_budget() -> None:
    metrics = Metrics()
    cache = TwoLevelCache(RedisHealth(None, metrics), metrics, prefix="t", max_bytes=1_000_000)
    hits = [(i, 0.5) for i in range(100)]  # a search's 100 hits
    assert approx_size(hits) > 5_000

    async def fetch(keys: list[int]) -> dict[int, list[tuple[int, float]]]:
        return {k: list(hits) for k in keys}

    for start in range(0, 2_000, 50):  # 2,000 distinct searches: about 16 MB if kept by entries
        await cache.get_many(Kind("search-like", 600, False), list(range(start, start + 50)), str, fetch)
    assert cache._l1.currsize <= 1_000_000
    assert 50 < len(cache._l1) < 200  # the newest kept, the oldest gone


def test_known_query_strings_hold_at_most_their_byte_budget() -> None:
    """One cached answer reached by many query strings (the variables' JSON padded with spaces):
    what the first layer remembers of them stays within its bytes, long strings counted whole."""
    metrics = Metrics()
    responses = ResponseCache(RedisHealth(None, metrics), prefix="t", ttl=60, local_bytes=800_000)
    budget = responses._queries.maxsize  # an eighth of the answers' budget
    for pad in range(2_000):  # about 8 MB of query strings if kept by entries
        query = b"variables=%7B%22id%22%3A" + b"+" * pad + b"1%7D&extensions=..."
        responses.know_query(query[:4000], "0:1", "key")
    assert responses._queries.currsize <= budget
    assert 10 < len(responses._queries) < 200  # the newest kept, the oldest gone
    assert responses.by_query(query[:4000], "0:1") is None  # no answer kept under that key
    assert responses.by_query(query[:4000], "1:1") is None
