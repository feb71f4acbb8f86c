"""Decoding that cannot make a false comparison (ml/llm/constrain.py), with the real tokenizer
and model: the guard's bans, then what the model writes with and without them."""

from __future__ import annotations

import re

from ml.llm.backends import Decoding, ExplainRequest
from ml.llm.constrain import (
    PRAISE,
    GenreGuard,
    GuardTokens,
    continuation_tokens,
    genre_sequences,
    single_tokens,
    word_tokens,
)
from ml.llm.faithfulness import _GENRE, FactMovie, Facts
from ml.llm.local import TransformersBackend
from ml.llm.prompts import explanation_opening

ID4 = FactMovie("Independence Day (ID4) (1996)", 1996, ("Action", "Sci-Fi", "War"))
LONE_STAR = FactMovie("Lone Star (1996)", 1996, ("Drama", "Mystery"), rating=4.0)
STAR_WARS = FactMovie(
    "Star Wars (1977)", 1977, ("Action", "Adventure", "Romance", "Sci-Fi", "War"), rating=5.0
)
FACTS = Facts(ID4, (LONE_STAR, STAR_WARS), mean_rating=3.44, ratings_count=429)
OPENING = (
    "You will enjoy Independence Day (1996) because many who watched Lone Star (1996), "
    "which you rated 4/5, watched it too, and"
)


def one(tokenizer, text: str) -> int:
    [token] = tokenizer.encode(text, add_special_tokens=False)
    return int(token)


def test_after_the_opening_only_shared_genres_may_be_written(base_llm) -> None:
    _, tokenizer = base_llm
    guard = GenreGuard(FACTS, GuardTokens(genre_sequences(tokenizer)))
    # Lone Star (Drama, Mystery) shares no genre with Independence Day: every genre word is banned,
    # the candidate's own "action" too, since after the opening it reads as a comparison
    assert guard.allowed(OPENING) == set()
    banned = set(guard.banned(OPENING, []))
    assert {one(tokenizer, " action"), one(tokenizer, " drama"), one(tokenizer, " war")} <= banned
    # once Star Wars is named, what it shares with the candidate is free again; drama stays banned
    later = OPENING + " it is close to Star Wars (1977), which"
    assert guard.allowed(later) == {"action", "sci-fi", "war"}
    banned = set(guard.banned(later, []))
    assert one(tokenizer, " action") not in banned and one(tokenizer, " war") not in banned
    assert one(tokenizer, " drama") in banned


def test_a_multi_token_word_is_banned_at_its_last_token_only(base_llm) -> None:
    _, tokenizer = base_llm
    guard = GenreGuard(FACTS, GuardTokens(genre_sequences(tokenizer)))
    thr, iller = tokenizer.encode(" thriller", add_special_tokens=False)
    assert iller not in guard.banned(OPENING, [one(tokenizer, " the")])  # " the" + "iller" is no thriller
    assert iller in guard.banned(OPENING, [thr])  # " thr" + "iller" is


def test_after_a_rating_the_user_gave_only_a_plain_continuation_may_follow(base_llm) -> None:
    _, tokenizer = base_llm
    guard = GenreGuard(FACTS, GuardTokens(genre_sequences(tokenizer), continuation_tokens(tokenizer)))
    said = OPENING + " both are set in Texas. You also gave Star Wars (1977) 5/5"
    only = guard.only(said, [])
    assert only is not None
    assert {tokenizer.decode([t]) for t in only} == {".", " as", " too"}
    assert guard.only(said + " as well.", []) is None  # without ``encode``, anything may follow then
    told = GenreGuard(
        FACTS,
        GuardTokens(
            genre_sequences(tokenizer),
            continuation_tokens(tokenizer),
            encode=lambda text: tokenizer.encode(text, add_special_tokens=False),
        ),
    )
    assert [tokenizer.decode([t]) for t in told.only(said + " as", []) or []] == [" well"]
    assert [tokenizer.decode([t]) for t in told.only(said + " as well", []) or []] == ["."]
    assert [tokenizer.decode([t]) for t in told.only(said + " too", []) or []] == ["."]
    assert guard.only(OPENING, []) is None  # the opening's own rating is followed by its ", and"
    assert GenreGuard(FACTS, GuardTokens(genre_sequences(tokenizer))).only(said, []) is None  # not asked for


