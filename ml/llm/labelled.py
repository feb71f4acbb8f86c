"""The checker measured against people: raw model outputs labelled clause by clause by hand.

Each labelled output holds the facts the model was given, the server's opening, the raw text
and its clauses (``clauses``: split where ``faithfulness.CLAUSE_END`` splits them), each
marked supported or not by a careful reader, with a note saying why not. ``score`` runs the
checker over every output and compares, clause by clause: a clause the checker refuses is
one in which it finds a claim that the text up to the clause before did not already hold
(``clause_claims``), which is how ``supported_prefix`` cuts a text. Unsupported is the
positive class: precision is the share of refused clauses a reader also refuses, recall the
share of a reader's refused clauses the checker refuses. ``served_unsupported`` is the share
of outputs whose served text (what ``vet`` keeps, or the template) holds a clause the reader
refused: what users would read.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.llm.faithfulness import CLAUSE_END, Claim, Facts, TitleIndex, _phrase, _surface_forms, check, vet

LABELLED = Path(__file__).with_name("labelled_explanations.jsonl")
CATALOG_TITLES = Path(__file__).with_name("labelled_catalog_titles.txt")  # ML-100K's, one per line


@dataclass(frozen=True)
class LabelledClause:
    text: str
    supported: bool
    note: str = ""


@dataclass(frozen=True)
class LabelledOutput:
    key: str
    model: str
    title: str
    facts: Facts
    opening: str
    raw: str
    clauses: tuple[LabelledClause, ...]

    @property
    def labelled_set(self) -> str:
        """The set it was labelled in (free, held, test, bf16): its key's prefix."""
        return self.key.rsplit("-", 1)[0]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelledOutput:
        return cls(
            data["key"],
            data["model"],
            data["title"],
            Facts.from_json(data["facts"]),
            data["opening"],
            data["raw"],
            tuple(LabelledClause(c["text"], c["supported"], c.get("note", "")) for c in data["clauses"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "model": self.model,
            "title": self.title,
            "facts": self.facts.to_json(),
            "opening": self.opening,
            "raw": self.raw,
            "clauses": [
                {"text": c.text, "supported": c.supported, **({"note": c.note} if c.note else {})}
                for c in self.clauses
            ],
        }


def catalog_index() -> TitleIndex:
    """The catalog the labelled outputs were written against (ML-100K's titles, kept beside
    the labels): a title the model names is a claim only against the whole catalog."""
    return TitleIndex(CATALOG_TITLES.read_text().splitlines())


def load(path: Path = LABELLED) -> list[LabelledOutput]:
    with path.open() as lines:
        return [LabelledOutput.from_json(json.loads(line)) for line in lines if line.strip()]


_ABBREVIATION = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|St|Jr|vs|Vs)\.")


def clause_ends(text: str, facts: Facts, titles: TitleIndex) -> list[int]:
    """Where each clause of ``text`` ends (its mark included), the last ending the text. A
    mark inside a title ("Star Trek: First Contact", "Sex, Lies, and Videotape") or after an
    abbreviation ("Mr. Holland's Opus") ends no clause: a reader labels whole statements."""
    inside = [(a, b) for a, b, _ in titles.find(text)]
    inside += [
        (m.start(), m.end())
        for movie in facts.movies()
        for form in _surface_forms(movie.title)
        for m in _phrase(form).finditer(text)
    ]
    inside += [(m.start(), m.end()) for m in _ABBREVIATION.finditer(text)]
    ends = [m.end() for m in CLAUSE_END.finditer(text) if not any(a <= m.start() < b for a, b in inside)]
    if not ends or ends[-1] < len(text.rstrip()):
        ends.append(len(text.rstrip()))
    return ends


def clauses(text: str, facts: Facts, titles: TitleIndex) -> list[str]:
    """``text`` cut into clauses, as the labels cut it."""
    out, start = [], 0
    for end in clause_ends(text, facts, titles):
        out.append(text[start:end].strip())
        start = end
    return out


def clause_claims(text: str, facts: Facts, titles: TitleIndex) -> list[list[Claim]]:
    """For each clause, the claims the checker first finds once that clause is read."""
    out: list[list[Claim]] = []
    before: Counter[tuple[str, str]] = Counter()
    for end in clause_ends(text, facts, titles):
        now = check(text[:end], facts, titles).claims
        counted = Counter((c.kind, c.text) for c in now)
        new = counted - before
        out.append([c for c in now if new.pop((c.kind, c.text), 0)])  # each new claim once
        before = counted
    return out


@dataclass(frozen=True)
class CheckerScore:
    outputs: int
    clauses: int
    unsupported_clauses: int  # by the labels
    refused_clauses: int  # by the checker
    true_refusals: int
    precision: float
    recall: float
    outputs_unsupported: float  # raw outputs with any clause the labels refuse
    text_precision: float  # outputs: the checker refuses any clause, among them the labels too
    text_recall: float
    served_unsupported: float  # served texts with a clause the labels refuse
    llm_share: float  # outputs whose served text keeps the model's words
    misses: list[tuple[str, str]]  # (clause, note) the labels refuse and the checker passes
    false_alarms: list[tuple[str, str]]  # (clause, claims) the checker refuses and the labels pass


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def score(items: Sequence[LabelledOutput], titles: TitleIndex) -> CheckerScore:
    n_clauses = unsupported = refused = true = 0
    any_label = any_refused = both = served_bad = kept = 0
    misses: list[tuple[str, str]] = []
    alarms: list[tuple[str, str]] = []
    for item in items:
        found = clause_claims(item.raw, item.facts, titles)
        if len(found) != len(item.clauses):
            raise ValueError(f"{item.key}: {len(item.clauses)} labels for {len(found)} clauses")
        labelled_bad = [not c.supported for c in item.clauses]
        flagged = [bool(f) for f in found]
        for clause, bad, flag, claims in zip(item.clauses, labelled_bad, flagged, found, strict=True):
            n_clauses += 1
            unsupported += bad
            refused += flag
            true += bad and flag
            if bad and not flag:
                misses.append((clause.text, clause.note))
            if flag and not bad:
                alarms.append((clause.text, "; ".join(map(str, claims))))
        any_label += any(labelled_bad)
        any_refused += any(flagged)
        both += any(labelled_bad) and any(flagged)
        served, _ = vet(item.raw, item.facts, titles, item.opening)
        if served:
            kept += 1
            # the served text is whole sentences of the raw one: the clauses that end inside it
            shown = [
                c
                for c, end in zip(item.clauses, clause_ends(item.raw, item.facts, titles), strict=True)
                if end <= len(served)
            ]
            served_bad += any(not c.supported for c in shown)
    return CheckerScore(
        outputs=len(items),
        clauses=n_clauses,
        unsupported_clauses=unsupported,
        refused_clauses=refused,
        true_refusals=true,
        precision=_ratio(true, refused),
        recall=_ratio(true, unsupported),
        outputs_unsupported=_ratio(any_label, len(items)),
        text_precision=_ratio(both, any_refused),
        text_recall=_ratio(both, any_label),
        served_unsupported=_ratio(served_bad, len(items)),
        llm_share=_ratio(kept, len(items)),
        misses=misses,
        false_alarms=alarms,
    )


def worksheet(outputs: Iterable[dict[str, Any]], titles: TitleIndex) -> str:
    """The outputs to label, as a person reads them: the facts, then the numbered clauses."""
    lines = []
    for i, o in enumerate(outputs):
        facts = Facts.from_json(o["facts"])
        c = facts.candidate
        stats = (
            f"mean {facts.mean_rating:.2f} over {facts.ratings_count}" if facts.mean_rating else "no stats"
        )
        rated = f", user rated {c.rating:g}" if c.rating is not None else ""
        lines.append(f"## {i} {c.title} [{'|'.join(c.genres)}] {stats}{rated}")
        for e in facts.evidence:
            lines.append(f"   ev: {e.title} [{'|'.join(e.genres)}] user {e.rating}")
        for j, clause in enumerate(clauses(o["raw"], facts, titles)):
            lines.append(f"   c{j}: {clause}")
    return "\n".join(lines)
