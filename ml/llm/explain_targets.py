"""Data-to-text targets for the explanation side of the adapter.

A target is what a good answer to an explanation prompt says: it continues the server's
opening (``prompts.explanation_opening``) and states only facts the request holds, the
evidence movies and their ratings, the genres the candidate shares with them, its own genres
and its rating statistics, in wording drawn at random from a few phrasings per fact, so that
the model learns to verbalise the facts it is given rather than one sentence. Every target is
held to the checker that serving applies (``ml.llm.faithfulness.check``): one it would refuse
is never trained on (``explanation_examples`` raises instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ml.llm.faithfulness import FactMovie, Facts, TitleIndex, check
from ml.llm.prompts import ExplainRequest, explanation_opening, opening_movie

# MovieLens genres as prose writes them before "film"; genres prose has no word for are left out
_GENRE_PROSE = {
    "action": "action",
    "adventure": "adventure",
    "animation": "animated",
    "children's": "children's",
    "children": "children's",
    "comedy": "comedy",
    "crime": "crime",
    "documentary": "documentary",
    "drama": "drama",
    "fantasy": "fantasy",
    "film-noir": "film noir",
    "horror": "horror",
    "musical": "musical",
    "mystery": "mystery",
    "romance": "romance",
    "sci-fi": "science fiction",
    "thriller": "thriller",
    "war": "war",
    "western": "western",
}


@dataclass(frozen=True)
class ExplainExample:
    request: ExplainRequest
    target: str  # the answer after the opening: starts with a space, ends without the EOS


def genre_words(genres: Sequence[str]) -> list[str]:
    return [w for g in genres if (w := _GENRE_PROSE.get(g.lower()))]


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _a(phrase: str) -> str:
    return f"an {phrase}" if phrase[0] in "aeiou" else f"a {phrase}"


def _shared(movie: FactMovie, candidate: FactMovie) -> list[str]:
    return genre_words([g for g in movie.genres if g in set(candidate.genres)])[:3]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _stats(facts: Facts, rng: np.random.Generator) -> str | None:
    if facts.mean_rating is None or not facts.ratings_count:
        return None
    mean, count = f"{facts.mean_rating:.1f}/5", facts.ratings_count
    return _pick(
        rng,
        [
            f"Viewers rate it {mean} on average across {count} ratings.",
            f"Across {count} ratings, viewers give it {mean} on average.",
            f"It averages {mean} from {count} viewers.",
            f"Its {count} ratings average {mean}.",
        ],
    )


def _about_candidate(facts: Facts, rng: np.random.Generator) -> str | None:
    words = genre_words(facts.candidate.genres)[:3]
    if not words:
        return None
    kind = _and(words)
    return _pick(
        rng,
        [
            f"It is {_a(kind)} film.",
            f"It is {_a(kind)} movie through and through.",
            f"Expect {_a(kind)} story.",
        ],
    )


def _first_reason(facts: Facts, first: FactMovie, rng: np.random.Generator) -> str:
    """What follows "... because you rated <first> r/5, and": why that movie matters."""
    shared = _shared(first, facts.candidate)
    if shared:
        kind = _and(shared)
        return _pick(
            rng,
            [
                f" it brings more of that film's {kind} elements.",
                f" both are {kind} films.",
                f" it shares that movie's {kind} elements.",
                f" it offers more {kind} in the same vein.",
                f" like that film, it is {_a(kind)} story.",
            ],
        )
    own = genre_words(facts.candidate.genres)[:2]
    if own:
        return _pick(
            rng,
            [
                f" it is {_a(_and(own))} film that people with your taste rate highly.",
                f" this {_and(own)} film is a close match to what you rate highly.",
            ],
        )
    return " it is a close match to the movies you rate highly."


def _more_evidence(movie: FactMovie, facts: Facts, rng: np.random.Generator) -> str:
    rating = f"{movie.rating:g}/5"
    shared = _shared(movie, facts.candidate)
    if shared:
        kind = _and(shared)
        return _pick(
            rng,
            [
                f"You also gave {movie.title} {rating}, another {kind} film.",
                f"You rated {movie.title} {rating} as well, and it has the same {kind} elements.",
                f"You also rated {movie.title} {rating}, and it is {_a(kind)} film too.",
            ],
        )
    return _pick(
        rng,
        [f"You also gave {movie.title} {rating}.", f"{movie.title} earned {rating} from you as well."],
    )


def explanation_target(request: ExplainRequest, rng: np.random.Generator) -> str:
    """An answer that continues ``explanation_opening(request)`` with the request's facts only."""
    facts = request.facts
    assert facts is not None, "a target is written from the request's facts"
    parts: list[str] = []
    extras = [_stats(facts, rng), _about_candidate(facts, rng)]
    if facts.rated:  # "You rated C r/5, and it fits your taste because"
        if facts.evidence:
            first = facts.evidence[0]
            shared = _shared(first, facts.candidate)
            rated = f"{first.rating:g}/5" if first.rating else ""
            if shared:  # a comparison names only what the two share
                like = f", like {first.title}, which you rated {rated}" if rated else ""
                parts.append(f" it is {_a(_and(shared))} film{like}.")
            else:
                words = genre_words(facts.candidate.genres)[:2]
                kind = f"{_a(_and(words))} film" if words else "a film"
                also = f" You gave {first.title} {rated} as well." if rated else ""
                parts.append(f" it is {kind}.{also}")
            rest = facts.evidence[1:]
        else:
            words = genre_words(facts.candidate.genres)[:2]
            kind = f"{_a(_and(words))} film" if words else "a film"
            parts.append(f" it is {kind}, the kind you rate highly.")
            rest = ()
    elif (opener := opening_movie(facts)) is not None:
        parts.append(_first_reason(facts, opener, rng))
        rest = tuple(m for m in facts.evidence if m is not opener)
    else:  # "You will enjoy C because"
        words = genre_words(facts.candidate.genres)[:2]
        kind = f"{_a(_and(words))} film" if words else "a film"
        parts.append(
            _pick(
                rng,
                [
                    f" it is {kind} that viewers with your taste rate highly.",
                    f" it is {kind} close to what you like.",
                ],
            )
        )
        rest = ()
    if rest and rng.random() < 0.6:
        parts.append(" " + _more_evidence(rest[0], facts, rng))
    said = "".join(parts)
    stats, about = extras
    if stats is not None and rng.random() < 0.4:
        parts.append(" " + stats)
    if (
        about is not None
        and rng.random() < 0.4
        and not all(w in said for w in genre_words(facts.candidate.genres))
    ):
        parts.append(" " + about)  # only when it adds a genre not yet said
    return "".join(parts)


def explanation_examples(
    requests: Sequence[ExplainRequest], titles: TitleIndex, seed: int
) -> list[ExplainExample]:
    """One target per request, each one checked as serving checks an answer."""
    rng = np.random.default_rng(seed)
    out = []
    for request in requests:
        assert request.facts is not None
        target = explanation_target(request, rng)
        verdict = check(explanation_opening(request) + target, request.facts, titles)
        if not verdict.supported:
            raise ValueError(f"a target the checker refuses: {target!r}: {verdict.claims}")
        out.append(ExplainExample(request, target))
    return out
