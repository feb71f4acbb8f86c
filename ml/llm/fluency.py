"""Served explanations read by a person, sentence by sentence: grammatical, and supported.

Each labelled item is one served text (what a user reads: the model's words the checker kept,
the opening's sentence, or the template) with the facts it was written from, split into
sentences by ``sentences`` and each marked by a careful reader: grammatical English or not,
and supported by the facts or not, with a note saying why not. ``score`` gives the shares
issue 33 sets targets on: texts whose every sentence is grammatical, texts holding an
unsupported sentence, texts the LLM wrote. A frame is labelled before it is served.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ml.llm.faithfulness import Facts, TitleIndex, check
from ml.llm.prompts import ExplainRequest, explanation_opening, opening_sentence

LABELLED_FLUENCY = Path(__file__).with_name("labelled_fluency.jsonl")

# a sentence ends at ".", "!" or "?" before a space or the end, not at an initial ("E.T.")
_END = re.compile(r"(?:[!?]|(?<!\b[A-Z])\.)(?=\s|$)")


def sentences(text: str, titles: Iterable[str] = ()) -> list[str]:
    """``text`` split into sentences; the full stops inside ``titles`` ("Mr. Holland's Opus",
    "L.A. Confidential") end none."""
    masked = text
    for title in sorted(set(titles), key=len, reverse=True):
        masked = masked.replace(title, "x" * len(title))
    out, start = [], 0
    for match in _END.finditer(masked):
        out.append(text[start : match.end()].strip())
        start = match.end()
    if text[start:].strip():
        out.append(text[start:].strip())
    return out


@dataclass(frozen=True)
class LabelledSentence:
    text: str
    grammatical: bool
    supported: bool
    note: str = ""


@dataclass(frozen=True)
class LabelledText:
    key: str
    model: str
    facts: Facts
    source: str  # "llm" or "template"
    served: str
    sentences: tuple[LabelledSentence, ...]

    def titles(self) -> list[str]:
        return [m.title for m in self.facts.movies()]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelledText:
        return cls(
            data["key"],
            data["model"],
            Facts.from_json(data["facts"]),
            data["source"],
            data["served"],
            tuple(LabelledSentence(**s) for s in data["sentences"]),
        )


def load(path: Path = LABELLED_FLUENCY) -> list[LabelledText]:
    with path.open() as f:
        return [LabelledText.from_json(json.loads(line)) for line in f if line.strip()]


@dataclass(frozen=True)
class FluencyScore:
    texts: int
    all_grammatical: float  # share of texts whose every sentence is grammatical
    unsupported: float  # share of texts holding a sentence the facts do not support
    llm: float  # share of texts the LLM wrote
    sentences: int
    ungrammatical_sentences: int

    def describe(self) -> dict[str, float]:
        return {
            "texts": self.texts,
            "all_grammatical": round(self.all_grammatical, 4),
            "unsupported": round(self.unsupported, 4),
            "llm": round(self.llm, 4),
            "sentences": self.sentences,
            "ungrammatical_sentences": self.ungrammatical_sentences,
        }


def score(items: Sequence[LabelledText]) -> FluencyScore:
    n = len(items)
    if not n:
        raise ValueError("no labelled texts")
    return FluencyScore(
        n,
        sum(all(s.grammatical for s in item.sentences) for item in items) / n,
        sum(any(not s.supported for s in item.sentences) for item in items) / n,
        sum(item.source == "llm" for item in items) / n,
        sum(len(item.sentences) for item in items),
        sum(not s.grammatical for item in items for s in item.sentences),
    )


def as_served_now(items: Sequence[LabelledText], titles: TitleIndex) -> list[LabelledText]:
    """The same texts as the checker in this tree would serve them: an LLM text cut to its
    sentences before the first one the checker refuses; when none of the model's own is left,
    the opening's sentence (``source`` template). Kept sentences keep their labels, so a
    checker change is measured on texts already read, before new ones are labelled."""
    out = []
    for item in items:
        if item.source != "llm":
            out.append(item)
            continue
        said = list(item.sentences)
        while said and not check(" ".join(s.text for s in said), item.facts, titles).supported:
            said.pop()
        if len(said) == len(item.sentences):
            out.append(item)
            continue
        first = said[0] if said else item.sentences[0]
        opening = explanation_opening(ExplainRequest(item.facts.candidate.title, [], item.facts))
        if said and len(" ".join(s.text for s in said)) > len(opening):
            out.append(replace(item, served=" ".join(s.text for s in said), sentences=tuple(said)))
            continue
        cut = opening_sentence(ExplainRequest(item.facts.candidate.title, [], item.facts))
        if cut is None or not first.text.startswith(cut[:-1]):
            raise ValueError(f"{item.key}: no opening sentence to fall back to")
        kept = LabelledSentence(cut, True, True, "the server's opening sentence")
        out.append(replace(item, source="template", served=cut, sentences=(kept,)))
    return out
