"""Ingest into real PostgreSQL and SQLite: counts, idempotence, and bad input that writes nothing."""

from __future__ import annotations

import asyncio
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text

from app.infra.database import create_engine
from app.services.ingest import IngestError
from ml.data.movielens import DatasetError
from tests.conftest import Databases, ingest_into
from tests.movielens_fixture import N_MOVIES, N_USERS

COUNTS = "SELECT (SELECT count(*) FROM movies), (SELECT count(*) FROM ratings), (SELECT count(*) FROM tags), (SELECT count(*) FROM links), (SELECT count(*) FROM users), (SELECT count(*) FROM movie_genres)"


def _query(settings, sql: str, params: dict | None = None) -> list[tuple]:
    async def run() -> list[tuple]:
        engine = create_engine(settings)
        try:
            async with engine.connect() as conn:
                return [tuple(r) for r in (await conn.execute(text(sql), params or {})).all()]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _counts(settings) -> tuple[int, ...]:
    return _query(settings, COUNTS)[0]


_ingest = ingest_into


def _append(path: Path, *rows: str) -> None:
    with path.open("a") as f:
        for row in rows:
            f.write(row + "\n")


def test_ingest_counts_stats_and_rerun(databases: Databases, backend: str, movielens_dir: Path) -> None:
    settings = databases.settings(backend)
    report = _ingest(settings, movielens_dir)
    assert report.genome_scores == N_MOVIES * 5
    assert _query(settings, "SELECT count(*), min(relevance) >= 0 FROM genome_scores")[0][0] == N_MOVIES * 5
    ratings = pd.read_csv(movielens_dir / "ratings.csv")
    assert (report.movies, report.ratings, report.users) == (N_MOVIES, len(ratings), N_USERS)
    counts = _counts(settings)
    assert counts[:2] == (N_MOVIES, len(ratings)) and counts[3:5] == (N_MOVIES, N_USERS)
    stats = _query(settings, "SELECT movie_id, ratings_count, rating_mean, title, year FROM movies")
    expected = ratings.groupby("movieId")["rating"].agg(["count", "mean"])
    for movie_id, n, mean, title, year in stats:
        assert n == expected.loc[movie_id, "count"] and mean == pytest.approx(expected.loc[movie_id, "mean"])
        assert "(" not in title or year is None
    assert _ingest(settings, movielens_dir) and _counts(settings) == counts  # idempotent


def test_rerun_with_changed_rating_updates_it(
    databases: Databases, backend: str, movielens_dir: Path
) -> None:
    settings = databases.settings(backend)
    _ingest(settings, movielens_dir)
    path = movielens_dir / "ratings.csv"
    frame = pd.read_csv(path)
    frame.loc[0, "rating"] = 5.0 if frame.loc[0, "rating"] != 5.0 else 0.5
    frame.to_csv(path, index=False)
    _ingest(settings, movielens_dir)
    [(got,)] = _query(
        settings,
        "SELECT rating FROM ratings WHERE user_id = :u AND movie_id = :m",
        {"u": int(frame.loc[0, "userId"]), "m": int(frame.loc[0, "movieId"])},
    )
    assert got == frame.loc[0, "rating"]


BAD_RATINGS = {
    "unparseable row": ("1,2,three,1000", "rating is not a number"),
    "out of range": ("1,2,5.5,1000", "out of range"),
    "not a half step": ("1,2,3.3,1000", "multiple of 0.5"),
    "unknown movie": ("1,99999,3.0,1000", "unknown movieId"),
    "too many fields": ("1,2,3.0,1000,extra", "expected 4 fields"),
    "negative user": ("-4,2,3.0,1000", "userId"),
}


@pytest.mark.parametrize("case", sorted(BAD_RATINGS))
def test_strict_run_with_bad_row_writes_nothing(
    databases: Databases, backend: str, movielens_dir: Path, case: str
) -> None:
    settings = databases.settings(backend)
    row, reason = BAD_RATINGS[case]
    path = movielens_dir / "ratings.csv"
    lines_before = len(path.read_text().splitlines())
    _append(path, row)
    with pytest.raises(IngestError) as caught:
        _ingest(settings, movielens_dir)
    assert caught.value.total == 1
    problem = caught.value.problems[0]
    assert (problem.file, problem.line) == ("ratings.csv", lines_before + 1) and reason in problem.reason
    assert _counts(settings) == (0, 0, 0, 0, 0, 0)


def test_conflicting_duplicate_is_refused_and_identical_one_is_not(
    databases: Databases, backend: str, movielens_dir: Path
) -> None:
    settings = databases.settings(backend)
    path = movielens_dir / "ratings.csv"
    first = next(csv.DictReader(path.read_text().splitlines()))
    _append(path, ",".join([first["userId"], first["movieId"], first["rating"], "1"]))  # same value: fine
    _ingest(settings, movielens_dir)
    counts = _counts(settings)
    other = "1.0" if first["rating"] != "1.0" else "2.0"
    _append(path, ",".join([first["userId"], first["movieId"], other, "2"]))
    with pytest.raises(IngestError) as caught:
        _ingest(settings, movielens_dir)
    assert "conflicts with line 2" in caught.value.problems[0].reason
    assert _counts(settings) == counts


