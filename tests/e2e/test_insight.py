"""Model insight over a real server: A/B experiments and drift.

Experiments, shown with a replay: MovieLens 100K with a fifth of each user's ratings held
out; the hybrid (champion) against popularity (challenger); held-out users shown
recommendations, then their held-out ratings replayed as later ratings; the report must
find the hybrid's hit rate higher, with the interval of the difference above 0.

Drift, on the same data: the replayed held-out ratings are a random sample of what the model
learned from, so a check must not flag them; a burst of 1-star ratings of one genre added
after them must be flagged (rating and genre drifted, and the dataset).

The replay writes the ratings into the database in bulk, timestamped now (the 943 MovieLens
users have no logins to call the API with): the experiment's hits and the drift check read
the ratings table, whichever path wrote it. `rateMovie`'s own path is tested in
tests/e2e/test_product.py and tests/e2e/test_serving.py.
"""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from app.cli.users import create_login
from app.infra.auth import Role
from app.infra.database import create_engine
from app.infra.model_registry import registry_for
from app.infra.settings import Settings
from ml.registry import RECOMMENDER
from tests.conftest import Databases, LiveServer, _free_port, ingest_into, settings_env
from tests.e2e.conftest import ADMIN, cli, wait_until
from tests.ollama_server import OllamaTestServer

RESULTS = Path(__file__).resolve().parents[2] / "bench-results"
DRIFT_FIELDS = """generatedAt modelVersion datasetDrift driftShare threshold referenceRows currentRows
  columns { name method threshold statistic pValue drifted }"""


def replayed_users(replay: Replay) -> list[int]:
    return [int(u) for u in sorted(replay.held_out["user_id"].unique())[:400]]


EXPERIMENT_FIELDS = """name active windowSeconds difference differenceLow differenceHigh pValue
  arms { alias version weight users impressions hits hitRate hitRateLow hitRateHigh }"""


@dataclass
class Replay:
    server: LiveServer
    replica: LiveServer
    settings: Settings
    token: str
    held_out: pd.DataFrame  # user_id, movie_id, rating
    env: dict[str, str]
    movies: pd.DataFrame  # movieId, title, genres
    replayed: set[int]  # users whose held-out ratings were replayed

    def insert(self, rows: pd.DataFrame) -> int:
        """Ratings made now, written in one statement (many users at once, as a day's traffic)."""
        if rows.empty:
            return 0

        async def run() -> None:
            engine = create_engine(self.settings)
            try:
                async with engine.begin() as conn:
                    await conn.execute(
                        text(
                            "INSERT INTO ratings (user_id, movie_id, rating, timestamp) VALUES (:u, :m, :r, :t) "
                            "ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = excluded.rating, "
                            "timestamp = excluded.timestamp"
                        ),
                        [
                            {"u": int(u), "m": int(m), "r": float(r), "t": int(time.time())}
                            for u, m, r in zip(rows.user_id, rows.movie_id, rows.rating, strict=True)
                        ],
                    )
            finally:
                await engine.dispose()

        asyncio.run(run())
        return len(rows)

    def replay(self, users: list[int]) -> int:
        count = self.insert(self.held_out[self.held_out.user_id.isin(users)])
        self.replayed.update(users)
        return count


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
    module_server_factory: Callable[..., LiveServer],
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
    env = settings_env(settings)
    trained = cli(env, "train", "--epochs", "10", "--no-tune")
    assert trained.returncode == 0, trained.stderr[-2000:]
    create_login(settings, *ADMIN, role=Role.ADMIN, user_id=None)
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

    server = module_server_factory(settings)
    replica = module_server_factory(settings)
    login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
    token = gql(server, login, {"e": ADMIN[0], "p": ADMIN[1]})["data"]["login"]["token"]
    movies = pd.read_csv(ml100k_dir / "movies.csv")
    return Replay(server, replica, settings, token, held, env, movies, set())


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
    users = replayed_users(replay)
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

    replayed = replay.replay([int(u) for u in users])
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


def drift_check(replay: Replay, tmp: Path) -> dict:
    out = tmp / "drift.json"
    done = cli(
        replay.env, "monitor", "drift", "--store", "--json", str(out), "--html", str(tmp / "drift.html")
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp / "drift.html").stat().st_size > 10_000  # Evidently's report, for a person to read
    return json.loads(out.read_text())


