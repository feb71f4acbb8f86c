"""Decoding that cannot make a false comparison: genre words are allowed only where true.

An explanation opens with the server's words ("You will enjoy C because many who watched E,
which you rated 4/5, watched it too, and"), so every genre the model writes after them reads
as a comparison with the evidence movie named last. ``GenreGuard`` bans, at each decoding
step, the tokens that would complete a genre word outside what that movie shares with the
candidate (or, before any evidence movie is named, outside the candidate's own genres).
Multi-token words are banned at their last token once the tokens before it are written
("thr" + "iller"), as transformers' ``NoBadWordsLogitsProcessor`` does, so that a common
first token (" com", " An") stays free. More rules, the first frame's measured on the same
150 held-out pairs (docs/benchmarks.md), this frame's with issue 33: after "you rated" the
model copies an evidence movie's title, year and the user's rating token by token, and a
second sentence is "Many who watched" and one more rated reason copied whole (", which you
rated r/5, watched it too."); the model's first word is one the targets open with
(``FIRST_WORDS``); right after a rating only a full stop, "as well." or "too." may follow
(``CONTINUATIONS``, ``THEN``), not "across your viewing averages"; "like" may open the
model's answer ("and like that film, it is ...") but not follow later, where it led to plots
and garbled titles; the first sentence ends once it has named what the movies share ("both
have drama elements."); and the answer ends with its second sentence. The checker still
reads every text: the guard makes its refusals rarer, it does not replace it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ml.llm.faithfulness import GENRE_ALTERNATION, GENRE_WORDS, Facts, _genres, _phrase, _surface_forms

_SEQUENCES: dict[int, dict[str, list[tuple[int, ...]]]] = {}
_CONTINUATIONS: dict[int, list[int]] = {}
# what may follow a rating the user gave ("You also gave Heat (1995) 4/5"): the server holds the
# rating, not where it came from; without this the adapter goes on "across your viewing
# averages", "from 508 views" in most answers, and banning those words only moved it to others
# ("your viewership rating"): measured in docs/benchmarks.md
CONTINUATIONS = (".", " as", " too")
# ... and the sentence ends there: "as well." or "too." (``GenreGuard.then``). What the adapter
# wrote after a comma ("another film that offers more of that same story", "as another film
# from that same genre" of a movie without it, "which is another film with that title") was
# where nine in ten of the clauses a reader refused in its served answers were (docs/benchmarks.md)
THEN = {" as": " well", " as well": ".", " too": "."}
_RATED_TAIL = re.compile(r"\d(?:\.\d)?/5( as| as well| too)$")
_RATED = re.compile(r"\byou (?:also )?(?:gave|rated)\b[^.!?;]*\d(?:\.\d)?/5$", re.IGNORECASE)


def word_tokens(tokenizer: Any, *words: str) -> list[int]:
    """The first tokens of ``words`` (" like", " Like")."""
    return sorted({int(tokenizer.encode(w, add_special_tokens=False)[0]) for w in words})


def single_tokens(tokenizer: Any, *words: str) -> list[int]:
    """The tokens of those ``words`` that are one token each (banning the first token of a
    longer word would ban every word that starts with it)."""
    ids = (tokenizer.encode(w, add_special_tokens=False) for w in words)
    return sorted({int(i[0]) for i in ids if len(i) == 1})


def continuation_tokens(tokenizer: Any) -> list[int]:
    """The first tokens of ``CONTINUATIONS``, cached per tokenizer."""
    key = id(tokenizer)
    if key not in _CONTINUATIONS:
        _CONTINUATIONS[key] = sorted(
            {int(tokenizer.encode(c, add_special_tokens=False)[0]) for c in CONTINUATIONS}
        )
    return _CONTINUATIONS[key]


def genre_sequences(tokenizer: Any) -> dict[str, list[tuple[int, ...]]]:
    """Each MovieLens genre's token sequences, as prose starts a word with it (" Drama",
    " dramas", " science fiction"), cached per tokenizer."""
    key = id(tokenizer)
    if key not in _SEQUENCES:
        out: dict[str, set[tuple[int, ...]]] = {}
        for word, genre in GENRE_WORDS.items():
            for form in (f" {word}", f" {word[0].upper()}{word[1:]}"):
                ids = tuple(int(i) for i in tokenizer.encode(form, add_special_tokens=False))
                if ids:
                    out.setdefault(genre, set()).add(ids)
        _SEQUENCES[key] = {g: sorted(s) for g, s in out.items()}
    return _SEQUENCES[key]


def _completing(sequences: Sequence[tuple[int, ...]], answer: Sequence[int]) -> list[int]:
    """The last tokens of ``sequences`` whose other tokens ``answer`` ends with."""
    out = []
    for seq in sequences:
        head = len(seq) - 1
        if not head or (len(answer) >= head and tuple(answer[-head:]) == seq[:-1]):
            out.append(seq[-1])
    return out


_NAMED_SHARE = re.compile(
    r"(?<![\w-])(?:"
    + GENRE_ALTERNATION
    + r")(?:[\w ,-]*?) (?:elements?|genres?|films?|stories|story|movies?)$",
    re.IGNORECASE,
)
_AFTER_GENRE = re.compile(r"(?<![\w-])(?:" + GENRE_ALTERNATION + r")$", re.IGNORECASE)
PRAISE = (" epic", " classic", " excellent", " acclaimed", " masterpiece", " iconic", " beloved")
SENTENCES = 2  # an answer ends with its second sentence
# after the first sentence: " Many who watched", then a rated reason copied (``GenreGuard.watched``)
SECOND = {" Many": " Many", "Many": " who", "Many who": " watched"}
_SECOND = re.compile(r"[.!?] (Many|Many who)$")
_WATCHED = re.compile(r"[.!?] Many who watched$")
# the model's first word after the server's opening: what the targets open with. Left free,
# the base model went on the opening's own subject ("many who watched E ... watched it too,
# and loved it!"), a claim about those viewers the server does not hold
FIRST_WORDS = (" it", " both", " like", " viewers")
# after the popularity opening ("because it is widely liked: ..., and") the model says what the
# movie is: "it is a drama film". Left at " it", it went on "it has more drama elements", "it
# includes Thriller: ...", "it offers more of that film's actions" (more than what film?)
POPULAR_FIRST = (" it", " is")
_POPULAR_OPENING = re.compile(r"because it is widely (?:liked|watched): .*, and$")
# "elements such as action and film", "elements of thrills and films": a list of genres never
# ends in "film"; "both are more of the same genre": "both are" is followed by what they are
_AND_FILM = (" film", " films")
_AND = re.compile(r" and$")
_BOTH_ARE = re.compile(r"\bboth are$")
_SENTENCE_END = re.compile(r"(?<![A-Z])[.!?](?=\s|$)")
_TRIGGER = re.compile(r"\b[Yy]ou (?:also )?(?:gave|rated)$")


@dataclass(frozen=True)
class GuardTokens:
    """The tokenizer's side of a guard: each genre's token sequences and the token ids of the
    words a guard bans or forces. The same for every answer: a backend builds it once."""

    sequences: dict[str, list[tuple[int, ...]]]
    continuations: list[int] | None = None
    like: list[int] | None = None  # " like": only as the model's first word
    encode: Callable[[str], list[int]] | None = None  # titles and ratings are copied whole
    your: list[int] | None = None
    stop: list[int] | None = None  # the end of a sentence
    end: list[int] | None = None  # the end of the answer
    story: list[int] | None = None
    praise: list[int] | None = None

    @classmethod
    def of(cls, tokenizer: Any, end: list[int]) -> GuardTokens:
        """Every token set a served answer's guard uses, from ``tokenizer``."""
        return cls(
            genre_sequences(tokenizer),
            continuation_tokens(tokenizer),
            like=word_tokens(tokenizer, " like", " Like"),
            encode=lambda text: tokenizer.encode(text, add_special_tokens=False),
            your=word_tokens(tokenizer, " your", " Your"),
            stop=word_tokens(tokenizer, "."),
            end=end,
            story=single_tokens(tokenizer, " story", " stories", " Story", " Stories"),
            praise=single_tokens(tokenizer, *PRAISE),
        )


