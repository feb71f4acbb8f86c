"""The running-calls gauge while a promotion drains one backend and the next one serves."""

from __future__ import annotations

from app.infra.metrics import Metrics
from app.serving.llm_holder import PrometheusObserver


def _running(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("cinerec_llm_running_calls")


def test_two_backends_running_at_once_add_up_and_each_leaves_with_its_own_calls() -> None:
    metrics = Metrics()
    old, new = PrometheusObserver(metrics), PrometheusObserver(metrics)
    old.running(3)
    new.running(1)
    assert _running(metrics) == 4  # not whichever reported last
    old.running(0)
    assert _running(metrics) == 1
    new.running(2)
    new.running(0)
    assert _running(metrics) == 0
