"""What the server holds about a (user, movie) pair, and so all an explanation may state: the
candidate, the rated reasons behind its score (with the user's ratings) and its statistics.

Its own module because two sides need it: the prompts that are built from it
(``ml.llm.prompts``) and the checker that holds a text to it (``ml.llm.faithfulness``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class FactMovie:
    title: str  # as the catalog labels it, e.g. "Star Wars (1977)"
    year: int | None
    genres: tuple[str, ...]
    rating: float | None = None  # the user's own rating of it (None: not rated)


@dataclass(frozen=True)
class Facts:
    candidate: FactMovie
    evidence: tuple[FactMovie, ...] = ()
    mean_rating: float | None = None
    ratings_count: int | None = None
    tags: tuple[str, ...] = ()
    # where the movie's own popularity stands among its reasons (0: the largest), None when it
    # is none of them; ``evidence`` holds the rated reasons, largest first
    prior: int | None = None

    @property
    def rated(self) -> bool:
        return self.candidate.rating is not None

    def movies(self) -> tuple[FactMovie, ...]:
        return (self.candidate, *self.evidence)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Facts:
        def movie(m: dict[str, Any]) -> FactMovie:
            return FactMovie(m["title"], m.get("year"), tuple(m.get("genres", ())), m.get("rating"))

        return cls(
            movie(data["candidate"]),
            tuple(movie(m) for m in data.get("evidence", ())),
            data.get("mean_rating"),
            data.get("ratings_count"),
            tuple(data.get("tags", ())),
            data.get("prior"),
        )
