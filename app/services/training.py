"""Training, evaluation and fine-tuning, end to end: read the ratings, fit, measure, log to
MLflow (and W&B), register a version, tell running servers.

What ``cinerec train``, ``cinerec evaluate`` and ``cinerec llm finetune`` call; a test can
call the same methods without a shell. The models themselves live in ``ml``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.infra.announcements import PROMOTIONS, publish_sync
from app.infra.errors import BadUserInput
from app.infra.model_registry import register_version, registry_for
from ml.registry import CHAMPION, LLM, RECOMMENDER, RERANK_WEIGHTS_TAG

if TYPE_CHECKING:
    from app.infra.settings import Settings
    from ml.llm.finetune import FinetuneConfig
    from ml.llm.rerank import SegmentReport
    from ml.training import RankerReport, TrainConfig, TrainData, TrainResult

log = logging.getLogger(__name__)


class NoRatings(BadUserInput):
    pass


class NoDevice(BadUserInput):
    pass


@dataclass
class TrainOutcome:
    version: str
    champion: str | None
    run_id: str
    metrics: dict[str, dict[str, float]]  # model -> metric -> value, on the held-out split
    weights: dict[str, float]
    timings: dict[str, float]
    ranker: RankerReport | None = None
    ratings_sha256: str = ""  # which ratings made it (ml.training.ratings_fingerprint)


@dataclass
class EvaluateOutcome:
    run_id: str
    metrics: dict[str, dict[str, float]]
    weights: dict[str, float]
    timings: dict[str, float]
    rerank: RerankOutcome | None = None
    ranker: RankerReport | None = None


@dataclass
class RerankOutcome:
    segments: list[SegmentReport]
    version: str | None  # the LLM version measured (None: the base model)
    recorded: bool  # the served weights were recorded on that version and announced
    seconds: float

    def served_weights(self) -> dict[str, float]:
        """Per segment: the validated weight where the rerank wins (chosen on the validation
        half, gain interval above 0 on the test half), else 0."""
        return {s.segment: s.weight if s.wins else 0.0 for s in self.segments}


@dataclass
class FinetuneOutcome:
    version: str
    champion: str | None
    run_id: str
    auc_base: float
    auc_tuned: float
    eval_pairs: int
    steps: int
    tokens_per_second: float
    device: str
    metrics: dict[str, float] = field(default_factory=dict)


def flat_metrics(
    metrics: dict[str, dict[str, float]], ranker: RankerReport | None = None
) -> dict[str, float]:
    """Hybrid metrics under their own names, the baselines' and the ranker's prefixed."""
    out = dict(metrics["hybrid"])
    for name, row in metrics.items():
        if name != "hybrid":
            out.update({f"{name}.{k}": v for k, v in row.items()})
    if ranker is not None:
        out.update({f"ranker.{k}": v for k, v in ranker.metrics().items()})
    return out


class TrainingService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = registry_for(settings)

    def champion(self, name: str) -> str | None:
        return self.registry.alias_version(name, CHAMPION)

    def load_data(self) -> TrainData:
        """The database's ratings and catalog as frames; ``NoRatings`` when there are none."""
        from app.infra.database import create_engine
        from app.services.training_data import load_train_data

        async def run() -> TrainData:
            engine = create_engine(self.settings)
            try:
                return await load_train_data(engine=engine)
            finally:
                await engine.dispose()

        data = asyncio.run(run())
        if data.ratings.empty:
            raise NoRatings("no ratings in the database: run `cinerec data ingest DIR` first")
        return data

    def _log_wandb(self, name: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
        if not self.settings.wandb:
            return
        from ml.tracking import log_wandb

        try:
            where = log_wandb(
                project="cinerec",
                name=name,
                config=params,
                metrics=metrics,
                directory=self.settings.home / "wandb",
                api_key=self.settings.wandb_api_key,
            )
            log.info("W&B run: %s", where)
        except Exception as exc:  # tracking is a side channel: a W&B failure must not lose the model
            log.warning("W&B logging failed: %s", exc)

    # -- the recommender --------------------------------------------------------------------

    def _cached(self, config: TrainConfig) -> TrainConfig:
        """``config`` keeping the catalog's content embeddings under this home's cache."""
        if config.embeddings_cache is not None:
            return config
        return replace(config, embeddings_cache=self.settings.embeddings_cache_dir)

    def train(self, config: TrainConfig, *, refit: bool = True, promote: bool = False) -> TrainOutcome:
        """Tune, evaluate, refit on every rating, register a version of the recommender."""
        from ml.drift import save_reference
        from ml.training import train as fit

        data = self.load_data()
        result = fit(data, self._cached(config), refit=refit)
        assert result.model is not None
        params = {**result.params, "weights": result.weights, "refit": refit}
        with tempfile.TemporaryDirectory() as tmp:
            result.model.save(Path(tmp))
            # what drift checks compare the ratings since the cut-off with (`cinerec monitor drift`)
            params["drift_reference_rows"] = save_reference(Path(tmp), data.ratings, data.catalog)
            run_id, source = self.registry.log_run(
                experiment=RECOMMENDER,
                params=params,
                metrics=flat_metrics(result.metrics, result.ranker),
                artifacts=Path(tmp),
            )
        assert source is not None
        version, champion = register_version(
            self.settings, self.registry, RECOMMENDER, source=source, run_id=run_id, promote=promote
        )
        self._log_wandb(f"train-v{version}", params, flat_metrics(result.metrics, result.ranker))
        return TrainOutcome(
            version,
            champion,
            run_id,
            result.metrics,
            result.weights,
            result.timings,
            result.ranker,
            str(result.params["ratings_sha256"]),
        )

    def evaluate(self, config: TrainConfig, *, rerank_users: int = 0) -> EvaluateOutcome:
        """Popularity, EASE, LightFM and the hybrid on one held-out split; with ``rerank_users``,
        the LLM rerank too (its validated weight is recorded on the LLM champion)."""
        from ml.training import train as fit

        data = self.load_data()
        result = fit(data, self._cached(config), evaluate_only=True, keep_evaluation=rerank_users > 0)
        metrics = flat_metrics(result.metrics, result.ranker)
        rerank = None
        if rerank_users > 0:
            rerank = self.evaluate_rerank(data, result, rerank_users, config.seed)
            for segment in rerank.segments:
                prefix = f"rerank.{segment.segment}"
                metrics.update(
                    {
                        f"{prefix}.ndcg_at_10_without": segment.ndcg_without,
                        f"{prefix}.ndcg_at_10_with": segment.ndcg_with,
                        f"{prefix}.gain": segment.gain,
                        f"{prefix}.gain_low": segment.gain_low,
                        f"{prefix}.gain_high": segment.gain_high,
                        f"{prefix}.weight": segment.weight,
                        f"{prefix}.users_test": segment.users_test,
                    }
                )
        run_id, _ = self.registry.log_run(
            experiment="cinerec-evaluation",
            params={**result.params, "weights": result.weights, "rerank_users": rerank_users},
            metrics=metrics,
        )
        self._log_wandb(f"evaluate-{run_id[:8]}", result.params, metrics)
        return EvaluateOutcome(run_id, result.metrics, result.weights, result.timings, rerank, result.ranker)

    # -- the LLM ----------------------------------------------------------------------------

    def _base_llm(self, device: str = "cpu") -> tuple[Any, Any]:
        from ml.llm.base_model import init_torch, load_base

        init_torch(self.settings.llm_threads)
        return load_base(
            self.settings.llm_base, self.settings.llm_cache_dir or self.settings.home / "llm", device=device
        )

    def finetune(
        self, config: FinetuneConfig, *, promote: bool = False, fresh: bool = False
    ) -> FinetuneOutcome:
        """A LoRA adapter on preference questions, AUC base vs tuned on held-out users,
        registered as a version of the LLM."""
        import torch

        from ml.llm.examples import build_examples, item_stats, split_users
        from ml.llm.finetune import finetune as run_finetune
        from ml.llm.prompts import PromptBuilder

        if config.device.startswith("cuda") and not torch.cuda.is_available():
            raise NoDevice("--device cuda: no CUDA device here")
        data = self.load_data()
        train_users, held_out = split_users(
            data.ratings["user_id"].to_numpy(), config.eval_fraction, config.seed
        )
        stats = item_stats(data.ratings, train_users)  # from training users only: no answer leaks
        train_examples = build_examples(
            data.ratings,
            data.catalog,
            train_users,
            candidates_per_user=config.candidates_per_user,
            seed=config.seed,
            item_stats=stats,
        )
        eval_examples = build_examples(
            data.ratings,
            data.catalog,
            held_out[: config.eval_users],
            candidates_per_user=config.eval_candidates,
            seed=config.seed + 1,
            item_stats=stats,
        )
        if not train_examples or (config.eval_users and not eval_examples):
            raise NoRatings("too few ratings per user to build preference questions")
        if not config.batch_users:
            train_examples = []  # explanations only
        explain = self._explanation_examples(train_users, config) if config.explain_batch else []
        model, tokenizer = self._base_llm(config.device)
        workdir = self.settings.home / "llm" / "finetune"
        if fresh and workdir.exists():
            shutil.rmtree(workdir)
        result = run_finetune(
            model, PromptBuilder(tokenizer), train_examples, eval_examples, config, workdir, explain
        )
        meta = json.loads((result.adapter / "meta.json").read_text())
        meta.update(
            {"base": self.settings.llm_base, "eval_fraction": config.eval_fraction, "split_seed": config.seed}
        )
        (result.adapter / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        params = {
            **{k: v for k, v in meta["config"].items() if k != "progress"},
            "base": self.settings.llm_base,
            "train_pairs": result.train_pairs,
            "eval_pairs": result.eval_pairs,
            "explanation_examples": len(explain),
            "resumed_from_step": result.resumed_from,
        }
        metrics = result.metrics()
        run_id, source = self.registry.log_run(
            experiment=LLM, params=params, metrics=metrics, artifacts=result.adapter
        )
        assert source is not None
        version, champion = register_version(
            self.settings, self.registry, LLM, source=source, run_id=run_id, promote=promote
        )
        self._log_wandb(f"llm-finetune-v{version}", params, metrics)
        shutil.rmtree(workdir / "checkpoint", ignore_errors=True)  # registered: nothing left to resume
        return FinetuneOutcome(
            version,
            champion,
            run_id,
            result.auc_base,
            result.auc_tuned,
            result.eval_pairs,
            result.steps,
            result.tokens_per_second,
            config.device,
            metrics,
        )

    def _explanation_examples(self, train_users: Any, config: FinetuneConfig) -> list[Any]:
        """Data-to-text examples for the training users: the requests serving would build for
        one of their top-10 recommendations (or, one time in seven, a movie they rated), each
        answered by a checked target. None without a serving recommender (nothing to explain)."""
        import numpy as np

        from app.services.explanation_quality import explain_requests
        from ml.llm.explain_targets import explanation_examples

        if self.champion(RECOMMENDER) is None:
            log.warning("no recommender champion: fine-tuning on preference questions only")
            return []
        wanted = config.max_steps * config.explain_batch
        users = np.random.default_rng(config.seed).permutation(np.asarray(train_users))
        users = np.resize(users, max(wanted, 1))  # a user again with another candidate when too few
        requests, titles = asyncio.run(
            explain_requests(self.settings, users.tolist(), top=10, rated_share=1 / 7, seed=config.seed)
        )
        return explanation_examples(requests, titles, config.seed)

    def evaluate_rerank(self, data: TrainData, result: TrainResult, users: int, seed: int) -> RerankOutcome:
        """nDCG@10 with and without the LLM rerank per user segment (cold: histories cut to 1, 3
        and 5 ratings; warm), on the LLM champion's held-out users, with 95% bootstrap intervals;
        the weights of the segments where it wins become the champion's served weights (a tag
        on its version), and running servers are told to reload them."""
        import numpy as np

        from ml.llm.base_model import with_adapter
        from ml.llm.examples import split_users
        from ml.llm.prompts import PromptBuilder
        from ml.llm.rerank import evaluate_segments
        from ml.llm.scoring import yes_probabilities

        assert result.evaluation is not None
        model, train_part, test_part = result.evaluation
        version = self.champion(LLM)
        llm, tokenizer = self._base_llm()
        fraction, split_seed = 0.2, seed
        if version is not None:
            adapter = self.registry.download(LLM, version, self.settings.home / "models")
            meta = json.loads((adapter / "meta.json").read_text())
            fraction, split_seed = float(meta.get("eval_fraction", 0.2)), int(meta.get("split_seed", seed))
            llm = with_adapter(llm, adapter, merge=True)
            llm.eval()
        builder = PromptBuilder(tokenizer)
        pad = int(tokenizer.pad_token_id)

        def score(requests: list[Any]) -> list[Any]:
            prompts = [builder.preference(r) for r in requests]
            return yes_probabilities(llm, prompts, yes_id=builder.yes_id, no_id=builder.no_id, pad_id=pad)

        # Only users the LLM never trained on, and who have held-out ratings to find.
        _, held_out = split_users(data.ratings["user_id"].to_numpy(), fraction, split_seed)
        rows = np.flatnonzero(np.isin(train_part.user_ids, held_out) & (np.diff(test_part.matrix.indptr) > 0))
        rows = np.random.default_rng(seed).permutation(rows)[:users]
        started = time.perf_counter()
        segments = evaluate_segments(model, train_part, test_part, data.catalog, score, rows, seed=seed)
        outcome = RerankOutcome(segments, version, version is not None, time.perf_counter() - started)
        if version is not None:
            weights = json.dumps(outcome.served_weights())
            self.registry.set_version_tag(LLM, version, RERANK_WEIGHTS_TAG, weights)
            # new weights on the serving version: servers reload them (they cache them with the model)
            publish_sync(self.settings, PROMOTIONS, {"model": LLM, "alias": CHAMPION, "version": version})
        return outcome
