"""Read and validate MovieLens files in the ml-25m CSV layout.

Validation is vectorised over chunks of rows; every rejected row becomes a
:class:`Problem` naming its file, line (1-based, the header is line 1) and reason.
``ratings.csv`` is streamed in chunks so that 25M rows never sit in memory as frames.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd

from ml.data.errors import DatasetError

RATING_MIN = 0.5
RATING_MAX = 5.0

HEADERS: dict[str, list[str]] = {
    "movies.csv": ["movieId", "title", "genres"],
    "ratings.csv": ["userId", "movieId", "rating", "timestamp"],
    "tags.csv": ["userId", "movieId", "tag", "timestamp"],
    "links.csv": ["movieId", "imdbId", "tmdbId"],
    "users.csv": ["userId", "age", "gender", "occupation", "zip"],
    "genome-tags.csv": ["tagId", "tag"],
    "genome-scores.csv": ["movieId", "tagId", "relevance"],
}
REQUIRED = ("movies.csv", "ratings.csv")
NO_GENRES = "(no genres listed)"
INT32_MAX = 2**31 - 1
_YEAR = re.compile(r"\s*\((\d{4})(?:[-\u2013]\d{0,4})?\)\s*$")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    reason: str
    raw: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


def check_layout(directory: Path) -> list[str]:
    """The files of the layout present in ``directory``; raises on a missing or wrong header."""
    if not directory.is_dir():
        raise DatasetError(f"{directory}: not a directory")
    present = []
    for name, expected in HEADERS.items():
        path = directory / name
        if not path.exists():
            if name in REQUIRED:
                raise DatasetError(f"{path}: missing (an ml-25m layout needs {', '.join(REQUIRED)})")
            continue
        with path.open(encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
        if [h.strip().lstrip("\ufeff") for h in header] != expected:
            raise DatasetError(f"{path}:1: wrong header {header!r}, expected {expected!r}")
        present.append(name)
    genome = {"genome-tags.csv", "genome-scores.csv"} & set(present)
    if len(genome) == 1:
        raise DatasetError(f"{directory}: the tag genome needs both genome-tags.csv and genome-scores.csv")
    return present


def split_title_year(title: str) -> tuple[str, int | None]:
    """'Toy Story (1995)' -> ('Toy Story', 1995); titles without a year keep year None."""
    match = _YEAR.search(title)
    if not match:
        return title.strip(), None
    return title[: match.start()].strip(), int(match.group(1))


def _read_small(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False, on_bad_lines="error")
    frame.columns = [c.strip().lstrip("\ufeff") for c in frame.columns]
    frame["_line"] = np.arange(2, len(frame) + 2)
    return frame


def _int_column(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Parse a column to int64 within int32 range; returns (values, ok mask). Blanks and non-integers fail."""
    if pd.api.types.is_integer_dtype(values.dtype):
        ints = values.to_numpy(dtype=np.int64)
        return ints, ints <= INT32_MAX
    numbers = pd.to_numeric(values.str.strip(), errors="coerce") if values.dtype == object else values
    floats = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        ok = ~np.isnan(floats) & (np.mod(floats, 1) == 0) & (np.abs(floats) <= INT32_MAX)
    return np.where(ok, floats, 0).astype(np.int64), ok


def _problems(name: str, frame: pd.DataFrame, bad: np.ndarray, reason: str) -> list[Problem]:
    rows = frame.loc[bad]
    cols = [c for c in frame.columns if c != "_line"]
    return [
        Problem(name, int(line), reason, ",".join(str(v) for v in values))
        for line, *values in rows[["_line", *cols]].itertuples(index=False, name=None)
    ]


def _blank(frame: pd.DataFrame) -> np.ndarray:
    cols = [c for c in frame.columns if c != "_line"]
    return (frame[cols] == "").all(axis=1).to_numpy()


@dataclass
class Table:
    """Validated rows of one small file, plus the problems found in it."""

    frame: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)


def _checked(name: str, frame: pd.DataFrame, checks: list[tuple[np.ndarray, str]]) -> Table:
    """Apply (bad mask, reason) checks in order; each row is reported once, for its first failure."""
    keep = ~_blank(frame)
    problems: list[Problem] = []
    for bad, reason in checks:
        hit = keep & bad
        if hit.any():
            problems += _problems(name, frame, hit, reason)
            keep &= ~hit
    problems.sort(key=lambda p: p.line)
    return Table(frame.loc[keep].reset_index(drop=True), problems)


