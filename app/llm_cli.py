"""`cinerec llm ...`: LoRA fine-tuning of the explainer/reranker and its registration."""

from __future__ import annotations

import json
import logging
import shutil
from typing import TYPE_CHECKING, Annotated

import typer

from app.settings import get_settings

if TYPE_CHECKING:
    from app.settings import Settings
    from ml.training import TrainData, TrainResult

llm_app = typer.Typer(help="The LLM: LoRA fine-tuning and registration.", no_args_is_help=True)
log = logging.getLogger("cinerec")


@llm_app.command("finetune")
def finetune(
    max_steps: Annotated[
        int, typer.Option(help="Optimizer steps (a few finish in minutes on 2 cores).")
    ] = 300,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 16,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    batch_users: Annotated[int, typer.Option(help="Users per step (all their candidates).")] = 2,
    candidates_per_user: Annotated[int, typer.Option(help="Questions per training user.")] = 8,
    eval_users: Annotated[int, typer.Option(help="Held-out users for the AUC (4 questions each).")] = 100,
    device: Annotated[str, typer.Option(help="cpu, or cuda where a GPU exists (bf16).")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of the user split, the data and the run.")] = 42,
    promote: Annotated[bool, typer.Option(help="Make the new version the champion at once.")] = False,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Ignore an earlier unfinished run's checkpoint.")
    ] = False,
    if_missing: Annotated[
        bool, typer.Option("--if-missing", help="Do nothing when an LLM champion exists.")
    ] = False,
) -> None:
    """Fine-tune a LoRA adapter on preference questions; AUC base vs tuned; register in MLflow."""
    import torch

    from app.cli import _fail, _load_data, _log_wandb, ensure_schema
    from app.serving import register_version, registry_for
    from ml.llm.base import init_torch, load_base
    from ml.llm.data import build_examples, item_stats, split_users
    from ml.llm.finetune import FinetuneConfig
    from ml.llm.finetune import finetune as run_finetune
    from ml.llm.prompts import PromptBuilder
    from ml.registry import CHAMPION, LLM

    settings = get_settings()
    registry = registry_for(settings)
    if if_missing and (existing := registry.alias_version(LLM, CHAMPION)):
        typer.echo(f"{LLM} version {existing} is the champion already: not fine-tuning")
        return
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise _fail("--device cuda: no CUDA device here", code=2)
    init_torch(settings.llm_threads)
    ensure_schema(settings, migrate=True)
    data = _load_data(settings)
    config = FinetuneConfig(
        rank=rank,
        alpha=alpha,
        learning_rate=learning_rate,
        batch_users=batch_users,
        max_steps=max_steps,
        candidates_per_user=candidates_per_user,
        eval_users=eval_users,
        seed=seed,
        device=device,
        bf16=device.startswith("cuda"),
    )
    train_users, held_out = split_users(data.ratings["user_id"].to_numpy(), config.eval_fraction, seed)
    stats = item_stats(data.ratings, train_users)  # from training users only: no answer leaks
    train_examples = build_examples(
        data.ratings,
        data.catalog,
        train_users,
        candidates_per_user=candidates_per_user,
        seed=seed,
        item_stats=stats,
    )
    eval_examples = build_examples(
        data.ratings,
        data.catalog,
        held_out[:eval_users],
        candidates_per_user=config.eval_candidates,
        seed=seed + 1,
        item_stats=stats,
    )
    if not train_examples or not eval_examples:
        raise _fail("too few ratings per user to build preference questions", code=2)
    model, tokenizer = load_base(
        settings.llm_base, settings.llm_cache_dir or settings.home / "llm", device=device
    )
    workdir = settings.home / "llm" / "finetune"
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    result = run_finetune(model, PromptBuilder(tokenizer), train_examples, eval_examples, config, workdir)
    meta = json.loads((result.adapter / "meta.json").read_text())
    meta.update({"base": settings.llm_base, "eval_fraction": config.eval_fraction, "split_seed": seed})
    (result.adapter / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    params = {
        **{k: v for k, v in meta["config"].items() if k != "progress"},
        "base": settings.llm_base,
        "train_pairs": result.train_pairs,
        "eval_pairs": result.eval_pairs,
        "resumed_from_step": result.resumed_from,
    }
    metrics = result.metrics()
    run_id, source = registry.log_run(
        experiment=LLM, params=params, metrics=metrics, artifacts=result.adapter
    )
    assert source is not None
    version, champion = register_version(
        settings, registry, LLM, source=source, run_id=run_id, promote=promote
    )
    _log_wandb(settings, f"llm-finetune-v{version}", params, metrics)
    shutil.rmtree(workdir / "checkpoint", ignore_errors=True)  # registered: nothing left to resume
    state = "serving (champion)" if champion == version else f"registered; champion is version {champion}"
    typer.echo(
        f"{LLM} version {version}: {state}; preference AUC base {result.auc_base:.4f} -> tuned "
        f"{result.auc_tuned:.4f} on {result.eval_pairs} held-out pairs; {result.steps} steps, "
        f"{result.tokens_per_second:.0f} tokens/s on {device}; MLflow run {run_id}"
    )


def evaluate_rerank_cli(
    settings: Settings, data: TrainData, result: TrainResult, users: int, seed: int
) -> dict[str, float]:
    """nDCG@10 with and without the LLM rerank on the LLM champion's held-out users; the
    validated weight becomes the champion's served weight (a tag on its registry version)."""
    import numpy as np

    from app.serving import registry_for
    from ml.llm.base import init_torch, load_base, with_adapter
    from ml.llm.data import split_users
    from ml.llm.prompts import PromptBuilder
    from ml.llm.rerank import evaluate_rerank
    from ml.llm.scoring import yes_probabilities
    from ml.registry import CHAMPION, LLM, RERANK_WEIGHT_TAG

    assert result.evaluation is not None
    model, train_part, test_part = result.evaluation
    registry = registry_for(settings)
    version = registry.alias_version(LLM, CHAMPION)
    init_torch(settings.llm_threads)
    llm, tokenizer = load_base(settings.llm_base, settings.llm_cache_dir or settings.home / "llm")
    fraction, split_seed = 0.2, seed
    if version is not None:
        adapter = registry.download(LLM, version, settings.home / "models")
        meta = json.loads((adapter / "meta.json").read_text())
        fraction, split_seed = float(meta.get("eval_fraction", 0.2)), int(meta.get("split_seed", seed))
        llm = with_adapter(llm, adapter, merge=True)
        llm.eval()
    builder = PromptBuilder(tokenizer)
    pad = int(tokenizer.pad_token_id)

    def score(requests: list) -> list:
        prompts = [builder.preference(r.profile, r.candidates) for r in requests]
        return yes_probabilities(llm, prompts, yes_id=builder.yes_id, no_id=builder.no_id, pad_id=pad)

    # Only users the LLM never trained on, and who have held-out ratings to find.
    _, held_out = split_users(data.ratings["user_id"].to_numpy(), fraction, split_seed)
    rows = np.flatnonzero(np.isin(train_part.user_ids, held_out) & (np.diff(test_part.matrix.indptr) > 0))
    rows = np.random.default_rng(seed).permutation(rows)[:users]
    report = evaluate_rerank(model, train_part, test_part, data.catalog, score, rows)
    which = f"{LLM} version {version}" if version else "the base LLM (no adapter registered)"
    typer.echo(
        f"rerank with {which} on {report.users_test} users "
        f"(weight chosen on {report.users_validation} others): "
        f"nDCG@10 {report.ndcg_without:.4f} without -> {report.ndcg_with:.4f} with (weight {report.weight}); "
        f"by weight { ({w: round(v, 4) for w, v in report.test_by_weight.items()}) }; {report.seconds:.0f} s"
    )
    if version is not None:
        registry.client.set_model_version_tag(LLM, version, RERANK_WEIGHT_TAG, str(report.weight))
        typer.echo(f"{LLM} version {version} now reranks with weight {report.weight} (0: no rerank)")
    return {
        "rerank.ndcg_at_10_without": report.ndcg_without,
        "rerank.ndcg_at_10_with": report.ndcg_with,
        "rerank.weight": report.weight,
        "rerank.users_test": report.users_test,
    }
