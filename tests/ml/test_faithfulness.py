"""The explanation checker: known-bad sentences are caught (each kind), known-good pass."""

from __future__ import annotations

import pytest

from ml.llm.faithfulness import FactMovie, Facts, TitleIndex, check, supported_prefix, title_key

CATALOG = TitleIndex(
    [
        "Star Wars (1977)",
        "Return of the Jedi (1983)",
        "One Flew Over the Cuckoo's Nest (1975)",
        "Schindler's List (1993)",
        "Godfather, The (1972)",
        "Heat (1995)",
        "Fargo (1996)",
        "Mission: Impossible (1996)",
        "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
    ]
)
CUCKOO = FactMovie("One Flew Over the Cuckoo's Nest (1975)", 1975, ("Drama",))
GODFATHER = FactMovie("Godfather, The (1972)", 1972, ("Action", "Crime", "Drama"), rating=5.0)
FARGO = FactMovie("Fargo (1996)", 1996, ("Crime", "Drama", "Thriller"), rating=4.0)
FACTS = Facts(CUCKOO, (GODFATHER, FARGO), mean_rating=4.29, ratings_count=264)


def kinds(text: str, facts: Facts = FACTS) -> list[str]:
    return [c.kind for c in check(text, facts, CATALOG).claims]


def test_title_keys_read_catalog_titles_as_prose_writes_them() -> None:
    assert title_key("Godfather, The (1972)") == "the godfather"
    assert (
        title_key("City of Lost Children, The (Cité des enfants perdus, La) (1995)")
        == "the city of lost children"
    )
    assert title_key("Mission: Impossible (1996)") == "mission impossible"


@pytest.mark.parametrize(
    "text",
    [
        "You will enjoy One Flew Over the Cuckoo's Nest (1975) because you rated The Godfather 5/5 and it shares Drama.",
        "You will enjoy One Flew Over the Cuckoo's Nest because, like Fargo (1996), it is a crime-free drama you can sink into.",
        "You will enjoy One Flew Over the Cuckoo's Nest because you gave Fargo 4 stars and both are dramas from the 1970s and 1990s.",
        "You will enjoy One Flew Over the Cuckoo's Nest because viewers rate it 4.3/5 on average, and you loved The Godfather.",
        "You will enjoy One Flew Over the Cuckoo's Nest because 264 viewers rate it 4.29/5, and you loved The Godfather.",
        # an evidence movie's genre in the clause that names it
        "You will enjoy One Flew Over the Cuckoo's Nest because you rated Fargo (1996) 4/5 for its crime and thriller.",
    ],
)
def test_what_the_facts_hold_passes(text: str) -> None:
    verdict = check(text, FACTS, CATALOG)
    assert verdict.supported, verdict.claims
    assert verdict.uses_evidence


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        # the findings, and one of each kind
        (
            "You will enjoy One Flew Over the Cuckoo's Nest (1975) because it is a classic horror film.",
            "genre",
        ),
        (
            "You will enjoy it because it has the unique blend of horror elements of Schindler's List.",
            "title",
        ),
        ("You will enjoy One Flew Over the Cuckoo's Nest because you liked Return of the Jedi.", "title"),
        ('You will enjoy it because a fictional alien creature called the "Loner" hunts the crew.', "name"),
        ("You will enjoy it because Jack Nicholson gives the performance of his life.", "name"),
        ("You will enjoy One Flew Over the Cuckoo's Nest because it was released in 1977.", "year"),
        ("You will enjoy it because you rated Fargo 5/5.", "rating"),
        ("You will enjoy it because it is a film from the 1980s.", "year"),
        ("You will enjoy it because you already watched One Flew Over the Cuckoo's Nest twice.", "relation"),
        ("You will enjoy it because it is a science fiction story.", "genre"),
        # seen from the base model once the titles were right (ML-100K, evaluate-explanations)
        (
            "You will enjoy it because your rating is 60% above the average for films released that year.",
            "number",
        ),
        ("You will enjoy it because you rated Fargo 4/5, and you watched it in 3 years!", "number"),
        (
            "You will enjoy it because it has been praised by critics worldwide for its storytelling.",
            "outside",
        ),
        ("You will enjoy it because it is based on a classic novel.", "outside"),
        # the rating count (264) as a count of something else (seen in make demo's first answer)
        ("You will enjoy it because you rated Fargo 4/5, and you watched it 264 times!", "number"),
        (
            "You will enjoy it because you rated Fargo 4/5, and you also watched one of the most iconic films.",
            "relation",
        ),
        # a true title with a false year (the 40-step adapter's "The Empire Strikes Back (1983)")
        ("You will enjoy it because you rated The Godfather (1974) 5/5.", "year"),
        # an evidence movie's genre said of the candidate (the adapter's "like that film, it is
        # an action drama story" for The English Patient)
        (
            "You will enjoy it because you rated Fargo 4/5, and like that film, it is a thriller story.",
            "comparison",
        ),
        # a number as a bound (make demo: "both share action, adventure elements like the story's 4+ rating")
        ("You will enjoy it because you rated Fargo 4/5, and it has the story's 4+ rating.", "number"),
        # a count in words ("It is an action, adventure, sci-fi film across five reviews.")
        ("You will enjoy it because it is a drama film across five reviews.", "number"),
    ],
)
def test_each_kind_of_unsupported_claim_is_caught(text: str, kind: str) -> None:
    assert kind in kinds(text)


