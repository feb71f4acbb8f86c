"""Prompts: the TALLRec-style preference question and the grounded explanation request.

This module is the one place a prompt is put together. Fine-tuning data, rerank
evaluation and serving all gather their facts (from data frames or from the database)
and call ``preference_request``; what the model reads cannot differ between training
and serving. A preference prompt is a user part (liked and disliked titles) and a
candidate part. They are tokenized separately and concatenated, in training and in
serving alike, so that the user part's key/value cache can be computed once and shared
by every candidate.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ml.llm.facts import FactMovie, Facts

SYSTEM = "You are a movie recommendation assistant."
_SPLIT = "\u2063"  # an invisible separator that no title contains: where the user part ends
YES, NO = "Yes", "No"
LIKED_THRESHOLD = 3.0  # TALLRec: a rating above 3 is a like
PROFILE_LIKED, PROFILE_DISLIKED = 5, 3  # titles a preference prompt names (a shorter prompt trains faster)


def word_for(value: float, scale: Sequence[tuple[float, str]]) -> str:
    """The first word of ``scale`` whose lower edge ``value`` reaches (the last otherwise)."""
    return next((word for edge, word in scale if value >= edge), scale[-1][1])


# Coarse words beside the numbers: a small model reads "highly rated" more easily than 4.1/5
# (measured: docs/benchmarks.md, "Preference side").
RATED = ((4.0, "highly rated"), (3.5, "well rated"), (3.0, "rated middling"), (0.0, "poorly rated"))
PLEASED = ((0.8, "easily pleased"), (0.6, "fairly easy to please"), (0.4, "choosy"), (0.0, "hard to please"))
GENRE_TASTE = ((0.8, "loves"), (0.6, "mostly likes"), (0.4, "is mixed on"), (0.0, "mostly dislikes"))


@dataclass(frozen=True)
class Profile:
    """What the prompt says about a user: titles, best liked and most disliked first, and how
    many of their ratings are likes (how easily pleased they are)."""

    liked: Sequence[str]
    disliked: Sequence[str]
    liked_count: int | None = None
    rated_count: int | None = None

    def text(self) -> str:
        liked = "; ".join(self.liked) or "nothing yet"
        disliked = "; ".join(self.disliked) or "nothing yet"
        counts = ""
        if self.rated_count:
            # a percentage, not "n of m": a small model reads it without dividing
            share = (self.liked_count or 0) / self.rated_count
            counts = (
                f"The user is {word_for(share, PLEASED)}: they liked {round(100 * share)}% of the "
                f"{self.rated_count} movies they rated.\n"
            )
        return f"{counts}The user liked: {liked}.\nThe user disliked: {disliked}.\n"


def movie_label(title: str, year: int | None) -> str:
    """How a prompt names a movie: its title and year, e.g. "Heat (1995)"."""
    return title if not year or f"({year})" in title else f"{title} ({year})"


_ARTICLE_LAST = re.compile(r"^(.*), (The|A|An|La|Le|Les|Il|El|Die|Der|Das|L')$")
_YEAR_AT_END = re.compile(r"\s*\((\d{4})\)\s*$")


def display_title(label: str) -> str:
    """A catalog label as prose writes it, for explanations a person reads: the article in
    front and alternative titles dropped ("English Patient, The (1996)" -> "The English Patient
    (1996)"). Preference prompts keep the catalog's labels, as their training data does."""
    year = _YEAR_AT_END.search(label)
    title = _YEAR_AT_END.sub("", label).strip()
    if " (" in title:
        title = title[: title.index(" (")]
    if (moved := _ARTICLE_LAST.match(title)) is not None:
        title = f"{moved.group(2)} {moved.group(1)}"
    return f"{title} ({year.group(1)})" if year else title


@dataclass(frozen=True)
class MovieFacts:
    """What a prompt may say about a candidate: its label, genres and how others rated it."""

    label: str
    genres: Sequence[str]
    mean: float | None = None
    count: int | None = None


@dataclass(frozen=True)
class ScoreRequest:
    """One user's preference questions: their profile and the candidate texts."""

    profile: Profile
    candidates: Sequence[str]


@dataclass(frozen=True)
class ExplainRequest:
    """A recommended title, the evidence lines the explanation may use, and the facts it may
    state (``ml.llm.faithfulness``: what the checker holds it to)."""

    title: str
    evidence: Sequence[str]
    facts: Facts | None = None

    @functools.cached_property
    def opening(self) -> str:
        """``explanation_opening``, worked out once per request (a stream's text, its prompt
        and its fallback all start from it)."""
        return _opening(self)


def profile_movies(
    ratings: Sequence[tuple[int, float]], *, n_liked: int = PROFILE_LIKED, n_disliked: int = PROFILE_DISLIKED
) -> tuple[list[int], list[int]]:
    """(liked, disliked) movie ids a profile names: best liked and worst disliked first, ties
    by movie id, so that the same ratings give the same profile in any order."""
    liked = sorted((r for r in ratings if r[1] > LIKED_THRESHOLD), key=lambda mr: (-mr[1], mr[0]))
    disliked = sorted((r for r in ratings if r[1] <= LIKED_THRESHOLD), key=lambda mr: (mr[1], mr[0]))
    return [m for m, _ in liked[:n_liked]], [m for m, _ in disliked[:n_disliked]]


@dataclass(frozen=True)
class GenreTaste:
    """How the user rated the movies that share a genre with a candidate: likes out of ratings."""

    liked: int
    rated: int

    def text(self) -> str:
        if not self.rated:
            return "The user rated no movie in its genres. "
        share = self.liked / self.rated
        return (
            f"The user {word_for(share, GENRE_TASTE)} its genres: they liked {round(100 * share)}% "
            f"of the {self.rated} they rated. "
        )


def genre_taste(
    ratings: Sequence[tuple[int, float]], genres: Sequence[str], genres_of: Callable[[int], Sequence[str]]
) -> GenreTaste:
    """The user's likes among their rated movies that share any of ``genres``."""
    wanted = set(genres)
    shared = [r for m, r in ratings if wanted.intersection(genres_of(m))]
    return GenreTaste(sum(r > LIKED_THRESHOLD for r in shared), len(shared))


def candidate_text(facts: MovieFacts, taste: GenreTaste | None = None) -> str:
    """The question about one movie: its genres and, when known, how others rated it and how
    the user rated its genres."""
    about = [", ".join(facts.genres)] if facts.genres else []
    if facts.count:
        mean = facts.mean or 0.0
        about.append(f"{word_for(mean, RATED)}: {mean:.1f}/5 on average by {facts.count} viewers")
    details = f" ({'; '.join(about)})" if about else ""
    return f"Will the user enjoy {facts.label}{details}? {taste.text() if taste else ''}Answer Yes or No."


def preference_request(
    ratings: Sequence[tuple[int, float]],
    candidates: Sequence[MovieFacts],
    label_of: Mapping[int, str] | Callable[[int], str],
    *,
    genres_of: Callable[[int], Sequence[str]],
    n_liked: int = PROFILE_LIKED,
    n_disliked: int = PROFILE_DISLIKED,
) -> ScoreRequest:
    """The preference questions for one user: ``ratings`` are all the (movie id, rating) pairs
    the profile may use; ``label_of`` names the movies ``profile_movies`` picks from them;
    ``genres_of`` gives a rated movie's genres (the user's taste in each candidate's genres)."""
    name = label_of.__getitem__ if isinstance(label_of, Mapping) else label_of
    liked, disliked = profile_movies(ratings, n_liked=n_liked, n_disliked=n_disliked)
    profile = Profile(
        [name(m) for m in liked],
        [name(m) for m in disliked],
        liked_count=sum(r > LIKED_THRESHOLD for _, r in ratings),
        rated_count=len(ratings),
    )
    return ScoreRequest(
        profile,
        [candidate_text(c, genre_taste(ratings, c.genres, genres_of)) for c in candidates],
    )


@dataclass
class PreferencePrompt:
    """Token ids of the user part and of each candidate part (answer slot at the end)."""

    user_ids: list[int]
    candidate_ids: list[list[int]] = field(default_factory=list)


class PromptBuilder:
    """Renders prompts with the tokenizer's own chat template."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        rendered = tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": _SPLIT}],
            tokenize=False,
            add_generation_prompt=True,
        )
        assert isinstance(rendered, str)
        self._head, self._tail = rendered.split(_SPLIT)
        self.yes_id = self._single_token(YES)
        self.no_id = self._single_token(NO)

    def _single_token(self, word: str) -> int:
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"{word!r} is not one token for this tokenizer")
        return int(ids[0])

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def explanation(self, request: ExplainRequest) -> str:
        """The explanation prompt as the model reads it, up to and including the server's
        opening: the model's answer continues it. Serving and fine-tuning both render it here."""
        chat = self.tokenizer.apply_chat_template(
            explanation_messages(request), tokenize=False, add_generation_prompt=True
        )
        assert isinstance(chat, str)
        return chat + explanation_opening(request)

    def preference(self, request: ScoreRequest) -> PreferencePrompt:
        """The user part once, one candidate part per candidate text."""
        return PreferencePrompt(
            self._encode(self._head + request.profile.text()),
            [self._encode(c + self._tail) for c in request.candidates],
        )


def explanation_messages(request: ExplainRequest) -> list[dict[str, str]]:
    """A chat asking for a short explanation grounded in the facts the server holds: the
    evidence lines, and the candidate's genres and rating statistics."""
    lines = [f"- {e}" for e in request.evidence] or ["- viewers with similar taste rated it highly"]
    facts = request.facts
    about = []
    if facts is not None:
        if facts.candidate.genres:
            about.append(f"- genres: {', '.join(facts.candidate.genres)}")
        if facts.mean_rating is not None and facts.ratings_count:
            about.append(
                f"- viewers rate it {facts.mean_rating:.1f}/5 on average ({facts.ratings_count} ratings)"
            )
    movie = "\n".join(about)
    ask = (
        f"In one or two sentences, tell the viewer why {request.title} fits their taste"
        if facts is not None and facts.rated
        else f"In one or two sentences, tell the viewer why they will enjoy {request.title}"
    )
    return [
        {
            "role": "system",
            "content": "You are a friendly movie recommendation assistant. Use only the facts given.",
        },
        {
            "role": "user",
            "content": (
                f"Facts about a viewer:\n{chr(10).join(lines)}\n"
                + (f"Facts about {request.title}:\n{movie}\n" if movie else "")
                + f"{ask}, using only these facts. Name no actors, characters, places or other movies."
            ),
        },
    ]


LIKED_MEAN = 3.5  # a mean rating at or above this may be called "liked"


def popularity_reason(mean: float | None, count: int | None) -> str:
    """The movie's own part of the score in words. Popularity counts raters (log(1 + raters)),
    so a movie many people rated and few liked is "widely watched", never "widely liked"."""
    if mean is None or not count:
        return "it is popular with viewers"
    people = f"{count:,} {'person' if count == 1 else 'people'}"
    if mean >= LIKED_MEAN:
        return f"it is widely liked: {mean:.1f}/5 from {people}"
    return f"it is widely watched: {people} rated it, {mean:.1f}/5 on average"


def opening_movie(facts: Facts) -> FactMovie | None:
    """The rated reason an answer opens with: the largest (``evidence`` is in weight order)
    that shares a genre with the candidate (what follows its ", and" reads as a comparison,
    and a comparison with a movie sharing nothing has nothing true to say), else the largest;
    None when none is rated, or when the movie's own popularity is the largest reason."""
    if facts.prior == 0:
        return None
    rated = [m for m in facts.evidence if m.rating is not None]
    wanted = {g.lower() for g in facts.candidate.genres}
    return next((m for m in rated if wanted & {g.lower() for g in m.genres}), rated[0] if rated else None)


def explanation_opening(request: ExplainRequest) -> str:
    """The start of the answer (see ``_opening``), once per request."""
    return request.opening


def _opening(request: ExplainRequest) -> str:
    """The start of the answer, written for the model: it fits the viewer's relation to the
    movie (rated already or not) and states the largest reason as what it is, which a bullet
    does not say: many who watched a movie you rated watched this one too (EASE and LightFM
    learn from who rated what together), or the movie is widely watched. Cut before its
    ", and" it is a whole true sentence, so it goes out at once; the model continues from a
    fact rather than reviewing the film from memory."""
    facts = request.facts
    if facts is not None and facts.candidate.rating is not None:
        return f"You rated {request.title} {facts.candidate.rating:g}/5, and it fits your taste because"
    if facts is not None and facts.prior == 0 and facts.mean_rating is not None and facts.ratings_count:
        reason = popularity_reason(facts.mean_rating, facts.ratings_count)
        return f"You will enjoy {request.title} because {reason}, and"
    first = opening_movie(facts) if facts is not None else None
    if first is not None:
        return (
            f"You will enjoy {request.title} because many who watched {first.title}, "
            f"which you rated {first.rating:g}/5, watched it too, and"
        )
    return f"You will enjoy {request.title} because"


OPENING_TAIL = ", and"  # an opening ending so states the largest reason whole, and goes out at once


def opening_sentence(request: ExplainRequest) -> str | None:
    """The server's opening as a sentence of its own (cut before its ", and"), when it states a
    reason whole: what a stream sends first, and all a text says when the model's words fail."""
    facts = request.facts
    opening = explanation_opening(request) if facts is not None else ""
    if facts is None or not facts.evidence or not opening.endswith(OPENING_TAIL):
        return None
    return opening[: -len(OPENING_TAIL)] + "."
