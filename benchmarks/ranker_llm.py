"""The LLM's P(Yes) as a feature of the learned ranker, per user segment, on the real MovieLens 100K.

    python -m benchmarks.ranker_llm [--steps 60] [--teach-users 72] [--stop-users 24]
                                    [--test-users 120] [--pool 10]

The defaults fit about 40 minutes of 2 CPU cores: the LLM reads about 500 tokens a second
there, and a pool of 10 questions with its user part is about 900 tokens.

What is served today is the list this measures against: for a user cut to 1, 3 or 5 ratings
the learned ranker's order (`cinerec train`'s ``fit_for_new_users``), for a warm user the
blend's. Each list's top ``--pool`` is then reordered by a second LambdaRank over the pool
(the ranker's pair features, the served score and rank), once **without** and once **with** the
LLM's P(Yes) as one more feature. Both are taught and stopped on the same lists, so the
difference between them is the LLM's.

The LLM's preference side is trained on the ranking question, as the issue asks: the
questions are the served pools' movies, answered Yes when the user rated the movie in their
held-out part (watched) and No when not, among the generators' own candidates (not TALLRec's
liked-or-disliked among rated movies). LoRA as `cinerec llm finetune` trains it
(``FinetuneConfig``, preference questions only), 8 questions per list (up to 4 watched).

Users (`cinerec train`'s split, ``benchmarks.ranker.Study``): the tuning split's users with
validation ratings are dealt into four disjoint groups: the first-stage ranker and the LLM
are taught on the first (half of them), the second stage is taught on ``--teach-users`` and
stopped on ``--stop-users`` of the rest, so no model is measured on users it was taught on.
The test is ``--test-users`` of the held-out split's users, their training histories cut to
1, 3 and 5 ratings (scored as users the components never saw) or whole (warm), with the
components refitted on the whole training part. nDCG@10 per segment with 95% bootstrap
intervals of the per-user paired differences; also each score's AUC for watched against not
watched within the pools.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks.common import machine, save
from benchmarks.ranker import Study, _parts_of
from ml import metrics as m
from ml import ranker as learned
from ml.interactions import truncate
from ml.llm.examples import PreferenceExample, catalog_facts, catalog_genres, catalog_label, matrix_stats
from ml.llm.prompts import preference_request

SERVED = "served"
SEGMENTS = {"cold-1": 1, "cold-3": 3, "cold-5": 5, "warm": None}


@dataclass
class Pools:
    """Each user's served top ``pool`` in one segment, with what the second stage reads."""

    segment: str
    users: np.ndarray  # model rows
    history: sp.csr_matrix  # (n_users, n_items): what the user is served from (cut or whole)
    items: np.ndarray  # (n_users, pool) columns, in the served order
    features: np.ndarray  # (n_users, pool, n_features)
    labels: np.ndarray  # (n_users, pool): the user rated it in the held-out part
    relevant: list[np.ndarray]  # every held-out column per user (nDCG's denominator)
    p_yes: np.ndarray | None = None  # (n_users, pool), once the LLM has scored them


def pools(
    segment: str,
    parts_of: Any,
    ranker: learned.Ranker,
    weights: dict[str, float],
    item_embeddings: np.ndarray,
    stats: learned.ItemStats,
    history: sp.csr_matrix,
    labels: sp.csr_matrix,
    users: np.ndarray,
    pool: int,
) -> Pools:
    """The served pools of ``users`` (their rows of ``history`` and ``labels``): the ranker's
    order for a cold segment, the blend's for the warm one."""
    cold = SEGMENTS[segment] is not None
    items, feats, found_labels = [], [], []
    for first in range(0, len(users), 256):
        batch = history[first : first + 256]
        rows = np.full(batch.shape[0], -1) if cold else users[first : first + 256]
        parts = parts_of(batch, rows)
        blend = learned.blend_of(parts, weights)
        served = ranker.rank(blend.copy(), parts, batch, item_embeddings) if cold else blend
        found = learned.candidates({**parts, SERVED: served}, blend, batch, item_embeddings, stats, pool)
        served_rank = found.features[:, _column(parts, SERVED, "rank")]
        keep = served_rank < pool
        order = np.lexsort((served_rank[keep], found.rows[keep]))
        n = batch.shape[0]
        if keep.sum() != n * pool:
            raise RuntimeError("a served pool is not whole: ties in the served scores")
        items.append(found.items[keep][order].reshape(n, pool))
        feats.append(found.features[keep][order].reshape(n, pool, -1))
        found_labels.append(
            np.asarray(labels[first : first + 256][found.rows[keep][order], found.items[keep][order]])
        )
    item_array = np.concatenate(items)
    relevant = [labels.indices[labels.indptr[r] : labels.indptr[r + 1]] for r in range(labels.shape[0])]
    return Pools(
        segment,
        users,
        history,
        item_array,
        np.concatenate(feats),
        np.concatenate([x.reshape(-1, pool) for x in found_labels]) > 0,
        relevant,
    )