def test_a_rated_candidate_is_not_promised() -> None:
    rated = Facts(FactMovie("Star Wars (1977)", 1977, ("Action", "Sci-Fi"), rating=5.0), (GODFATHER,))
    assert kinds("You will enjoy Star Wars (1977) because it shares Action with The Godfather.", rated) == [
        "relation"
    ]
    assert not kinds("You rated Star Wars (1977) 5/5, and like The Godfather it is full of action.", rated)


def test_an_evidence_title_that_starts_with_the_candidates_is_the_evidence() -> None:
    die_hard = Facts(
        FactMovie("Die Hard (1988)", 1988, ("Action", "Thriller")),
        (FactMovie("Die Hard: With a Vengeance (1995)", 1995, ("Action", "Thriller"), rating=4.0),),
    )
    text = "We picked Die Hard (1988) because you rated Die Hard: With a Vengeance (1995) 4/5."
    assert not kinds(text, die_hard)
    # the candidate itself, which the user has not rated: a false claim about the user
    assert "relation" in kinds("You will enjoy it because you rated Die Hard (1988) 4/5.", die_hard)


def test_titles_inside_titles_claim_no_genre_or_year() -> None:
    facts = Facts(FactMovie("Star Wars (1977)", 1977, ("Action", "Sci-Fi")), (GODFATHER,))
    assert not kinds("You will enjoy Star Wars (1977) because you rated The Godfather (1972) 5/5.", facts)


def test_the_supported_prefix_keeps_the_whole_sentences_before_the_first_claim() -> None:
    text = (
        "You will enjoy One Flew Over the Cuckoo's Nest because you rated The Godfather 5/5. "
        "It shares Drama, and it is a horror classic. It shares Drama."
    )
    assert supported_prefix(text, FACTS, CATALOG) == (
        "You will enjoy One Flew Over the Cuckoo's Nest because you rated The Godfather 5/5."
    )
    half = "You will enjoy One Flew Over the Cuckoo's Nest because you rated The Godfather 5/5, and it is horror."
    assert supported_prefix(half, FACTS, CATALOG) == ""  # not half a sentence
    assert supported_prefix("It is a horror classic, sadly.", FACTS, CATALOG) == ""
    fine = "You will enjoy One Flew Over the Cuckoo's Nest because it is a drama, like Fargo."
    assert supported_prefix(fine, FACTS, CATALOG) == fine


def test_a_rating_belongs_to_the_longest_title_before_it() -> None:
    """ "Star Trek: First Contact (1996) 4/5" rates the evidence, not the candidate "Contact"
    that its last word spells (the candidate is unrated: 4/5 was refused as its rating)."""
    titles = TitleIndex(["Contact (1997)", "Star Trek: First Contact (1996)"])
    contact = FactMovie("Contact (1997)", 1997, ("Drama", "Sci-Fi"))
    trek = FactMovie("Star Trek: First Contact (1996)", 1996, ("Action", "Sci-Fi"), rating=4.0)
    facts = Facts(contact, (trek,), mean_rating=3.8, ratings_count=509)
    text = "You will enjoy Contact (1997) because you rated Star Trek: First Contact (1996) 4/5."
    assert check(text, facts, titles).supported
    assert not check(text.replace("4/5", "2/5"), facts, titles).supported


def test_a_title_two_catalog_movies_share_carries_either_rating() -> None:
    """ML-100K lists "Chasing Amy (1997)" twice; a user who rated both may be told either."""
    titles = TitleIndex(["Chasing Amy (1997)", "Jerry Maguire (1996)"])
    amy = [FactMovie("Chasing Amy (1997)", 1997, ("Drama", "Romance"), rating=r) for r in (5.0, 4.0)]
    facts = Facts(FactMovie("Jerry Maguire (1996)", 1996, ("Drama",)), tuple(amy))
    for rating in ("5/5", "4/5"):
        assert check(f"You also gave Chasing Amy (1997) {rating}.", facts, titles).supported
    assert not check("You also gave Chasing Amy (1997) 3/5.", facts, titles).supported


