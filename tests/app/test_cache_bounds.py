"""The in-process cache level is bounded by memory, not by entries: a stranger who asks for
many distinct searches cannot grow it past its budget."""

from __future__ import annotations

from app.cache import Kind, RedisHealth, TwoLevelCache, approx_size
from app.metrics import Metrics


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
