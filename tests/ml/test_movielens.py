"""Reading and validating MovieLens files, without a database."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.data import movielens


@pytest.mark.parametrize(
    ("raw", "title", "year"),
    [
        ("Toy Story (1995)", "Toy Story", 1995),
        (
            "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
            "City of Lost Children, The (Cité des enfants perdus, La)",
            1995,
        ),
        ("Babylon 5", "Babylon 5", None),
        ("Fawlty Towers (1975-1979)", "Fawlty Towers", 1975),
        ("  2001: A Space Odyssey (1968)  ", "2001: A Space Odyssey", 1968),
        ("1984 (1956)", "1984", 1956),
    ],
)
def test_split_title_year(raw: str, title: str, year: int | None) -> None:
    assert movielens.split_title_year(raw) == (title, year)


def test_movies_duplicates_and_bad_ids(tmp_path: Path) -> None:
    path = tmp_path / "movies.csv"
    path.write_text(
        "movieId,title,genres\n1,A (2000),Drama\n1,A (2000),Drama\n2,B (2001),Comedy\n2,C (2001),Comedy\nx,D,Drama\n3,,Drama\n"
    )
    table = movielens.read_movies(path)
    assert table.frame["movie_id"].tolist() == [1]
    assert [(p.line, p.reason) for p in table.problems] == [
        (4, "duplicate movieId with a different title or genres"),
        (5, "duplicate movieId with a different title or genres"),
        (6, "movieId is not a positive integer"),
        (7, "empty title"),
    ]


def test_ratings_chunks_report_exact_lines(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    rows = [f"{u},{m},{(u + m) % 10 / 2 + 0.5},{1000 + u}" for u in range(1, 40) for m in (1, 2, 3)]
    rows[50] = "5,9,3.0,1000"  # unknown movie, line 52
    rows[100] = "5,1,3.25,1000"  # line 102
    path.write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    chunks = list(movielens.iter_ratings(path, np.array([1, 2, 3]), chunk_rows=17))
    problems = [p for c in chunks for p in c.problems]
    assert [(p.line, p.reason) for p in problems] == [
        (52, "unknown movieId"),
        (102, "rating is not a multiple of 0.5"),
    ]
    assert sum(len(c.frame) for c in chunks) == len(rows) - 2
    lines = np.concatenate([c.lines for c in chunks])
    assert 52 not in lines and 102 not in lines and lines[0] == 2
    clean = pd.concat([c.frame for c in chunks])
    copied = pd.read_csv(io.BytesIO(b"".join(c.csv for c in chunks)), header=None)
    assert copied.to_numpy().tolist() == clean.to_numpy().tolist()


def test_duplicate_tracker_tells_identical_from_conflicting() -> None:
    tracker = movielens.DuplicateTracker()
    frame = pd.DataFrame({"user_id": [1, 1, 2, 1], "movie_id": [5, 6, 5, 5], "rating": [4.0, 3.0, 2.0, 4.0]})
    tracker.add(frame, np.array([2, 3, 4, 5]))
    tracker.add(pd.DataFrame({"user_id": [2], "movie_id": [5], "rating": [2.5]}), np.array([9]))
    any_dup, problems, keys = tracker.result()
    assert any_dup
    assert [(p.line, p.reason.endswith("conflicts with line 4")) for p in problems] == [(9, True)]
    assert keys.tolist() == [(2 << 32) | 5]