def read_movies(path: Path) -> Table:
    """movies.csv -> columns movie_id, title, year, genres (list of names)."""
    frame = _read_small(path)
    ids, ok = _int_column(frame["movieId"])
    title = frame["title"].str.strip()
    frame["movie_id"] = ids
    duplicated = frame.duplicated("movie_id", keep=False).to_numpy() & ok
    conflicting = duplicated & ~frame.duplicated(["movie_id", "title", "genres"], keep=False).to_numpy()
    table = _checked(
        "movies.csv",
        frame,
        [
            (~ok | (ids <= 0), "movieId is not a positive integer"),
            ((title == "").to_numpy(), "empty title"),
            (conflicting, "duplicate movieId with a different title or genres"),
        ],
    )
    out = table.frame.drop_duplicates("movie_id")
    parsed = [split_title_year(t) for t in out["title"]]
    table.frame = pd.DataFrame(
        {
            "movie_id": out["movie_id"].to_numpy(),
            "title": [t for t, _ in parsed],
            "year": pd.array([y for _, y in parsed], dtype="Int64"),
            "genres": [
                [] if g.strip() in ("", NO_GENRES) else [x.strip() for x in g.split("|") if x.strip()]
                for g in out["genres"]
            ],
            "_line": out["_line"].to_numpy(),
        }
    )
    return table


def read_links(path: Path, known_movies: np.ndarray) -> Table:
    frame = _read_small(path)
    ids, ok = _int_column(frame["movieId"])
    _, tmdb_ok = _int_column(frame["tmdbId"].replace("", "0"))
    imdb = frame["imdbId"].str.strip()
    frame["movie_id"] = ids
    table = _checked(
        "links.csv",
        frame,
        [
            (~ok | (ids <= 0), "movieId is not a positive integer"),
            (~np.isin(ids, known_movies), "unknown movieId"),
            (~imdb.str.fullmatch(r"\d*").to_numpy(), "imdbId is not numeric"),
            (~tmdb_ok, "tmdbId is not an integer"),
            (frame.duplicated("movie_id", keep="first").to_numpy(), "duplicate movieId"),
        ],
    )
    f = table.frame
    tm, _ = _int_column(f["tmdbId"].replace("", "0"))
    table.frame = pd.DataFrame(
        {
            "movie_id": f["movie_id"].to_numpy(),
            "imdb_id": [s.strip() or None for s in f["imdbId"]],
            "tmdb_id": pd.array([int(v) if v else None for v in tm], dtype="Int64"),
        }
    )
    return table


def read_tags(path: Path, known_movies: np.ndarray) -> Table:
    frame = _read_small(path)
    users, u_ok = _int_column(frame["userId"])
    movies, m_ok = _int_column(frame["movieId"])
    ts, t_ok = _int_column(frame["timestamp"])
    tag = frame["tag"].str.strip()
    frame["user_id"], frame["movie_id"], frame["ts"], frame["tag_text"] = users, movies, ts, tag
    table = _checked(
        "tags.csv",
        frame,
        [
            (~u_ok | (users <= 0), "userId is not a positive integer"),
            (~m_ok | (movies <= 0), "movieId is not a positive integer"),
            (~np.isin(movies, known_movies), "unknown movieId"),
            ((tag == "").to_numpy(), "empty tag"),
            (tag.str.len().to_numpy() > 256, "tag longer than 256 characters"),
            (~t_ok | (ts < 0), "timestamp is not a non-negative integer"),
        ],
    )
    f = table.frame.drop_duplicates(["user_id", "movie_id", "tag_text"])
    table.frame = pd.DataFrame(
        {
            "user_id": f["user_id"].to_numpy(),
            "movie_id": f["movie_id"].to_numpy(),
            "tag": f["tag_text"].to_numpy(),
            "timestamp": f["ts"].to_numpy(),
        }
    )
    return table


def read_users(path: Path) -> Table:
    frame = _read_small(path)
    users, ok = _int_column(frame["userId"])
    age, age_ok = _int_column(frame["age"].replace("", "0"))
    frame["user_id"] = users
    table = _checked(
        "users.csv",
        frame,
        [
            (~ok | (users <= 0), "userId is not a positive integer"),
            (~age_ok | (age < 0) | (age > 130), "age is not an integer in 0..130"),
            (frame.duplicated("user_id", keep="first").to_numpy(), "duplicate userId"),
        ],
    )
    f = table.frame
    a, _ = _int_column(f["age"].replace("", "0"))
    table.frame = pd.DataFrame(
        {
            "user_id": f["user_id"].to_numpy(),
            "age": pd.array(
                [int(v) if s.strip() else None for v, s in zip(a, f["age"], strict=True)], dtype="Int64"
            ),
            "gender": [s.strip() or None for s in f["gender"]],
            "occupation": [s.strip() or None for s in f["occupation"]],
            "zip_code": [s.strip() or None for s in f["zip"]],
        }
    )
    return table


