"""Prompts: the TALLRec-style preference question and the grounded explanation request.

A preference prompt is a user part (liked and disliked titles) and a candidate part. They
are tokenized separately and concatenated, in training and in serving alike, so that the
user part's key/value cache can be computed once and shared by every candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SYSTEM = "You are a movie recommendation assistant."
_SPLIT = "\u2063"  # an invisible separator that no title contains: where the user part ends
YES, NO = "Yes", "No"
LIKED_THRESHOLD = 3.0  # TALLRec: a rating above 3 is a like


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
        # a percentage, not "n of m": a small model reads it without dividing
        counts = (
            f"The user liked {round(100 * (self.liked_count or 0) / self.rated_count)}% of the "
            f"{self.rated_count} movies they rated.\n"
            if self.rated_count
            else ""
        )
        return f"{counts}The user liked: {liked}.\nThe user disliked: {disliked}.\n"


def profile_from_ratings(
    rated: Sequence[tuple[str, float]], *, n_liked: int = 10, n_disliked: int = 5
) -> Profile:
    """A profile from (title, rating) pairs: the highest-rated likes and the lowest-rated dislikes."""
    ordered = sorted(rated, key=lambda tr: -tr[1])
    liked = [t for t, r in ordered if r > LIKED_THRESHOLD]
    disliked = [t for t, r in reversed(ordered) if r <= LIKED_THRESHOLD]
    return Profile(liked[:n_liked], disliked[:n_disliked], len(liked), len(ordered))


def candidate_text(
    title: str, genres: Sequence[str], average: float | None = None, count: int | None = None
) -> str:
    """The question about one movie: its genres and, when known, how others rated it."""
    about = [", ".join(genres)] if genres else []
    if count:
        about.append(f"rated {average:.1f}/5 on average by {count} viewers")
    details = f" ({'; '.join(about)})" if about else ""
    return f"Will the user enjoy {title}{details}? Answer Yes or No."


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

    def preference(self, profile: Profile, candidates: Sequence[str]) -> PreferencePrompt:
        """The user part once, one candidate part per candidate text."""
        return PreferencePrompt(
            self._encode(self._head + profile.text()),
            [self._encode(c + self._tail) for c in candidates],
        )


def explanation_messages(title: str, evidence: Sequence[str]) -> list[dict[str, str]]:
    """A chat asking for a short explanation grounded in the engine's evidence."""
    facts = "\n".join(f"- {e}" for e in evidence) or "- viewers with similar taste rated it highly"
    return [
        {"role": "system", "content": "You are a friendly movie recommendation assistant."},
        {
            "role": "user",
            "content": (
                f"Facts about a viewer:\n{facts}\n"
                f"In one or two sentences, tell the viewer why they will enjoy {title}, "
                "using only these facts."
            ),
        },
    ]


def explanation_opening(title: str) -> str:
    """The start of the answer, written for the model so that it explains rather than reviews."""
    return f"You will enjoy {title} because"
