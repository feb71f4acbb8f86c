"""A/B experiments over a real server, shown to work with a replay: MovieLens 100K with a
fifth of each user's ratings held out; the hybrid (champion) against popularity
(challenger); held-out users shown recommendations, then their held-out ratings replayed
as later ratings; the report must find the hybrid's hit rate higher, with the interval of
the difference above 0.

The replay goes through ``app.services.ratings.rate_movie``, the function `rateMovie` runs
(in this process: the 943 MovieLens users have no logins to call the API with).
"""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from app.db import create_engine, session_factory
from app.services.ratings import rate_movie
from app.serving import registry_for
from app.settings import Settings
from ml.registry import RECOMMENDER
from tests.conftest import Databases, LiveServer, ingest_into
from tests.e2e.conftest import ADMIN, cli

RESULTS = Path(__file__).resolve().parents[2] / "bench-results"
EXPERIMENT_FIELDS = """name active windowSeconds difference differenceLow differenceHigh pValue
  arms { alias version weight users impressions hits hitRate hitRateLow hitRateHigh }"""


@dataclass
class Replay:
    server: LiveServer
    replica: LiveServer
    settings: Settings
    token: str
    held_out: pd.DataFrame  # user_id, movie_id, rating


def gql(server: LiveServer, query: str, variables: dict | None = None, token: str | None = None) -> dict:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        f"{server.url}/graphql",
        json={"query": query, "variables": variables or {}},
        headers=headers,
        timeout=120,
    ).json()


@pytest.fixture(scope="module")
def replay(
    databases: Databases,
    live_server_factory: Callable[..., LiveServer],
    ml100k_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Replay:
    kept = tmp_path_factory.mktemp("ml100k-kept") / "ml"
    shutil.copytree(ml100k_dir, kept)
    ratings = pd.read_csv(ml100k_dir / "ratings.csv")
    rng = np.random.default_rng(11)
    hold = np.zeros(len(ratings), dtype=bool)
    for _, rows in ratings.groupby("userId").indices.items():
        hold[rng.choice(rows, size=len(rows) // 5, replace=False)] = True
    ratings[~hold].to_csv(kept / "ratings.csv", index=False, quoting=csv.QUOTE_MINIMAL)
    held = ratings[hold].rename(columns={"userId": "user_id", "movieId": "movie_id"})[
        ["user_id", "movie_id", "rating"]
    ]

    settings = databases.settings("postgresql", llm_backend="none", redis_url="redis://127.0.0.1:6379/0")
    ingest_into(settings, kept)
    env = {
        "CINEREC_DATABASE_URL": settings.database_url,
        "CINEREC_HOME": str(settings.home),
        "CINEREC_ENV": "test",
    }
    trained = cli(env, "train", "--epochs", "10", "--no-tune")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert cli(env, "users", "create-admin", "--email", ADMIN[0], "--password", ADMIN[1]).returncode == 0
    # the challenger: the same version with popularity as its only component
    registry = registry_for(settings)
    folder = registry.download(RECOMMENDER, "1", tmp_path_factory.mktemp("challenger"))
    meta = json.loads((folder / "meta.json").read_text())
    meta["weights"] = {"popularity": 1.0}
    (folder / "meta.json").write_text(json.dumps(meta))
    run_id, source = registry.log_run(
        experiment=RECOMMENDER, params={"popularity_only": True}, metrics={}, artifacts=folder
    )
    registry.set_alias(
        RECOMMENDER, "challenger", registry.register(RECOMMENDER, source=source, run_id=run_id)
    )

    server = live_server_factory(settings)
    replica = live_server_factory(settings)
    login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
    token = gql(server, login, {"e": ADMIN[0], "p": ADMIN[1]})["data"]["login"]["token"]
    return Replay(server, replica, settings, token, held)


def test_arms_must_name_existing_aliases(replay: Replay) -> None:
    start = 'mutation { startExperiment(name: "bad", arms: [{alias: "champion", weight: 1}, {alias: "nope", weight: 1}]) { name } }'
    refused = gql(replay.server, start, token=replay.token)
    assert refused["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    one_arm = 'mutation { startExperiment(name: "bad", arms: [{alias: "champion", weight: 1}]) { name } }'
    assert (
        gql(replay.server, one_arm, token=replay.token)["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    )


def test_the_hybrid_beats_popularity_in_a_replayed_experiment(replay: Replay) -> None:
    start = f"""mutation {{ startExperiment(name: "hybrid-vs-popularity",
        arms: [{{alias: "champion", weight: 0.5}}, {{alias: "challenger", weight: 0.5}}]) {{ {EXPERIMENT_FIELDS} }} }}"""
    started = gql(replay.server, start, token=replay.token)["data"]["startExperiment"]
    assert started["active"] and [a["version"] for a in started["arms"]] == ["1", "2"]
    users = sorted(replay.held_out["user_id"].unique())[:400]
    recs = "query($u: Int!) { recommendations(userId: $u, first: 10) { movie { movieId } } }"
    arms: dict[int, str] = {}
    for user in users:
        answer = gql(replay.server, recs, {"u": int(user)}, token=replay.token)
        served = answer["extensions"]["recommender"]
        assert served["experiment"] == "hybrid-vs-popularity" and len(answer["data"]["recommendations"]) == 10
        arms[int(user)] = served["arm"]
    # the same user gets the same arm, again and on another replica (a hash: nothing shared)
    for user in users[:20]:
        again = gql(replay.replica, recs, {"u": int(user)}, token=replay.token)["extensions"]["recommender"]
        assert again["arm"] == arms[int(user)]
    assert 150 < sum(a == "champion" for a in arms.values()) < 250

    async def replay_ratings() -> int:
        engine = create_engine(replay.settings)
        count = 0
        try:
            sessions = session_factory(engine)
            for row in replay.held_out[replay.held_out.user_id.isin(users)].itertuples():
                async with sessions() as session:
                    await rate_movie(
                        session=session,
                        user_id=int(row.user_id),
                        movie_id=int(row.movie_id),
                        rating=float(row.rating),
                    )
                count += 1
        finally:
            await engine.dispose()
        return count

    replayed = asyncio.run(replay_ratings())
    query = f'{{ experiment(name: "hybrid-vs-popularity") {{ {EXPERIMENT_FIELDS} }} }}'
    report = gql(replay.server, query, token=replay.token)["data"]["experiment"]
    hybrid, popularity = report["arms"]
    assert (hybrid["alias"], popularity["alias"]) == ("champion", "challenger")
    # every impression written; a user shown the same list again (the replica) counts once
    assert hybrid["impressions"] + popularity["impressions"] == 10 * len(users)
    assert hybrid["users"] + popularity["users"] == len(users)
    assert hybrid["hitRate"] > popularity["hitRate"]
    assert report["differenceLow"] > 0 and report["pValue"] < 0.05
    assert hybrid["hitRateLow"] <= hybrid["hitRate"] <= hybrid["hitRateHigh"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "experiment_replay.json").write_text(
        json.dumps({"users": len(users), "ratings_replayed": replayed, **report}, indent=2)
    )
    stopped = gql(
        replay.server,
        'mutation { stopExperiment(name: "hybrid-vs-popularity") { active } }',
        token=replay.token,
    )
    assert stopped["data"]["stopExperiment"]["active"] is False
    after = gql(replay.server, recs, {"u": int(users[0])}, token=replay.token)["extensions"]["recommender"]
    assert "experiment" not in after and after["version"] == "1"
