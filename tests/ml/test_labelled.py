"""The checker against hand labels (ml/llm/labelled_explanations.jsonl): the set is whole, and
the checker's precision and recall on it stay where they were measured."""

from __future__ import annotations

import pytest

from ml.llm.faithfulness import FactMovie, Facts, TitleIndex
from ml.llm.labelled import catalog_index, clause_claims, clauses, load, score


@pytest.fixture(scope="module")
def labelled():
    return load()


def test_the_labelled_set_is_whole(labelled) -> None:
    titles = catalog_index()
    assert len(labelled) >= 150
    assert len({item.key for item in labelled}) == len(labelled)
    for item in labelled:
        # the labels are for the clauses the checker is scored on, in order
        assert [c.text for c in item.clauses] == clauses(item.raw, item.facts, titles), item.key
        assert all(c.note for c in item.clauses if not c.supported), item.key  # a refusal says why
        assert item.raw.startswith(item.opening), item.key


def test_the_checker_finds_what_readers_refuse(labelled) -> None:
    result = score(labelled, catalog_index())
    assert result.unsupported_clauses >= 100  # the set holds enough refusals to measure against
    # measured (docs/explanations.md): a rule change that loses either side fails here
    assert result.precision >= 0.85, result.false_alarms
    assert result.recall >= 0.9, result.misses


def test_claims_belong_to_the_clause_that_makes_them() -> None:
    fargo = FactMovie("Fargo (1996)", 1996, ("Crime", "Drama", "Thriller"))
    heat = FactMovie("Heat (1995)", 1995, ("Action", "Crime", "Thriller"), rating=5.0)
    facts = Facts(fargo, (heat,), mean_rating=4.16, ratings_count=508)
    titles = TitleIndex(["Fargo (1996)", "Heat (1995)"])
    text = "You will enjoy Fargo (1996) because you rated Heat (1995) 5/5, and both are crime films, and both are dramas."
    found = clause_claims(text, facts, titles)
    assert [bool(f) for f in found] == [False, False, True]
    assert [c.kind for c in found[2]] == ["comparison"]


def test_the_served_decodings_set_holds_what_the_target_asks(labelled) -> None:
    """The `bf16` set: 150 outputs of the decoding served now, labelled before the checker was
    scored on them. A checker change that lets one of their refused clauses through to a served
    text, or refuses the model's words far more often, fails here."""
    served = [item for item in labelled if item.labelled_set == "bf16"]
    assert len(served) == 150
    result = score(served, catalog_index())
    assert result.unsupported_clauses >= 5
    assert result.recall == 1.0, result.misses
    assert result.served_unsupported <= 0.02
    assert result.llm_share >= 0.9, result.false_alarms


def test_an_unknown_labelled_set_is_a_clear_error() -> None:
    from typer.testing import CliRunner

    from app.cli import app

    ran = CliRunner().invoke(app, ["llm", "evaluate-explanations", "--pairs", "0", "--labelled-set", "nope"])
    assert ran.exit_code != 0
    assert "no labelled outputs in set 'nope'" in ran.output
    ran = CliRunner().invoke(app, ["llm", "evaluate-explanations", "--pairs", "0", "--labelled-set", "bf16"])
    assert ran.exit_code == 0, ran.output
    assert "150 hand-labelled outputs" in ran.output
