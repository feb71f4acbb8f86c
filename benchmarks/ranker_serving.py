"""What the served ranker costs a scoring batch: one model version with a ranker, 50 users per
batch, its ``score`` (blend, and the ranker for the rows it orders) against ``blend`` alone,
interleaved in one run.

    python -m benchmarks.ranker_serving --home var [--version N] [--rounds 200]

Batches: 50 of the model's users with their trained rows (warm: the ranker orders none),
the same 50 cut to 3 ratings and scored as users the model never saw (cold: the ranker
orders all), and a mix of 45 warm and 5 cold. Each round times every (batch, path) once, in
a shuffled order; the table gives each one's median and 90th percentile.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from app.infra.model_registry import registry_for
from app.infra.settings import Settings
from benchmarks.common import machine, save
from ml.hybrid import HybridRecommender
from ml.interactions import truncate
from ml.registry import CHAMPION, RECOMMENDER

BATCH = 50


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default="var")
    ap.add_argument("--version", default=None, help="a version with a ranker (default: the champion)")
    ap.add_argument("--rounds", type=int, default=200)
    a = ap.parse_args()
    settings = Settings(home=a.home)
    registry = registry_for(settings)
    version = a.version or registry.alias_version(RECOMMENDER, CHAMPION)
    model = HybridRecommender.load(registry.download(RECOMMENDER, str(version), settings.home / "models"))
    if model.ranker is None or not model.ranker_up_to:
        raise SystemExit(f"version {version} serves no ranker: train one with `cinerec train`")
    assert model.history is not None
    rows = np.random.default_rng(0).choice(model.history.shape[0], BATCH, replace=False)
    warm = model.history[rows]
    warm_users = model.user_index(model.history_user_ids[rows])  # type: ignore[index]
    cold = truncate(warm, 3, seed=0)
    unseen = np.full(BATCH, -1)
    mixed = warm.copy().tolil()
    mixed[:5] = cold[:5]
    mixed_users = np.concatenate([unseen[:5], warm_users[5:]])
    batches = {
        "warm": (warm, warm_users),
        "cold": (cold, unseen),
        "mixed (5 cold)": (mixed.tocsr(), mixed_users),
    }
    times: dict[tuple[str, str], list[float]] = {}
    paths = {"blend": model.blend, "served (blend + ranker)": model.score}
    jobs = [(b, p) for b in batches for p in paths]
    for _ in range(5):  # warm the caches and LightGBM
        for b, p in jobs:
            paths[p](*batches[b])
    for _ in range(a.rounds):
        random.shuffle(jobs)
        for b, p in jobs:
            started = time.perf_counter()
            paths[p](*batches[b])
            times.setdefault((b, p), []).append(time.perf_counter() - started)
    out = {
        "machine": machine(),
        "version": str(version),
        "ranker_up_to": model.ranker_up_to,
        "batch": BATCH,
        "rounds": a.rounds,
        "ms": {
            f"{b} / {p}": {
                "p50": round(float(np.median(t)) * 1000, 2),
                "p90": round(float(np.percentile(t, 90)) * 1000, 2),
            }
            for (b, p), t in sorted(times.items())
        },
    }
    for b in batches:
        ratio = np.median(times[(b, "served (blend + ranker)")]) / np.median(times[(b, "blend")])
        out["ms"][f"{b} / ratio"] = round(float(ratio), 2)
    save("ranker_serving", out)


if __name__ == "__main__":
    main()
