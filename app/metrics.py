"""Prometheus metrics (prometheus-client), declared once here."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

GRAPHQL_REQUESTS = Counter(
    "cinerec_graphql_requests_total",
    "GraphQL operations executed, by operation name and status (ok or error).",
    ["operation", "status"],
)
GRAPHQL_LATENCY = Histogram(
    "cinerec_graphql_request_duration_seconds",
    "GraphQL operation latency in seconds, by operation name.",
    ["operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SQL_QUERIES = Counter("cinerec_sql_queries_total", "SQL statements sent to the database.")
CACHE_LOOKUPS = Counter(
    "cinerec_cache_lookups_total",
    "Read-through cache lookups by namespace and result.",
    ["namespace", "result"],
)
SCORE_BATCHES = Counter("cinerec_model_score_batches_total", "Batched scoring calls into the recommender.")
SCORE_BATCH_SIZE = Histogram(
    "cinerec_model_score_batch_size",
    "Users scored per batched recommender call.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)


def render() -> tuple[bytes, str]:
    """The exposition text; with several uvicorn workers, merged across them.

    ``PROMETHEUS_MULTIPROC_DIR`` is prometheus-client's own switch (set by ``cinerec serve
    --workers N``), so it is read here rather than through Settings.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