def test_existing_data_survives_a_failed_run(databases: Databases, backend: str, movielens_dir: Path) -> None:
    settings = databases.settings(backend)
    _ingest(settings, movielens_dir)
    counts = _counts(settings)
    _append(movielens_dir / "movies.csv", "31,New Movie (2020),Drama", "32,,Drama")
    _append(movielens_dir / "ratings.csv", "1,31,4.0,1000")
    with pytest.raises(IngestError) as caught:
        _ingest(settings, movielens_dir)
    assert [(p.file, p.reason) for p in caught.value.problems] == [("movies.csv", "empty title")]
    assert _counts(settings) == counts


def test_problem_report_is_capped_with_total(databases: Databases, movielens_dir: Path) -> None:
    settings = databases.settings("sqlite")
    _append(movielens_dir / "ratings.csv", *[f"1,2,{9 + i},1000" for i in range(25)])
    with pytest.raises(IngestError) as caught:
        _ingest(settings, movielens_dir)
    assert caught.value.total == 25 and len(caught.value.problems) == 20
    assert "and 5 more" in str(caught.value)


def test_skip_invalid_loads_good_rows_and_writes_rejects(
    databases: Databases, backend: str, movielens_dir: Path, tmp_path: Path
) -> None:
    settings = databases.settings(backend)
    path = movielens_dir / "ratings.csv"
    good = len(path.read_text().splitlines()) - 1
    _append(path, "1,2,5.5,1000", "1,99999,3.0,1000", "x,y", "")
    rejects = tmp_path / "rejects.csv"
    report = _ingest(settings, movielens_dir, skip_invalid=True, reject_file=rejects)
    assert report.ratings == good and report.rejected == 3
    assert (_counts(settings))[1] == good
    rows = list(csv.DictReader(rejects.read_text().splitlines()))
    assert [r["reason"].split()[0] for r in rows] == ["rating", "unknown", "expected"]
    assert rows[2]["row"] == "x,y"


def test_bad_genome_relevance_writes_nothing(databases: Databases, movielens_dir: Path) -> None:
    settings = databases.settings("postgresql")
    _append(movielens_dir / "genome-scores.csv", "1,1,1.5")
    with pytest.raises(IngestError) as caught:
        _ingest(settings, movielens_dir)
    assert [(p.file, p.reason) for p in caught.value.problems] == [
        ("genome-scores.csv", "relevance is not a number in 0..1")
    ]
    assert _counts(settings) == (0, 0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: (d / "movies.csv").unlink(), "missing"),
        (lambda d: (d / "ratings.csv").write_text("user,movie,rating,time\n1,1,4.0,1\n"), "wrong header"),
        (lambda d: (d / "tags.csv").write_text("userId,movieId,tag\n"), "wrong header"),
        (lambda d: (d / "genome-tags.csv").unlink(), "needs both"),
    ],
)
def test_wrong_layout_is_refused(databases: Databases, movielens_dir: Path, mutate, message: str) -> None:
    settings = databases.settings("sqlite")
    mutate(movielens_dir)
    with pytest.raises(DatasetError, match=message):
        _ingest(settings, movielens_dir)
    assert _counts(settings) == (0, 0, 0, 0, 0, 0)


def test_cli_strict_failure_exits_nonzero_naming_file_and_line(
    databases: Databases, movielens_dir: Path
) -> None:
    settings = databases.settings("postgresql", migrate=False)
    _append(movielens_dir / "ratings.csv", "1,2,7.0,1000")
    env = {"CINEREC_DATABASE_URL": settings.database_url, "CINEREC_HOME": str(settings.home)}
    result = subprocess.run(
        [sys.executable, "-m", "app", "data", "ingest", str(movielens_dir)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert (
        "ratings.csv:" in result.stderr
        and "out of range" in result.stderr
        and "nothing was written" in result.stderr
    )


def test_real_ml100k(databases: Databases, ml100k_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "ml-100k"
    shutil.copytree(ml100k_dir, data)
    settings = databases.settings("postgresql")
    _ingest(settings, data)
    movies, ratings, _, _, users, _ = _counts(settings)
    assert (ratings, movies, users) == (100_000, 1_682, 943)
    frame = pd.read_csv(data / "ratings.csv")
    expected = frame.loc[frame.movieId == 1, "rating"].mean()
    [(title, mean)] = _query(
        settings, "SELECT title, rating_sum / ratings_count FROM movies WHERE movie_id = 1"
    )
    assert title == "Toy Story" and mean == pytest.approx(expected)
    shutil.rmtree(data)