def test_titles_in_other_alphabets_count_as_evidence_use() -> None:
    titles = TitleIndex(["Cérémonie, La (1995)", "Heat (1995)"])
    ceremonie = FactMovie("La Cérémonie (1995)", 1995, ("Drama",), rating=4.0)
    facts = Facts(FactMovie("Heat (1995)", 1995, ("Action",)), (ceremonie,))
    verdict = check("You will enjoy Heat (1995) because you rated La Cérémonie (1995) 4/5.", facts, titles)
    assert verdict.supported and verdict.uses_evidence


# issue 23's findings: comparisons that give a rated movie a genre it lacks, attributions to
# the user the server does not hold, praise with no fact behind it, titles in lower case
RELATION_CATALOG = TitleIndex(
    [
        "Independence Day (ID4) (1996)",
        "Lone Star (1996)",
        "Schindler's List (1993)",
        "Shining, The (1980)",
        "Star Wars (1977)",
        "Four Weddings and a Funeral (1994)",
        "Army of Darkness (1993)",
        "Fargo (1996)",
    ]
)
ID4 = FactMovie("Independence Day (ID4) (1996)", 1996, ("Action", "Sci-Fi", "War"))
LONE_STAR = FactMovie("Lone Star (1996)", 1996, ("Drama", "Mystery"), rating=4.0)
SCHINDLER = FactMovie("Schindler's List (1993)", 1993, ("Drama", "War"), rating=5.0)
SHINING = FactMovie("Shining, The (1980)", 1980, ("Horror",), rating=5.0)
STAR_WARS = FactMovie(
    "Star Wars (1977)", 1977, ("Action", "Adventure", "Romance", "Sci-Fi", "War"), rating=5.0
)
ARMY = FactMovie(
    "Army of Darkness (1993)", 1993, ("Action", "Adventure", "Comedy", "Horror", "Sci-Fi"), rating=4.0
)
FARGO_CAND = FactMovie("Fargo (1996)", 1996, ("Crime", "Drama", "Thriller"))
ID4_FACTS = Facts(ID4, (LONE_STAR, STAR_WARS, SHINING), mean_rating=3.4, ratings_count=429)
FARGO_FACTS = Facts(FARGO_CAND, (SCHINDLER, ARMY, SHINING), mean_rating=4.16, ratings_count=508)


def relation_kinds(text: str, facts: Facts) -> list[str]:
    return [c.kind for c in check(text, facts, RELATION_CATALOG).claims]


@pytest.mark.parametrize(
    ("text", "facts", "kind"),
    [
        (
            "You will enjoy Independence Day (1996) because you rated Lone Star (1996) 4/5, and both have action elements.",
            ID4_FACTS,
            "comparison",
        ),
        (
            "You will enjoy Fargo (1996) because you rated Schindler's List (1993) 5/5, and like that film, "
            "it is drama and thriller in its same vein.",
            FARGO_FACTS,
            "comparison",
        ),
        (
            "You will enjoy it because you rated Fargo. You also gave The Shining (1980) 5/5 for an action film too.",
            ID4_FACTS,
            "comparison",
        ),
        (
            "You will enjoy it. You also gave Schindler's List (1993) 5/5 too, which is another crime and drama story.",
            FARGO_FACTS,
            "comparison",
        ),
        # the demo's own first answer
        (
            "You will enjoy Fargo (1996) because you rated Army of Darkness (1993) 4/5, and both have drama elements.",
            FARGO_FACTS,
            "comparison",
        ),
        (
            "You will enjoy it because both are crime stories.",
            FARGO_FACTS,
            "comparison",
        ),  # compared with nothing named
        ("It is a crime film, like The Shining (1980), which you rated 5/5.", FARGO_FACTS, "comparison"),
        ("It averages 4.2/5 from your viewing experience.", FARGO_FACTS, "attribution"),
        (
            "You also gave Schindler's List (1993) 5/5 across your viewing averages too.",
            FARGO_FACTS,
            "attribution",
        ),
        ("It is an action film like that of your favorite movie.", ID4_FACTS, "attribution"),
        ("It is an excellent film too.", ID4_FACTS, "praise"),
        ("It is a classic war story.", ID4_FACTS, "praise"),
        ("You will enjoy it, like four weddings and a funeral.", ID4_FACTS, "title"),
        # praise needs the candidate's statistics, and says nothing of another movie
        ("It is an entertaining war film.", ID4_FACTS, "praise"),
        ("You also gave Schindler's List (1993) 5/5, another excellent film.", FARGO_FACTS, "praise"),
        # a likeness with a movie that shares no genre, with no genre named (held-out set: "another
        # good film from the same genre" of a comedy and a thriller)
        (
            "You also gave The Shining (1980) 5/5, another film from the same genre.",
            FARGO_FACTS,
            "comparison",
        ),
        # "like ..." going on to what no fact holds (held-out set: "like getting off the bus")
        (
            "You will enjoy Fargo (1996) because you rated Schindler's List (1993) 5/5, and both have drama "
            "elements like getting off the bus.",
            FARGO_FACTS,
            "name",
        ),
        ("It is a crime story about a man who hires two kidnappers.", FARGO_FACTS, "outside"),
    ],
)
def test_false_relations_are_caught(text: str, facts: Facts, kind: str) -> None:
    assert kind in relation_kinds(text, facts)


