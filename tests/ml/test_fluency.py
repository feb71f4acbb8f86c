"""The fluency set: served texts labelled sentence by sentence by a reader. Its sentences are
the texts' own (a label cannot drift from what it labels), and its shares are what
docs/benchmarks.md reports."""

from __future__ import annotations

import pytest

from ml.llm.faithfulness import FactMovie, Facts
from ml.llm.fluency import LabelledSentence, LabelledText, load, score, sentences


def test_sentences_end_at_full_stops_but_not_inside_titles() -> None:
    text = (
        "You will enjoy Mr. Holland's Opus (1995) because many who watched L.A. Confidential (1997), "
        "which you rated 5/5, watched it too, and both are drama films. Many who watched E.T. the "
        "Extra-Terrestrial (1982), which you rated 4/5, watched it too."
    )
    titles = ["Mr. Holland's Opus (1995)", "L.A. Confidential (1997)", "E.T. the Extra-Terrestrial (1982)"]
    assert sentences(text, titles) == [
        "You will enjoy Mr. Holland's Opus (1995) because many who watched L.A. Confidential (1997), "
        "which you rated 5/5, watched it too, and both are drama films.",
        "Many who watched E.T. the Extra-Terrestrial (1982), which you rated 4/5, watched it too.",
    ]
    assert sentences("It is fine! Is it? Yes") == ["It is fine!", "Is it?", "Yes"]


def test_score_counts_texts_not_sentences() -> None:
    facts = Facts(FactMovie("Heat (1995)", 1995, ("Action",)))

    def item(source: str, *labels: tuple[bool, bool]) -> LabelledText:
        said = tuple(LabelledSentence(f"s{i}.", g, s) for i, (g, s) in enumerate(labels))
        return LabelledText(source, "m", facts, source, " ".join(x.text for x in said), said)

    result = score(
        [item("llm", (True, True), (False, True)), item("template", (True, False)), item("llm", (True, True))]
    )
    assert result.texts == 3 and result.sentences == 4 and result.ungrammatical_sentences == 1
    assert result.all_grammatical == pytest.approx(2 / 3)
    assert result.unsupported == pytest.approx(1 / 3)
    assert result.llm == pytest.approx(2 / 3)


def test_the_labelled_set_labels_the_texts_own_sentences() -> None:
    items = load()
    assert len(items) >= 150 and len({i.key for i in items}) == len(items)
    for item in items:
        assert [s.text for s in item.sentences] == sentences(item.served, item.titles()), item.key
        assert item.source in ("llm", "template")
        assert all(s.note for s in item.sentences if not (s.grammatical and s.supported)), item.key


def test_the_checker_now_cuts_what_the_reader_refused_and_nothing_the_reader_kept() -> None:
    """On the first set (labelled as decoded before the checker learned from it), the checker
    in this tree cuts 12 of the 15 texts holding a sentence the reader refused, and no text the
    reader found grammatical and supported."""
    from ml.llm.fluency import as_served_now
    from ml.llm.labelled import catalog_index

    items = [i for i in load() if i.key.startswith("s12-")]
    now = as_served_now(items, catalog_index())
    cut = {i.key for i, j in zip(items, now, strict=True) if i.served != j.served}
    refused = {i.key for i in items if any(not (s.supported and s.grammatical) for s in i.sentences)}
    assert cut <= refused, cut - refused
    unsupported = {i.key for i in items if any(not s.supported for s in i.sentences)}
    assert len(unsupported) == 15 and len(cut & unsupported) == 12
    assert score(now).unsupported <= 0.02