def replay_all(replay: Replay) -> int:
    """Every user's held-out fifth made now: a random sample of what the model learned from
    (the experiment replayed its 400 users' first; the rest now)."""
    rest = replay.held_out[~replay.held_out.user_id.isin(list(replay.replayed))]
    replay.insert(rest)
    replay.replayed.update(int(u) for u in rest.user_id.unique())
    return len(replay.held_out)


def test_a_random_sample_of_the_training_distribution_is_not_drift(replay: Replay, tmp_path: Path) -> None:
    replayed = replay_all(replay)
    report = drift_check(replay, tmp_path)
    assert report["currentRows"] == replayed and report["modelVersion"] == "1"
    assert [c["name"] for c in report["columns"]] == [
        "rating",
        "genre",
        "user_activity",
        "item_popularity",
        "new_user",
    ]
    assert not report["datasetDrift"] and not [c["name"] for c in report["columns"] if c["drifted"]]
    # what the server shows is what the check stored: the admin query and the gauges
    shown = gql(replay.server, f"{{ drift {{ {DRIFT_FIELDS} }} }}", token=replay.token)["data"]["drift"]
    assert shown["currentRows"] == replayed and shown["datasetDrift"] is False
    assert [c["statistic"] for c in shown["columns"]] == [c["statistic"] for c in report["columns"]]
    metrics = httpx.get(f"{replay.server.url}/metrics").text
    assert "cinerec_drift_detected 0.0" in metrics
    assert f"cinerec_drift_current_rows {float(replayed)}" in metrics
    anonymous = gql(replay.server, "{ drift { datasetDrift } }")
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "drift_same_distribution.json").write_text(
        json.dumps({k: v for k, v in report.items() if k != "evidently"}, indent=2)
    )


def test_a_burst_of_one_star_ratings_on_one_genre_is_drift(
    replay: Replay, server_factory: Callable[..., LiveServer]
) -> None:
    replayed = replay_all(replay)
    # 6,000 1-star ratings of horror films (a fifth of all ratings since), by users who had not rated them
    horror = replay.movies[replay.movies.genres.str.contains("Horror")].movieId.to_numpy()
    rated = set(zip(replay.held_out.user_id, replay.held_out.movie_id, strict=True))
    rng = np.random.default_rng(5)
    burst: set[tuple[int, int]] = set()
    while len(burst) < 6000:
        pair = (int(rng.integers(1, 944)), int(rng.choice(horror)))
        if pair not in rated:
            burst.add(pair)
    replay.insert(
        pd.DataFrame([(u, m, 1.0) for u, m in sorted(burst)], columns=["user_id", "movie_id", "rating"])
    )

    # a server checking on an interval (one replica at a time, a Redis lock) stores the report
    watcher = server_factory(replay.settings.model_copy(update={"drift_interval_seconds": 5}))
    try:
        wait_until(
            lambda: (
                (gql(watcher, "{ drift { currentRows } }", token=replay.token)["data"]["drift"] or {}).get(
                    "currentRows"
                )
                == replayed + 6000
            ),
            "the server's interval check",
            seconds=90,
        )
        report = gql(watcher, f"{{ drift {{ {DRIFT_FIELDS} }} }}", token=replay.token)["data"]["drift"]
        metrics = httpx.get(f"{watcher.url}/metrics").text
    finally:
        watcher.__exit__()  # its check every 5 s would go on spawning for the rest of the session
    drifted = {c["name"] for c in report["columns"] if c["drifted"]}
    assert {"rating", "genre"} <= drifted and report["datasetDrift"] is True, report["columns"]
    assert 'cinerec_drift_column_drifted{column="rating"} 1.0' in metrics
    (RESULTS / "drift_burst.json").write_text(json.dumps(report, indent=2))


DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "cinerec.json"
ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