def read_genome(directory: Path, known_movies: np.ndarray) -> tuple[Table, Table]:
    """genome-tags.csv and genome-scores.csv -> (tags: tag_id, tag; scores: movie_id, tag_id, relevance)."""
    tags = _read_small(directory / "genome-tags.csv")
    tag_ids, ok = _int_column(tags["tagId"])
    tags["tag_id"] = tag_ids
    tag_table = _checked(
        "genome-tags.csv",
        tags,
        [
            (~ok | (tag_ids <= 0), "tagId is not a positive integer"),
            ((tags["tag"].str.strip() == "").to_numpy(), "empty tag"),
            (tags.duplicated("tag_id", keep="first").to_numpy(), "duplicate tagId"),
        ],
    )
    tag_table.frame = pd.DataFrame(
        {"tag_id": tag_table.frame["tag_id"].to_numpy(), "tag": tag_table.frame["tag"].str.strip().to_numpy()}
    )
    scores = pd.read_csv(
        directory / "genome-scores.csv", dtype=str, keep_default_na=False, skip_blank_lines=False
    )
    scores["_line"] = np.arange(2, len(scores) + 2)
    movie_ids, m_ok = _int_column(scores["movieId"])
    score_tags, t_ok = _int_column(scores["tagId"])
    relevance = pd.to_numeric(scores["relevance"].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    scores["movie_id"], scores["tag_id"], scores["rel"] = movie_ids, score_tags, relevance
    score_table = _checked(
        "genome-scores.csv",
        scores,
        [
            (~m_ok | ~np.isin(movie_ids, known_movies), "unknown movieId"),
            (~t_ok | ~np.isin(score_tags, tag_table.frame["tag_id"].to_numpy()), "unknown tagId"),
            (np.isnan(relevance) | (relevance < 0) | (relevance > 1), "relevance is not a number in 0..1"),
            (
                scores.duplicated(["movie_id", "tag_id"], keep="first").to_numpy(),
                "duplicate (movieId, tagId)",
            ),
        ],
    )
    f = score_table.frame
    score_table.frame = pd.DataFrame(
        {
            "movie_id": f["movie_id"].to_numpy(),
            "tag_id": f["tag_id"].to_numpy(),
            "relevance": f["rel"].to_numpy(),
        }
    )
    return tag_table, score_table


@dataclass
class RatingsChunk:
    """Valid rows of one chunk of ratings.csv.

    ``frame`` has int64 user_id, movie_id, timestamp and float64 rating. ``csv`` is the
    chunk's valid rows as header-less CSV bytes in that column order, ready for COPY.
    """

    frame: pd.DataFrame
    csv: bytes
    problems: list[Problem]
    lines: np.ndarray  # line number of each valid row


_RATING_COLUMNS = ["user_id", "movie_id", "rating", "timestamp"]


def _parse_chunk_slow(lines: list[bytes], first_line: int) -> tuple[pd.DataFrame, list[Problem]]:
    """Line-by-line fallback for a chunk the fast parser rejects (wrong field counts, bad quoting)."""
    rows, problems = [], []
    for offset, raw in enumerate(lines):
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not text.strip():
            rows.append(["", "", "", ""])
            continue
        fields = next(csv.reader([text]), [])
        if len(fields) != 4:
            problems.append(
                Problem("ratings.csv", first_line + offset, f"expected 4 fields, found {len(fields)}", text)
            )
            rows.append(["", "", "", ""])
        else:
            rows.append(fields)
    frame = pd.DataFrame(rows, columns=HEADERS["ratings.csv"], dtype=object)
    return frame.replace("", np.nan), problems


def _validate_ratings(
    frame: pd.DataFrame, first_line: int, known_movies: np.ndarray, lines: list[bytes]
) -> tuple[pd.DataFrame, np.ndarray, list[Problem]]:
    blank = frame.isna().all(axis=1).to_numpy()
    user, u_ok = _int_column(frame["userId"])
    movie, m_ok = _int_column(frame["movieId"])
    ts, t_ok = _int_column(frame["timestamp"])
    rating_col = frame["rating"]
    if rating_col.dtype == object:
        rating_col = pd.to_numeric(rating_col.str.strip(), errors="coerce")
    rating = rating_col.to_numpy(dtype=np.float64, na_value=np.nan)
    r_ok = ~np.isnan(rating)
    checks = [
        (~u_ok | (user <= 0), "userId is not a positive integer"),
        (~m_ok | (movie <= 0), "movieId is not a positive integer"),
        (~r_ok, "rating is not a number"),
        (
            r_ok & ((rating < RATING_MIN) | (rating > RATING_MAX)),
            f"rating out of range {RATING_MIN}..{RATING_MAX}",
        ),
        (r_ok & (np.mod(rating * 2, 1) != 0), "rating is not a multiple of 0.5"),
        (~t_ok | (ts < 0), "timestamp is not a non-negative integer"),
        (~np.isin(movie, known_movies), "unknown movieId"),
    ]
    keep = ~blank
    problems: list[Problem] = []
    for bad, reason in checks:
        hit = np.flatnonzero(keep & bad)
        for i in hit:
            fields = lines[i].count(b",") + 1  # ratings are numeric: no quoted commas
            problems.append(
                Problem(
                    "ratings.csv",
                    first_line + int(i),
                    reason if fields == 4 else f"expected 4 fields, found {fields}",
                    lines[i].decode("utf-8", "replace").rstrip("\r\n"),
                )
            )
        keep[hit] = False
    clean = pd.DataFrame({"user_id": user, "movie_id": movie, "rating": rating, "timestamp": ts})
    return clean, keep, problems


def iter_ratings(
    path: Path, known_movies: np.ndarray, chunk_rows: int = 1_000_000
) -> Generator[RatingsChunk, None, None]:
    """Stream ratings.csv in chunks of ``chunk_rows`` lines, validated.

    ``known_movies`` must be sorted (np.isin is fastest on sorted input). Clean chunks
    are passed to COPY as their own bytes, without re-serialising.
    """
    with path.open("rb") as f:
        next(f)  # header, checked by check_layout
        line_no = 2
        while True:
            lines = list(islice(f, chunk_rows))
            if not lines:
                return
            data = b"".join(lines)
            problems: list[Problem] = []
            try:
                frame = pd.read_csv(
                    io.BytesIO(data),
                    header=None,
                    names=HEADERS["ratings.csv"],
                    skip_blank_lines=False,
                    engine="c",
                )
                if len(frame) != len(lines):
                    raise ValueError("row count differs from line count")
            except (ValueError, pd.errors.ParserError):
                frame, problems = _parse_chunk_slow(lines, line_no)
            fast = (
                not problems
                and all(frame[c].dtype == np.int64 for c in ("userId", "movieId", "timestamp"))
                and frame["rating"].dtype in (np.float64, np.int64)
            )
            clean, keep, more = _validate_ratings(frame, line_no, known_movies, lines)
            problems = sorted(problems + more, key=lambda p: p.line)
            valid = clean.loc[keep].reset_index(drop=True)
            if fast and keep.all():
                # COPY wants one line ending throughout; files may mix \r\n and \n.
                payload = data.replace(b"\r\n", b"\n")
                payload = payload if payload.endswith(b"\n") else payload + b"\n"
            else:
                payload = valid.to_csv(header=False, index=False).encode()
            yield RatingsChunk(valid, payload, problems, line_no + np.flatnonzero(keep))
            line_no += len(lines)


class DuplicateTracker:
    """Finds (userId, movieId) pairs rated more than once across all chunks of a file.

    Keeps 13 bytes per row (key, half-stars, line), so 25M ratings need about 330 MB.
    """

    def __init__(self) -> None:
        self._keys: list[np.ndarray] = []
        self._stars: list[np.ndarray] = []
        self._lines: list[np.ndarray] = []

    def add(self, frame: pd.DataFrame, lines: np.ndarray) -> None:
        self._keys.append((frame["user_id"].to_numpy() << 32) | frame["movie_id"].to_numpy())
        self._stars.append(np.rint(frame["rating"].to_numpy() * 2).astype(np.int8))
        self._lines.append(lines.astype(np.int32))

    def result(self) -> tuple[bool, list[Problem], np.ndarray]:
        """(any duplicate at all, a problem per conflicting repeat, the keys that conflict).

        A key is ``user_id << 32 | movie_id``.
        """
        none = np.empty(0, dtype=np.int64)
        if not self._keys:
            return False, [], none
        keys = np.concatenate(self._keys)
        self._keys.clear()
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        same = keys[1:] == keys[:-1]
        if not same.any():
            return False, [], none
        stars = np.concatenate(self._stars)[order]
        lines = np.concatenate(self._lines)[order]
        conflict = np.flatnonzero(same & (stars[1:] != stars[:-1])) + 1
        run_starts = np.flatnonzero(np.r_[True, ~same])
        first = run_starts[np.searchsorted(run_starts, conflict, side="right") - 1]
        problems = [
            Problem(
                "ratings.csv",
                int(lines[i]),
                f"duplicate rating for userId {int(keys[i] >> 32)}, movieId {int(keys[i] & 0xFFFFFFFF)} "
                f"conflicts with line {int(lines[j])}",
            )
            for i, j in zip(conflict, first, strict=True)
        ]
        return True, problems, np.unique(keys[conflict])
