"""Data-to-text targets for the explanation side of the adapter.

A target is what a good answer to an explanation prompt says: it continues the server's
opening (``prompts.explanation_opening``, which states the largest reason) with what that
reason shares with the candidate, or the candidate's own genres, in wording drawn at random
from a few phrasings; then, only when there is one, a second sentence with the next rated
reason as what it is ("Many who watched E, which you rated r/5, watched it too."). No
sentence restates a bullet (issue 33: the first frame's two sentences repeated bullets 1
and 2 word for word). Every target is
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
    # the opening named a movie that shares no genre: any genre word would compare with it
    return _pick(
        rng,
        [
            " it is a close match to the movies you rate highly.",
            " it is close to what you rate highly.",
            " it fits the movies you rate highly.",
            " viewers with your taste rate it highly.",
            " it suits the taste your ratings show.",
        ],
    )


def also_watched(movie: FactMovie) -> str:
    """The second sentence: one more rated reason, said as what it is (the guard in
    ``ml.llm.constrain`` copies it token by token after "Many who watched")."""
    return f"Many who watched {movie.title}, which you rated {movie.rating:g}/5, watched it too."


def _about_own_genres(facts: Facts, rng: np.random.Generator) -> str:
    """What follows "... because it is widely watched: ..., and": the movie's own genres."""
    words = genre_words(facts.candidate.genres)[:2]
    if not words:
        return " viewers with your taste rate it highly."
    kind = _and(words)
    return _pick(rng, [f" it is {_a(kind)} film.", f" it is {_a(kind)} film through and through."])


def explanation_target(request: ExplainRequest, rng: np.random.Generator) -> str:
    """An answer that continues ``explanation_opening(request)`` with the request's facts only."""
    facts = request.facts
    assert facts is not None, "a target is written from the request's facts"
    parts: list[str] = []
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
    else:
        opener = opening_movie(facts)
        popular_first = facts.prior == 0 and facts.mean_rating is not None and bool(facts.ratings_count)
        if popular_first:  # "You will enjoy C because it is widely liked: ..., and"
            parts.append(_about_own_genres(facts, rng))
        elif opener is not None:  # "... because many who watched E, which you rated r/5, watched it too, and"
            parts.append(_first_reason(facts, opener, rng))
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
        rest = tuple(m for m in facts.evidence if m is not opener and m.rating is not None)
        # a second sentence only when it adds a reason: the next rated one, as what it is
        if (popular_first or opener is not None) and rest and rng.random() < 0.7:
            parts.append(" " + also_watched(rest[0]))
        return "".join(parts)
    rated_rest = [m for m in rest if m.rating is not None]
    if rated_rest and rng.random() < 0.6:
        parts.append(" " + also_watched(rated_rest[0]))
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