@pytest.mark.parametrize(
    ("text", "facts"),
    [
        (
            "You will enjoy Independence Day (1996) because you rated Star Wars (1977) 5/5, and both are action "
            "and science fiction films.",
            ID4_FACTS,
        ),
        # the candidate's own genre, with no comparison
        (
            "You will enjoy Independence Day (1996) because you rated Lone Star (1996) 4/5, and it is an action film.",
            ID4_FACTS,
        ),
        ("It is a drama film, like Schindler's List (1993), which you rated 5/5.", FARGO_FACTS),
        ("You rated Schindler's List (1993) 5/5 as well, and it has the same drama elements.", FARGO_FACTS),
        # the template's sentence: each "it shares" follows the movie it is about
        (
            "We picked Fargo (1996) because you rated Schindler's List (1993) 5/5 and it shares Drama; "
            "you rated Army of Darkness (1993) 4/5.",
            FARGO_FACTS,
        ),
        # praise backed by the candidate's statistics (4.16 over 508 ratings)
        ("It is an excellent crime film.", FARGO_FACTS),
        # a short title in lower case is a common word, not a claim
        ("It brings the heat of a crime story.", FARGO_FACTS),
        (
            "You will enjoy Fargo (1996) because you rated Schindler's List (1993) 5/5, and both have drama "
            'elements like "Schindler\'s List".',
            FARGO_FACTS,
        ),
        (
            "You rated Schindler's List (1993) 5/5, and both have drama elements like that film's story.",
            FARGO_FACTS,
        ),
    ],
)
def test_true_relations_pass(text: str, facts: Facts) -> None:
    verdict = check(text, facts, RELATION_CATALOG)
    assert verdict.supported, verdict.claims


def test_the_templates_comparisons_each_hold_for_their_own_movie() -> None:
    """A template names several movies in one sentence, joined by semicolons; each "it shares"
    is with the movie before it, not the first one named (9 of 36 templates were refused)."""
    aliens = FactMovie("Aliens (1986)", 1986, ("Action", "Sci-Fi", "Thriller", "War"))
    platoon = FactMovie("Platoon (1986)", 1986, ("Drama", "War"), rating=4.0)
    die_hard = FactMovie("Die Hard (1988)", 1988, ("Action", "Thriller"), rating=4.0)
    facts = Facts(aliens, (platoon, die_hard))
    titles = TitleIndex([aliens.title, platoon.title, die_hard.title])
    text = (
        "We picked Aliens (1986) because you rated Platoon (1986) 4/5 and it shares War; "
        "you rated Die Hard (1988) 4/5 and it shares Action, Thriller."
    )
    assert check(text, facts, titles).supported
    wrong = text.replace("it shares Action, Thriller", "it shares Action, War")  # Die Hard has no war
    assert not check(wrong, facts, titles).supported


def test_the_article_before_a_genre_word_is_made_right_and_nothing_else_moves() -> None:
    from ml.llm.faithfulness import fix_articles

    assert (
        fix_articles("and like that film, it is an comedy story.")
        == "and like that film, it is a comedy story."
    )
    assert fix_articles("it is an drama and romance story.") == "it is a drama and romance story."
    assert fix_articles("An science fiction film.") == "A science fiction film."
    assert fix_articles("it is a action film, a adventure.") == "it is an action film, an adventure."
    assert (
        fix_articles("like that film, it is a childrens story.")
        == "like that film, it is a children's story."
    )
    # titles (capitalised words) and words that only begin like a genre are left alone
    for kept in ("you rated A Comedy of Errors (1990) 4/5", "an warning", "it is an animation", "a drama"):
        assert fix_articles(kept) == kept
