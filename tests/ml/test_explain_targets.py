"""The explanation side's training targets: over facts drawn at random from the real ML-100K
catalog, every target continues the server's opening, passes the serving checker, names the
evidence when there is some, fits the user's relation to the movie, and the wording varies."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from ml.llm.explain_targets import explanation_examples, explanation_target
from ml.llm.faithfulness import FactMovie, Facts, TitleIndex, check
from ml.llm.prompts import ExplainRequest, display_title, explanation_opening


@pytest.fixture(scope="module")
def catalog(ml100k_dir: Path) -> list[FactMovie]:
    out = []
    with (ml100k_dir / "movies.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            year = re.search(r"\((\d{4})\)\s*$", row["title"])
            genres = tuple(g for g in row["genres"].split("|") if g != "(no genres listed)")
            out.append(FactMovie(display_title(row["title"]), int(year.group(1)) if year else None, genres))
    return out


@pytest.fixture(scope="module")
def titles(catalog: list[FactMovie]) -> TitleIndex:
    return TitleIndex(m.title for m in catalog)


def _requests(catalog: list[FactMovie], n: int, seed: int) -> list[ExplainRequest]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        picked = [catalog[int(i)] for i in rng.choice(len(catalog), size=4, replace=False)]
        rated = rng.random() < 0.2
        candidate = (
            FactMovie(*picked[0].__dict__.values())
            if not rated
            else FactMovie(picked[0].title, picked[0].year, picked[0].genres, float(rng.integers(1, 6)))
        )
        evidence = tuple(
            FactMovie(m.title, m.year, m.genres, float(rng.integers(4, 6)))
            for m in picked[1 : 1 + int(rng.integers(0, 4))]
        )
        count = int(rng.integers(1, 500))
        facts = Facts(candidate, evidence, mean_rating=float(rng.uniform(1, 5)), ratings_count=count)
        out.append(
            ExplainRequest(candidate.title, [f"you rated {e.title} {e.rating:g}/5" for e in evidence], facts)
        )
    return out


def test_every_target_is_supported_names_its_evidence_and_fits_the_relation(catalog, titles) -> None:
    requests = _requests(catalog, 600, seed=3)
    examples = explanation_examples(requests, titles, seed=3)  # raises on a target the checker refuses
    assert len(examples) == 600
    for example in examples:
        facts = example.request.facts
        assert facts is not None
        text = explanation_opening(example.request) + example.target
        verdict = check(text, facts, titles)
        assert verdict.supported, (text, verdict.claims)
        assert example.target.startswith(" ") and example.target.endswith(".")
        if facts.evidence:
            assert verdict.uses_evidence, text
        if facts.rated:
            assert "will enjoy" not in text
    rated = [e for e in examples if e.request.facts and e.request.facts.rated]
    assert rated, "the sample holds movies the user rated"


def test_targets_vary_in_wording(catalog, titles) -> None:
    request = next(r for r in _requests(catalog, 200, seed=5) if r.facts and len(r.facts.evidence) >= 2)
    rng = np.random.default_rng(0)
    assert len({explanation_target(request, rng) for _ in range(40)}) >= 8


def test_a_target_the_checker_refuses_is_never_trained_on(catalog, titles, monkeypatch) -> None:
    import ml.llm.explain_targets as targets

    monkeypatch.setattr(targets, "explanation_target", lambda request, rng: " it won an Oscar.")
    with pytest.raises(ValueError, match="checker refuses"):
        targets.explanation_examples(_requests(catalog, 1, seed=9), titles, seed=1)