def test_after_you_also_gave_an_evidence_title_and_its_rating_are_copied(base_llm) -> None:
    _, tokenizer = base_llm

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    guard = GenreGuard(FACTS, GuardTokens(genre_sequences(tokenizer), encode=encode))
    text, answer = OPENING + " both are set in Texas. You also gave", [one(tokenizer, " gave")]
    copied = []
    while (only := guard.only(text, answer)) is not None:
        if len(only) > 1:  # the two evidence movies start differently: take Star Wars
            only = [encode(" Star Wars (1977) 5/5")[0]]
        [token] = only
        copied.append(token)
        answer.append(token)
        text += tokenizer.decode([token])
    assert tokenizer.decode(copied) == " Star Wars (1977) 5/5"  # the title, year and rating as held


def encode_all(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def test_like_may_open_the_answer_only(base_llm) -> None:
    _, tokenizer = base_llm
    guard = GenreGuard(
        FACTS, GuardTokens(genre_sequences(tokenizer), like=word_tokens(tokenizer, " like", " Like"))
    )
    like = one(tokenizer, " like")
    assert like not in guard.banned(OPENING, [])  # "and like that film, ..." may open
    said = OPENING + " both are action films"
    assert like in guard.banned(said, encode_all(tokenizer, " both are action films"))


def test_the_first_sentence_ends_once_the_shared_genres_are_named(base_llm) -> None:
    _, tokenizer = base_llm
    stop = word_tokens(tokenizer, ".")
    guard = GenreGuard(FACTS, GuardTokens(genre_sequences(tokenizer), stop=stop), opening=OPENING)
    assert guard.only(OPENING + " both are set in", []) is None
    assert guard.only(OPENING + " both have war elements", []) == stop
    assert guard.only(OPENING + " both are war films", []) == stop
    # a later sentence goes on freely
    assert (
        guard.only(OPENING + " both are war films. You also gave Star Wars (1977) 5/5, another war film", [])
        is None
    )


def test_the_answer_ends_with_its_second_sentence(base_llm) -> None:
    _, tokenizer = base_llm
    end = [int(tokenizer.eos_token_id)]
    la = FactMovie("L.A. Confidential (1997)", 1997, ("Crime", "Film-Noir", "Mystery"), rating=5.0)
    facts = Facts(ID4, (LONE_STAR, la), mean_rating=3.44, ratings_count=429)
    guard = GenreGuard(
        facts, GuardTokens(genre_sequences(tokenizer), end=end), opening=OPENING, title=ID4.title
    )
    first = OPENING + " both are mystery films."
    assert guard.only(first, []) is None  # one sentence: the answer may go on
    assert guard.only(first + " Many who watched L.A.", []) is None  # a title's full stops end nothing
    assert guard.only(first + " Many who watched L.A. Confidential (1997), which you rated 5/5", []) is None
    done = first + " Many who watched L.A. Confidential (1997), which you rated 5/5, watched it too."
    assert guard.only(done, []) == end
    assert guard.only(first + " It is a war film, too!", []) == end
    told = GenreGuard(
        facts,
        GuardTokens(
            genre_sequences(tokenizer),
            end=end,
            encode=lambda text: tokenizer.encode(text, add_special_tokens=False),
        ),
        opening=OPENING,
        title=ID4.title,
    )
    # a second sentence, if any, opens "Many who watched" (then a rated reason is copied whole)
    assert sorted(tokenizer.decode([t]) for t in told.only(first, []) or []) == sorted(
        [" Many", tokenizer.eos_token]
    )
    assert [tokenizer.decode([t]) for t in told.only(first + " Many", []) or []] == [" who"]
    assert [tokenizer.decode([t]) for t in told.only(first + " Many who", []) or []] == [" watched"]
    text, answer = first + " Many who watched", []
    while (only := told.only(text, answer)) is not None and only != end:
        [token] = only
        answer.append(token)
        text += tokenizer.decode([token])
    assert text == done and told.only(text, answer) == end  # copied whole, then the end


def test_story_only_after_a_genre_word_and_no_praise_words(base_llm) -> None:
    _, tokenizer = base_llm
    story = single_tokens(tokenizer, " story", " stories")
    praise = single_tokens(tokenizer, *PRAISE)
    assert story and {tokenizer.decode([t]) for t in praise} >= {" epic", " classic"}
    guard = GenreGuard(
        FACTS, GuardTokens(genre_sequences(tokenizer), story=story, praise=praise), opening=OPENING
    )
    assert set(story) <= set(guard.banned(OPENING + " both films share that", [1]))  # "that story"
    assert not set(story) & set(guard.banned(OPENING + " both are a war", [1]))  # "a war story"
    assert set(praise) <= set(guard.banned(OPENING + " it is an", [1]))


# the candidate shares no genre with the only evidence movie: any genre word after the opening
# is a false comparison
LION_KING = FactMovie("The Lion King (1994)", 1994, ("Animation", "Children's", "Musical"))
PULP_FICTION = FactMovie("Pulp Fiction (1994)", 1994, ("Crime", "Drama"), rating=4.0)
REQUEST = ExplainRequest(
    "The Lion King (1994)",
    ["you rated Pulp Fiction (1994) 4/5"],
    Facts(LION_KING, (PULP_FICTION,), mean_rating=3.78, ratings_count=220),
)


async def test_the_constrained_model_writes_no_genre_the_comparison_lacks(base_llm) -> None:
    model, tokenizer = base_llm
    written = {}
    for constrained in (False, True):
        backend = TransformersBackend(
            model, tokenizer, Decoding(max_new_tokens=40, constrain_genres=constrained)
        )
        try:
            [text] = await backend.explain_many([REQUEST])
        finally:
            await backend.aclose()
        opening = explanation_opening(REQUEST)
        assert text.startswith(opening)
        written[constrained] = text[len(opening) :]
    # without the guard the model names a genre (so the guard has something to stop)...
    assert _GENRE.search(written[False]), written[False]
    # ...with it, none: nothing the two movies share can be named, and nothing else may be
    assert not _GENRE.search(written[True]), written[True]
    assert re.search(r"\w", written[True])  # it still writes


def test_the_second_sentence_never_names_the_movie_the_opening_named(base_llm) -> None:
    """The opening says "because many who watched Lone Star (1996), which you rated 4/5,
    watched it too": a second sentence may name only Star Wars; with Lone Star the only
    evidence, no second sentence can open at all."""
    _, tokenizer = base_llm

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    end = (
        [one(tokenizer, "<|im_end|>")] if "<|im_end|>" in tokenizer.get_vocab() else [tokenizer.eos_token_id]
    )
    guard = GenreGuard(
        FACTS, GuardTokens(genre_sequences(tokenizer), encode=encode, end=end), opening=OPENING
    )
    assert guard.titles == [tuple(encode(" Star Wars (1977) 5/5"))]
    assert guard.watched == [tuple(encode(" Star Wars (1977), which you rated 5/5, watched it too."))]
    first = OPENING + " both are dramas."
    assert guard.only(first, []) == sorted({encode(" Many")[0], *end})  # one more reason, or the end
    assert guard.only(first + " Many who watched", [one(tokenizer, " watched")]) == [
        encode(" Star Wars (1977), which you rated 5/5, watched it too.")[0]
    ]
    alone = GenreGuard(
        Facts(ID4, (LONE_STAR,), mean_rating=3.44, ratings_count=429),
        GuardTokens(genre_sequences(tokenizer), encode=encode, end=end),
        opening=OPENING,
    )
    assert alone.titles == [] and alone.watched == [] and alone.second == {}
    assert alone.only(first, []) == end  # one sentence, then the end


def test_after_the_popularity_opening_the_model_says_what_the_movie_is(base_llm) -> None:
    """ "... because it is widely liked: 3.8/5 from 300 people, and" goes on "it is", not "it has
    more drama elements" (more than what?); a genre list never ends in "film", and "both are"
    is never followed by "more"."""
    _, tokenizer = base_llm

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    et = FactMovie("E.T. the Extra-Terrestrial (1982)", 1982, ("Children's", "Drama"))
    apollo = FactMovie("Apollo 13 (1995)", 1995, ("Action", "Drama"), rating=4.0)
    popular = Facts(et, (apollo,), mean_rating=3.83, ratings_count=300, prior=0)
    opening = explanation_opening(ExplainRequest(et.title, [], popular))
    assert opening.endswith("because it is widely liked: 3.8/5 from 300 people, and")
    guard = GenreGuard(
        popular, GuardTokens(genre_sequences(tokenizer), encode=encode, end=[2]), opening=opening
    )
    assert [tokenizer.decode(t) for t in [guard.only(opening, [])]] == [" it"]
    assert [tokenizer.decode(t) for t in [guard.only(opening + " it", [1])]] == [" is"]
    assert guard.only(opening + " it is", [1, 2]) is None  # then the model's own words
    assert set(encode(" film")[:1] + encode(" films")[:1]) <= set(
        guard.banned(opening + " it is drama and", [1])
    )
    assert encode(" more")[0] in guard.banned(OPENING + " both are", [1])
    assert encode(" more")[0] not in guard.banned(opening + " it is", [1])
    plain = Facts(et, (apollo,), mean_rating=3.83, ratings_count=300)  # a rated reason first
    told = GenreGuard(plain, GuardTokens(genre_sequences(tokenizer), encode=encode, end=[2]), opening=OPENING)
    assert sorted(tokenizer.decode([t]) for t in told.only(OPENING, []) or []) == sorted(
        [" it", " both", " like", " viewers"]
    )