def _names(parts: dict[str, np.ndarray]) -> list[str]:
    return learned.feature_names([n for n in parts if n != SERVED] + [SERVED])


def _column(parts: dict[str, np.ndarray], name: str, kind: str) -> int:
    return _names(parts).index(f"{name}_{kind}")


def examples(
    catalog: Any, p: Pools, stats: dict[int, tuple[float, int]], questions: int | None, seed: int
) -> list[PreferenceExample]:
    """One preference example per user: the (cut) history as the profile, the pool's movies as
    questions (``questions`` of them, up to half watched, or all), watched as the answer."""
    genres_of = catalog_genres(catalog)
    rng = np.random.default_rng(seed)
    out = []
    for r in range(len(p.users)):
        row = p.history[r]
        chosen = np.arange(p.items.shape[1])
        if questions is not None:
            yes, no = np.flatnonzero(p.labels[r]), np.flatnonzero(~p.labels[r])
            take_yes = rng.permutation(yes)[: questions // 2]
            chosen = np.sort(np.concatenate([take_yes, rng.permutation(no)[: questions - len(take_yes)]]))
        request = preference_request(
            [(int(catalog.item_ids[j]), float(v)) for j, v in zip(row.indices, row.data, strict=True)],
            [catalog_facts(catalog, int(j), stats) for j in p.items[r, chosen]],
            lambda movie: catalog_label(catalog, int(catalog.index([movie])[0])),
            genres_of=genres_of,
        )
        out.append(
            PreferenceExample(
                int(p.users[r]),
                request,
                [int(catalog.item_ids[j]) for j in p.items[r, chosen]],
                [int(y) for y in p.labels[r, chosen]],
            )
        )
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)


def _matrix(all_pools: list[Pools], with_llm: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, group sizes, start scores) of the pools with a watched movie."""
    xs, ys, groups, starts = [], [], [], []
    for p in all_pools:
        keep = p.labels.any(axis=1)
        x = p.features[keep]
        if with_llm:
            if p.p_yes is None:
                raise ValueError("the pools were not scored by the LLM")
            x = np.concatenate([x, _logit(p.p_yes[keep])[..., None]], axis=2)
        n, pool = p.labels[keep].shape
        xs.append(x.reshape(n * pool, -1))
        ys.append(p.labels[keep].reshape(-1).astype(np.float32))
        groups.append(np.full(n, pool))
        starts.append(np.tile(-np.log1p(np.arange(pool, dtype=np.float32)), n))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(groups), np.concatenate(starts)


def second_stage(teach: list[Pools], stop: list[Pools], with_llm: bool) -> Any:
    """LambdaRank over the pools, starting from the served order (a DCG-shaped prior on the
    served rank) and stopped where the ``stop`` pools' nDCG@10 stops rising."""
    import lightgbm as lgb

    x, y, g, s = _matrix(teach, with_llm)
    xs, ys, gs, ss = _matrix(stop, with_llm)
    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_child_samples": 50,
        "num_threads": 2,
        "seed": 42,
        "deterministic": True,
        "verbosity": -1,
    }
    fit_set = lgb.Dataset(x, y, group=g, init_score=s)
    stop_set = lgb.Dataset(xs, ys, group=gs, init_score=ss, reference=fit_set)
    return lgb.train(
        params,
        fit_set,
        num_boost_round=300,
        valid_sets=[stop_set],
        callbacks=[lgb.early_stopping(30, verbose=False)],
    )