def _promql(prometheus: str, expr: str) -> list:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def test_every_dashboard_panel_has_data_in_a_real_prometheus(
    replay: Replay, tmp_path: Path, server_factory: Callable[..., LiveServer], base_llm
) -> None:
    """A real Prometheus scrapes a real cinerec under load (an experiment running, LLM
    explanations through the Ollama-protocol test server, one of them failing over to the
    template), with the alert rules loaded; every query of every dashboard panel returns data."""
    assert subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True).returncode == 0
    model, tokenizer = base_llm
    with OllamaTestServer(model, tokenizer) as ollama:
        settings = replay.settings.model_copy(
            update={
                "llm_backend": "ollama",
                "llm_ollama_url": ollama.url,
                "llm_ollama_base_tag": ollama.state.base_tag,
                "llm_timeout_seconds": 60.0,
                "llm_rerank_weight": 0.0,
            }
        )
        server = server_factory(settings)
        port = _free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f'rule_files: ["{ALERTS}"]\n'
            "scrape_configs:\n  - job_name: cinerec-api\n"
            f'    static_configs:\n      - targets: ["127.0.0.1:{server.port}"]\n'
        )
        prometheus = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            drift = gql(server, "{ drift { datasetDrift } }", token=replay.token)["data"]["drift"]
            if drift is None:  # this test run alone: store a check for the drift panels
                drift_check(replay, tmp_path)
                drift = gql(server, "{ drift { datasetDrift } }", token=replay.token)["data"]["drift"]
            start = """mutation { startExperiment(name: "dashboards",
                arms: [{alias: "champion", weight: 0.5}, {alias: "challenger", weight: 0.5}]) { name } }"""
            assert "errors" not in gql(server, start, token=replay.token)
            recs = "query Recs($u: Int!) { recommendations(userId: $u, first: 10) { movie { movieId } } }"
            for user in range(1, 41):
                assert "errors" not in gql(server, recs, {"u": user}, token=replay.token)
                assert "errors" not in gql(server, recs, {"u": user}, token=replay.token)  # a cache hit
                assert "errors" not in gql(server, f"{{ movie(movieId: {user}) {{ title }} }}")
            explain = "query($u: Int!) { recommendations(userId: $u, first: 1) { explanation } }"
            told = gql(server, explain, {"u": 5}, token=replay.token)
            assert told["extensions"]["explanations"]["source"] == "llm"
            ollama.state.fail = 1
            fell_back = gql(server, explain, {"u": 6}, token=replay.token)
            assert fell_back["extensions"]["explanations"]["source"] == "template"
            assert gql(server, "{ nope }")["errors"]  # the schema rejects it: GRAPHQL_VALIDATION
            aliases = " ".join(
                f"a{i}: recommendations(userId: 1, first: 100) {{ explanation }}" for i in range(60)
            )
            too_big = gql(server, f"{{ {aliases} }}", token=replay.token)
            assert too_big["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"

            panels = json.loads(DASHBOARD.read_text())["panels"]
            queries = [t["expr"].replace("$__rate_interval", "1m") for p in panels for t in p["targets"]]
            assert len(panels) >= 12 and len(queries) >= len(panels)
            empty: list[str] = []

            def all_have_data() -> bool:
                empty[:] = [q for q in queries if not _promql(url, q)]
                return not empty

            wait_until(all_have_data, f"data for every panel query; still empty: {empty}", seconds=60)
            # the explanation the LLM wrote shows on the tokens panel (Ollama reports its count)
            wait_until(
                lambda: float(_promql(url, "sum(cinerec_llm_generated_tokens_total)")[0]["value"][1]) > 0,
                "generated tokens scraped",
            )
            # the rules evaluate without errors, and the drift alert follows the stored check
            groups = httpx.get(f"{url}/api/v1/rules").json()["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            assert len(rules) == 7 and all(r["health"] == "ok" for r in rules), rules
            drift_state = {r["name"]: r["state"] for r in rules}["CinerecDataDrift"]
            assert drift_state == ("firing" if drift["datasetDrift"] else "inactive")
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / "dashboard_queries.json").write_text(
                json.dumps({q: _promql(url, q) for q in queries}, indent=1)
            )
        finally:
            gql(server, 'mutation { stopExperiment(name: "dashboards") { active } }', token=replay.token)
            prometheus.terminate()
            prometheus.wait(timeout=30)