class GenreGuard:
    """The bans and forced tokens of one answer being decoded. Kept per answer: a title being
    copied is followed token by token (``only``)."""

    def __init__(self, facts: Facts, tokens: GuardTokens, *, opening: str = "", title: str = "") -> None:
        sequences, continuations, like, encode = (
            tokens.sequences,
            tokens.continuations,
            tokens.like,
            tokens.encode,
        )
        your, stop, end, story, praise = tokens.your, tokens.stop, tokens.end, tokens.story, tokens.praise
        self.sequences = sequences
        self.continuations = continuations
        self.like = like or []  # " like": only as the model's first word ("and like that film, ...")
        # " your": what the server holds of the user is their ratings, which the answer names
        # as "you rated"; "your viewing averages", "your favorite" were in a third of answers,
        # and banning those words only moved the model to others ("your viewership rating")
        self.your = your or []
        self.candidate = _genres(facts.candidate)
        self.evidence: list[tuple[list[re.Pattern[str]], set[str]]] = [
            ([_phrase(f) for f in _surface_forms(m.title)], _genres(m)) for m in facts.evidence
        ]
        # "You also gave" goes on with an evidence movie's title, year and the user's rating,
        # copied token by token: no misspelt title ("The Shawshunstarkaner"), year or rating;
        # not the one the opening named ("because you rated Schindler's List (1993) 5/5, ...
        # You also gave Schindler's List (1993) 5/5 as well." told the reader nothing new)
        rest = [m for m in facts.evidence if m.rating is not None and f" {m.title}" not in opening]
        self.titles = (
            [tuple(encode(f" {m.title} {m.rating:g}/5")) for m in rest] if encode is not None else []
        )
        # the second sentence says one more rated reason as what it is, copied whole after
        # "Many who watched": not the one the opening named, and no bullet restated (issue 33)
        self.watched = (
            [tuple(encode(f" {m.title}, which you rated {m.rating:g}/5, watched it too.")) for m in rest]
            if encode is not None
            else []
        )
        self.copies = encode is not None  # titles are copied (and the second sentence is one)
        self.first = (
            sorted({int(encode(w)[0]) for w in FIRST_WORDS}) if encode is not None and opening else []
        )
        self.popular = (
            [int(encode(w)[0]) for w in POPULAR_FIRST]
            if encode is not None and _POPULAR_OPENING.search(opening)
            else []
        )
        self.and_film = sorted({int(encode(w)[0]) for w in _AND_FILM}) if encode is not None else []
        self.more = [int(encode(" more")[0])] if encode is not None else []
        self._copying_from: int | None = None
        self._copying: list[tuple[int, ...]] = []
        # after such a rating: " as" -> " well" -> "."; " too" -> "."
        self.then = (
            {k: [int(encode(v)[0])] for k, v in THEN.items()} if encode is not None and continuations else {}
        )
        # the model's first sentence ends once it has named what the two movies share ("both
        # have drama elements."): what came after it was where invented words lived
        self.stop = stop or []
        self.floor = len(opening)
        # after the second sentence the answer ends (the prompt asks for one or two): a third
        # was filler or a false number in most answers that wrote one ("It averages 3.5/5
        # across its three films."), and the longest answer is what a batch of streams waits for
        self.end = end or []
        # " story" only right after a genre word ("a drama story"): "both films share that
        # story", "more of that story", "that story of bravery in combat" claimed plots the
        # server does not hold; and no praise word ("epic"), which needs facts it rarely has
        self.story = story or []
        self.praise = praise or []
        self.titles_text = [title, *(m.title for m in facts.evidence)]
        # the second sentence, if any, is "Many who watched <a rated reason>, which you rated
        # r/5, watched it too.": second sentences the model began otherwise ("It has more of
        # that same idea as the original film's comedy elements.") were where what a reader
        # refused was left, and the first frame's "You also gave <title> r/5 as well." only
        # repeated a bullet
        self.second = (
            {k: [int(encode(v)[0])] for k, v in SECOND.items()}
            if encode is not None and self.watched and end
            else {}
        )

    def allowed(self, text: str) -> set[str]:
        """The genres the next words may name: those the candidate shares with the evidence
        movie named last in ``text``, or the candidate's own before any is named."""
        last, genres = -1, self.candidate
        for patterns, own in self.evidence:
            for pattern in patterns:
                for match in pattern.finditer(text):
                    if match.end() > last:
                        last, genres = match.end(), self.candidate & own
        return genres

    def banned(self, text: str, answer: Sequence[int]) -> list[int]:
        """Token ids that would complete a genre word not allowed after ``text`` (whose model
        tokens so far are ``answer``), and " like" past the model's first word: "both have
        drama elements like ..." went on to what no fact holds (a plot, a garbled title) in a
        third of the adapter's answers."""
        allowed = self.allowed(text)
        out: list[int] = list(self.like) if answer else []
        out += self.your
        out += self.praise
        if self.story and not _AFTER_GENRE.search(text):
            out += self.story
        own = text[self.floor :]
        if self.and_film and _AND.search(own):
            out += self.and_film
        if self.more and _BOTH_ARE.search(own):
            out += self.more
        for genre, sequences in self.sequences.items():
            if genre not in allowed:
                out += _completing(sequences, answer)
        return out

    def only(self, text: str, answer: Sequence[int]) -> list[int] | None:
        """The only tokens that may come next, or None when any may (those ``banned`` leaves):
        the next token of an evidence title being copied after "You also gave"; after a
        rating the user gave, one of a few ``CONTINUATIONS``."""
        written = text[self.floor :].strip()
        if self.popular and written in ("", "it"):
            return [self.popular[0 if not written else 1]]
        if self.first and not written:
            return self.first
        if self._copying_from is not None:
            done = tuple(answer[self._copying_from :])
            nexts = {t[len(done)] for t in self._copying if len(t) > len(done) and t[: len(done)] == done}
            if nexts:
                return sorted(nexts)
            self._copying_from = None
            if done in self.titles and self._copying is self.titles and self.continuations:
                return self.continuations  # right after the rating copied
        own = text[self.floor :]
        if self.watched and _WATCHED.search(own):
            self._copying_from, self._copying = len(answer), self.watched
            return sorted({t[0] for t in self.watched})
        if self.titles and _TRIGGER.search(text):
            self._copying_from, self._copying = len(answer), self.titles
            return sorted({t[0] for t in self.titles})
        if self.then and (tail := _RATED_TAIL.search(text)):
            return self.then[tail.group(1)]
        if self.continuations and _RATED.search(text.rstrip()) and not text.endswith(" "):
            return self.continuations
        if self.stop and not re.search(r"[.!?]", own) and _NAMED_SHARE.search(own):
            return self.stop
        if self.end and own.endswith((".", "!", "?")):
            ended = self._sentences(own)
            if ended >= SENTENCES:
                return self.end
            if ended == 1 and self.second:  # a second sentence names one more reason, or none comes
                return sorted({self.second[" Many"][0], *self.end})
            if ended == 1 and self.copies and not self.watched:  # no reason left to name: the end
                return self.end
        if self.second and (opened := _SECOND.search(own)):
            return self.second[opened.group(1)]
        return None

    def _sentences(self, own: str) -> int:
        """Sentences ended in the model's words (a title's "L.A." or "Dr." ends none)."""
        for title in self.titles_text:
            if title:
                own = own.replace(title, "")
        return len(_SENTENCE_END.findall(own))