def reordered(booster: Any, p: Pools, with_llm: bool) -> np.ndarray:
    """(n_users, pool): each pool in the second stage's order."""
    x = p.features
    if with_llm:
        assert p.p_yes is not None
        x = np.concatenate([x, _logit(p.p_yes)[..., None]], axis=2)
    n, pool = p.items.shape
    start = -np.log1p(np.arange(pool, dtype=np.float32))
    predicted = booster.predict(x.reshape(n * pool, -1), num_threads=2).reshape(n, pool) + start
    return np.take_along_axis(p.items, np.argsort(-predicted, axis=1, kind="stable"), axis=1)


def score_llm(model: Any, builder: Any, all_pools: list[Pools], catalog: Any, stats: dict) -> float:
    """Fill each pool's P(Yes); returns the seconds it took."""
    from ml.llm.finetune import preference_auc

    started = time.perf_counter()
    for p in all_pools:
        asked = examples(catalog, p, stats, None, 0)
        _, probs, _ = preference_auc(model, builder, asked)
        p.p_yes = probs.reshape(p.items.shape)
        print(f"  scored {len(asked)} {p.segment} pools, {time.perf_counter() - started:.0f} s", flush=True)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--steps", type=int, default=60, help="LoRA steps on the ranking question (0: base model)"
    )
    ap.add_argument("--teach-users", type=int, default=72)
    ap.add_argument("--stop-users", type=int, default=24)
    ap.add_argument("--test-users", type=int, default=120)
    ap.add_argument("--pool", type=int, default=10)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cinerec-bench-ranker-llm"))
    a = ap.parse_args()
    started = time.perf_counter()
    study = Study.prepare()
    catalog, weights, emb = study.catalog, study.weights, study.item_embeddings
    generators = sorted(study.inner_components)
    tuning = study.fold(study.inner, study.valid, study.inner_components)
    order = np.random.default_rng(7).permutation(tuning.users)
    half = len(order) // 2
    first = np.sort(order[:half])
    teach_users = np.sort(order[half : half + a.teach_users])
    stop_users = np.sort(order[half + a.teach_users : half + a.teach_users + a.stop_users])
    ranker, _ = learned.fit_for_new_users(replace(tuning, users=first), weights, emb, generators)
    inner_stats = matrix_stats(catalog, study.inner.matrix)

    def tuning_pools(users: np.ndarray, seed: int) -> list[Pools]:
        out = []
        for segment, keep in SEGMENTS.items():
            fold = replace(tuning, users=users)
            if keep is not None:
                fold = learned.cold_copy(fold, keep, seed + keep)
                # cold_copy keeps only users left with a rating; all of these had one
                history, labels = fold.history[fold.users], fold.labels[fold.users]
                model_rows = users[fold.users]
            else:
                history, labels, model_rows = tuning.history[users], tuning.labels[users], users
            out.append(
                pools(
                    segment,
                    tuning.parts_of,
                    ranker,
                    weights,
                    emb,
                    tuning.stats,
                    history,
                    labels,
                    model_rows,
                    a.pool,
                )
            )
        return out

    teach_pools = tuning_pools(teach_users, 1000)
    stop_pools = tuning_pools(stop_users, 2000)
    llm_pools = tuning_pools(first, 3000)

    components = study.fit_components_on_training()
    test_users = np.flatnonzero(np.diff(study.test_part.matrix.indptr))
    test_users = np.sort(np.random.default_rng(11).permutation(test_users)[: a.test_users])
    served_stats = learned.ItemStats.of(study.train_part.matrix, catalog.years, study.genres)
    served_ranker = ranker.with_stats(served_stats)
    test_pools = []
    for segment, keep in SEGMENTS.items():
        history = study.train_part.matrix[test_users]
        if keep is not None:
            history = truncate(history, keep, seed=0)
        test_pools.append(
            pools(
                segment,
                _parts_of(components),
                served_ranker,
                weights,
                emb,
                served_stats,
                history,
                study.test_part.matrix[test_users],
                test_users,
                a.pool,
            )
        )
    out: dict[str, Any] = {"machine": machine(), "pool": a.pool, "weights": weights}
    out["users"] = {
        "ranker_and_llm": len(first),
        "second_stage_teach": len(teach_users),
        "second_stage_stop": len(stop_users),
        "test": len(test_users),
    }
    print("prepared", round(time.perf_counter() - started), "s", out["users"], flush=True)

    from ml.llm.base_model import DEFAULT_BASE, init_torch, load_base
    from ml.llm.finetune import FinetuneConfig, finetune
    from ml.llm.prompts import PromptBuilder

    init_torch(2)
    model: Any
    model, tokenizer = load_base(DEFAULT_BASE, a.workdir / "llm")
    builder = PromptBuilder(tokenizer)
    if a.steps:
        taught = [ex for p in llm_pools for ex in examples(catalog, p, inner_stats, 8, 5) if any(ex.labels)]
        # no held-out AUC inside the fine-tune (each costs a scoring pass): the table gives the
        # tuned model's AUC on the test pools
        config = FinetuneConfig(max_steps=a.steps, explain_batch=0, progress=False, batch_users=4)
        tuned = finetune(model, builder, taught, [], config, a.workdir / "finetune")
        from peft import PeftModel

        base, _ = load_base(DEFAULT_BASE, a.workdir / "llm")
        model = PeftModel.from_pretrained(base, str(tuned.adapter)).eval()
        out["finetune"] = {
            "steps": tuned.steps,
            "train_pairs": tuned.train_pairs,
            "train_seconds": round(tuned.train_seconds),
            "loss_by_25_steps": [
                round(float(np.mean(tuned.losses[i : i + 25])), 3) for i in range(0, len(tuned.losses), 25)
            ],
        }
        print("finetune", out["finetune"], flush=True)
    seconds = score_llm(model, builder, teach_pools + stop_pools, catalog, inner_stats)
    test_stats = matrix_stats(catalog, study.train_part.matrix)
    seconds += score_llm(model, builder, test_pools, catalog, test_stats)
    lists = sum(len(p.users) for p in teach_pools + stop_pools + test_pools)
    out["llm_scoring"] = {"lists": lists, "pairs": lists * a.pool, "seconds": round(seconds)}
    print("scored", out["llm_scoring"], flush=True)

    boosters = {llm: second_stage(teach_pools, stop_pools, llm) for llm in (False, True)}
    out["second_stage_trees"] = {
        ("with" if k else "without"): int(b.best_iteration or 300) for k, b in boosters.items()
    }
    table: dict[str, Any] = {}
    for p in test_pools:
        served = m.ndcg_per_user(p.items[:, :10], p.relevant, 10)
        without = m.ndcg_per_user(reordered(boosters[False], p, False)[:, :10], p.relevant, 10)
        with_llm = m.ndcg_per_user(reordered(boosters[True], p, True)[:, :10], p.relevant, 10)
        assert p.p_yes is not None
        watched = p.labels.reshape(-1)
        row: dict[str, Any] = {
            "users": len(p.users),
            "served": round(float(served.mean()), 4),
            "without_llm": round(float(without.mean()), 4),
            "with_llm": round(float(with_llm.mean()), 4),
            "auc_llm_in_pool": round(m.roc_auc(p.p_yes.reshape(-1), watched), 4),
            "auc_served_rank_in_pool": round(
                m.roc_auc(np.tile(-np.arange(a.pool, dtype=np.float64), len(p.users)), watched), 4
            ),
        }
        for name, against in (("with_vs_without", without), ("with_vs_served", served)):
            diff = with_llm - against
            low, high = m.mean_interval(diff)
            row[name] = [round(float(diff.mean()), 4), round(low, 4), round(high, 4)]
        table[p.segment] = row
        print(p.segment, row, flush=True)
    out["segments"] = table
    out["seconds"] = round(time.perf_counter() - started)
    save("ranker_llm", out)


if __name__ == "__main__":
    main()
