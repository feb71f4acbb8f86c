"""``cinerec llm``: LoRA fine-tuning of the explainer/reranker and its registration."""

from __future__ import annotations

from typing import Annotated

import typer

from app.migrate import ensure_schema
from app.settings import get_settings

app = typer.Typer(help="The LLM: LoRA fine-tuning and registration.", no_args_is_help=True)


@app.command("finetune")
def finetune(
    max_steps: Annotated[
        int, typer.Option(help="Optimizer steps (a few finish in minutes on 2 cores).")
    ] = 150,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 16,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    batch_users: Annotated[
        int, typer.Option(help="Users per step, all their preference questions (0: explanations only).")
    ] = 4,
    candidates_per_user: Annotated[int, typer.Option(help="Questions per training user.")] = 8,
    eval_users: Annotated[int, typer.Option(help="Held-out users for the AUC (8 questions each).")] = 100,
    explain_batch: Annotated[
        int, typer.Option(help="Checked data-to-text explanations per step (0: preference only).")
    ] = 4,
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
    """Fine-tune a LoRA adapter on preference questions and checked data-to-text explanations;
    AUC base vs tuned; register in MLflow."""
    from app.services.training import TrainingService
    from ml.llm.finetune import FinetuneConfig
    from ml.registry import LLM

    settings = get_settings()
    service = TrainingService(settings)
    if if_missing and (existing := service.champion(LLM)):
        typer.echo(f"{LLM} version {existing} is the champion already: not fine-tuning")
        return
    ensure_schema(settings, migrate=True)
    config = FinetuneConfig(
        rank=rank,
        alpha=alpha,
        learning_rate=learning_rate,
        batch_users=batch_users,
        max_steps=max_steps,
        candidates_per_user=candidates_per_user,
        eval_users=eval_users,
        explain_batch=explain_batch,
        seed=seed,
        device=device,
        bf16=device.startswith("cuda"),
    )
    outcome = service.finetune(config, promote=promote, fresh=fresh)
    state = (
        "serving (champion)"
        if outcome.champion == outcome.version
        else f"registered; champion is version {outcome.champion}"
    )
    auc = (
        f"preference AUC base {outcome.auc_base:.4f} -> tuned {outcome.auc_tuned:.4f} on "
        f"{outcome.eval_pairs} held-out pairs"
        if outcome.eval_pairs
        else "no preference AUC (--eval-users 0)"
    )
    typer.echo(
        f"{LLM} version {outcome.version}: {state}; {auc}; {outcome.steps} steps, "
        f"{outcome.tokens_per_second:.0f} tokens/s on {outcome.device}; MLflow run {outcome.run_id}"
    )


@app.command("evaluate-explanations")
def evaluate_explanations(
    pairs: Annotated[int, typer.Option(help="Users explained (each one's top recommendation).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the user sample.")] = 7,
    version: Annotated[
        list[str] | None, typer.Option(help="LLM versions to compare with the base model (default: all).")
    ] = None,
    examples: Annotated[int, typer.Option(help="Explanations to print per model.")] = 3,
) -> None:
    """Faithfulness of the explanations, base model vs each adapter: unsupported claims by
    kind, the LLM's share of what would be served, evidence use, length, tokens/s; logged to
    MLflow (experiment cinerec-explanations)."""
    from rich.console import Console
    from rich.table import Table

    from app.services.explanation_quality import evaluate_explanations as run
    from ml.llm.faithfulness import KINDS

    settings = get_settings()
    ensure_schema(settings, migrate=False)
    reports = run(settings, pairs=pairs, seed=seed, versions=version or None)
    table = Table(title=f"explanations of {reports[0].pairs} users' top recommendation")
    columns = ["unsupported", *KINDS, "LLM share", "evidence use", "served unsupported", "words", "tokens/s"]
    table.add_column("model")
    for c in columns:
        table.add_column(c, justify="right")
    for r in reports:
        table.add_row(
            r.model,
            f"{r.unsupported:.1%}",
            *(f"{r.by_kind[k]:.1%}" for k in KINDS),
            f"{r.llm_share:.1%}",
            f"{r.evidence_use:.1%}",
            f"{r.served_unsupported:.1%}",
            f"{r.mean_words:.1f}",
            f"{r.tokens_per_second:.1f}",
        )
    console = Console(width=220)
    console.print(table)
    for r in reports:
        for e in r.examples[:examples]:
            console.print(
                f"[{r.model}] {e['raw']}\n   claims: {e['claims'] or 'none'}\n   served: {e['served']}"
            )
