"""The DVC pipeline (dvc.yaml, params.yaml, .dvc/config) run by the real `dvc` on demo-sized
data: a fresh PostgreSQL database, a local MLflow store and a local DVC remote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from app.infra.model_registry import registry_for
from ml.registry import LLM, RECOMMENDER
from ml.training import ratings_fingerprint
from tests.conftest import Databases, settings_env
from tests.movielens_fixture import write_movielens

ROOT = Path(__file__).resolve().parents[2]
# demo-sized: a quick recommender and a one-step explanation adapter
QUICK = {
    "train": {"epochs": 2, "tune": False, "refit": False, "ranker": False},
    "finetune": {"max-steps": 1, "batch-users": 0, "explain-batch": 1, "eval-users": 0},
}


def _stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def test_dvc_repro_runs_the_pipeline_then_only_what_changed_and_the_data_round_trips_a_remote(
    databases: Databases, tmp_path: Path
) -> None:
    settings = databases.settings("postgresql", llm_backend="none")
    work = tmp_path / "work"
    work.mkdir()
    # the pipeline's files as committed, and the code its stages depend on
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, work / name)
    for package in ("app", "ml"):
        shutil.copytree(ROOT / package, work / package, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in QUICK.items():
        params[section].update(values)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        **settings_env(settings),
        "CINEREC_LLM_CACHE_DIR": str(settings.llm_cache_dir),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # `cinerec`, `dvc`
        "DVC_NO_ANALYTICS": "1",
    }

    def dvc(*args: str) -> str:
        done = subprocess.run(
            ["dvc", *args], cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
        return done.stdout

    subprocess.run(["git", "init", "-q", str(work)], check=True)
    dvc("init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", work / ".dvc" / "config")  # the repository's settings
    data = work / params["data"]["folder"]
    write_movielens(data)
    dvc("add", params["data"]["folder"])
    dvc("remote", "add", "-d", "store", str(tmp_path / "remote"))

    # the whole pipeline, in order; each report names what it made and from what
    first = dvc("repro")
    assert _stages_run(first) == ["ingest", "train", "finetune"], first
    ingested = json.loads((work / "reports" / "ingest.json").read_text())
    ratings = pd.read_csv(data / "ratings.csv")
    assert ingested["ratings"] == len(ratings) and ingested["rejected"] == 0
    trained = json.loads((work / "reports" / "train.json").read_text())
    expected = ratings_fingerprint(ratings.rename(columns={"userId": "user_id", "movieId": "movie_id"}))
    assert trained["version"] == "1" and trained["ratings_sha256"] == expected
    registry = registry_for(settings)
    run = registry.client.get_run(trained["run_id"])
    assert run.data.params["ratings_sha256"] == expected and run.data.params["epochs"] == "2"
    assert trained["metrics"]["hybrid"]["ndcg_at_10"] > 0
    tuned = json.loads((work / "reports" / "finetune.json").read_text())
    assert tuned["version"] == "1" and tuned["steps"] == 1
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    assert lock["train"]["params"]["params.yaml"]["train"]["epochs"] == 2

    # nothing changed: nothing runs
    again = dvc("repro")
    assert _stages_run(again) == [] and "Data and pipelines are up to date" in again, again

    # a fine-tune parameter changed: only the fine-tune runs again
    params["finetune"]["max-steps"] = 2
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = dvc("repro")
    assert _stages_run(changed) == ["finetune"], changed
    tuned = json.loads((work / "reports" / "finetune.json").read_text())
    assert tuned["version"] == "2" and tuned["steps"] == 2
    assert registry.alias_version(RECOMMENDER, "champion") == "1"
    assert [v.version for v in registry.client.search_model_versions(f"name='{LLM}'")] != []

    # the data goes to the remote and comes back from it, byte for byte
    dvc("push")
    before = (data / "ratings.csv").read_bytes()
    shutil.rmtree(data)
    shutil.rmtree(work / ".dvc" / "cache")
    dvc("pull")
    assert (data / "ratings.csv").read_bytes() == before
    assert "Data and pipelines are up to date" in dvc("status")
