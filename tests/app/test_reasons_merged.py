"""A card never names the same reason twice: ML-100K lists 18 titles under two ids each, and
both can be among a movie's largest parts; they are said once, with their weights added."""

from __future__ import annotations

from app.serving.llm_inputs import _merged
from ml.llm.evidence import POPULARITY, RATING, Evidence


def test_reasons_that_read_the_same_are_said_once_with_their_weights_added() -> None:
    chasing_amy = "you rated Chasing Amy (1997) 5/5 and it shares Comedy"
    merged = _merged(
        [
            Evidence(1, "it is widely liked: 4.1/5 from 300 people", 1.0, 0.2, POPULARITY),
            Evidence(246, chasing_amy, 0.8, 0.15, RATING),
            Evidence(268, chasing_amy, 0.8, 0.1, RATING),
        ]
    )
    assert [(e.reason, e.weight) for e in merged] == [
        (chasing_amy, 0.25),
        ("it is widely liked: 4.1/5 from 300 people", 0.2),
    ]
