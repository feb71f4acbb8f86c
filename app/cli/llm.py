"""``cinerec llm``: LoRA fine-tuning of the explainer/reranker and its registration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from app.infra.migrations import ensure_schema
from app.infra.settings import get_settings
from ml.llm.labelled import LABELLED

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
    report_file: Annotated[
        Path | None, typer.Option("--report", help="Write the version and its metrics as JSON here (DVC's).")
    ] = None,
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
    if report_file is not None:
        from app.cli.data import write_report

        write_report(
            report_file,
            {
                "version": outcome.version,
                "run_id": outcome.run_id,
                "steps": outcome.steps,
                "auc_base": outcome.auc_base,
                "auc_tuned": outcome.auc_tuned,
                "eval_pairs": outcome.eval_pairs,
                "metrics": outcome.metrics,
            },
        )


@app.command("evaluate-explanations")
def evaluate_explanations(
    pairs: Annotated[int, typer.Option(help="Users explained (each one's top recommendation).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the user sample.")] = 7,
    version: Annotated[
        list[str] | None, typer.Option(help="LLM versions to compare with the base model (default: all).")
    ] = None,
    examples: Annotated[int, typer.Option(help="Explanations to print per model.")] = 3,
    top: Annotated[int, typer.Option(help="Explain one of each user's top N, drawn at random.")] = 1,
    base: Annotated[bool, typer.Option(help="Also evaluate the base model.")] = True,
    dump: Annotated[
        Path | None, typer.Option(help="Write every output (facts, raw text, served text) as JSON lines.")
    ] = None,
    labelled: Annotated[
        Path, typer.Option(help="Hand-labelled outputs: the checker's precision and recall against them.")
    ] = LABELLED,
    checker: Annotated[
        bool, typer.Option(help="Measure the checker against the labelled outputs first.")
    ] = True,
    labelled_set: Annotated[
        str | None,
        typer.Option(help="Only the labelled outputs of this set (free, held, test, bf16)."),
    ] = None,
) -> None:
    """Faithfulness of the explanations, base model vs each adapter: unsupported claims by
    kind, the LLM's share of what would be served, evidence use, length, tokens/s; logged to
    MLflow (experiment cinerec-explanations). First, the checker against the hand-labelled
    outputs (--labelled): its precision and recall on their clauses. --pairs 0 stops there."""
    from rich.console import Console
    from rich.table import Table

    from app.services.explanation_quality import evaluate_explanations as run
    from ml.llm.faithfulness import KINDS

    console = Console(width=220)
    if checker:
        _print_checker_score(console, labelled, labelled_set)
    if not pairs:
        return
    settings = get_settings()
    ensure_schema(settings, migrate=False)
    reports = run(settings, pairs=pairs, seed=seed, versions=version or None, top=top, base=base)
    if dump is not None:
        with dump.open("w") as out:
            for r in reports:
                for o in r.outputs:
                    out.write(json.dumps(o) + "\n")
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
    console.print(table)
    for r in reports:
        for e in r.examples[:examples]:
            console.print(
                f"[{r.model}] {e['raw']}\n   claims: {e['claims'] or 'none'}\n   served: {e['served']}"
            )


def _print_checker_score(console: Any, path: Path, only: str | None = None) -> None:
    """The checker against hand labels: clause and output level, and what it misses."""
    from rich.table import Table

    from ml.llm.labelled import catalog_index, load, score

    items = [item for item in load(path) if only is None or item.labelled_set == only]
    if not items:
        raise typer.BadParameter(f"no labelled outputs in set {only!r} of {path}")
    result = score(items, catalog_index())
    where = f"{path.name}, set {only}" if only else path.name
    table = Table(title=f"the checker against {result.outputs} hand-labelled outputs ({where})")
    for column in ["", "labelled unsupported", "checker refuses", "both", "precision", "recall"]:
        table.add_column(column, justify="right")
    table.add_row(
        f"clauses ({result.clauses})",
        str(result.unsupported_clauses),
        str(result.refused_clauses),
        str(result.true_refusals),
        f"{result.precision:.1%}",
        f"{result.recall:.1%}",
    )
    table.add_row(
        f"outputs ({result.outputs})",
        f"{result.outputs_unsupported:.1%}",
        "",
        "",
        f"{result.text_precision:.1%}",
        f"{result.text_recall:.1%}",
    )
    console.print(table)
    console.print(
        f"served (the checker's cut, else the template): {result.llm_share:.1%} keep the model's words; "
        f"{result.served_unsupported:.1%} hold a clause a reader refuses"
    )
    for text, note in result.misses:
        console.print(f"  missed: {text!r} ({note})")
    for text, claims in result.false_alarms:
        console.print(f"  refused, labelled supported: {text!r} ({claims})")


@app.command("explanations-doc")
def explanations_doc(
    users: Annotated[int, typer.Option(help="Held-out users, one served explanation each.")] = 30,
    seed: Annotated[int, typer.Option(help="Seed of the user sample.")] = 11,
    top: Annotated[int, typer.Option(help="Explain one of each user's top N, drawn at random.")] = 3,
    out: Annotated[Path, typer.Option(help="Where the page goes.")] = Path("docs/explanations.md"),
    jsonl: Annotated[
        Path | None,
        typer.Option(help="Also write each served text split into sentences, to be labelled by hand."),
    ] = None,
) -> None:
    """Write what users read: served explanations (the serving LLM version's, after the
    checker, or the template's) for held-out users, each with its movie, evidence and source."""
    from app.infra.model_registry import registry_for
    from app.services.explanation_quality import evaluate_explanations as run
    from app.services.explanation_quality import explanations_page
    from ml.registry import CHAMPION, LLM

    settings = get_settings()
    ensure_schema(settings, migrate=False)
    champion = registry_for(settings).alias_version(LLM, CHAMPION)
    versions = [champion] if champion is not None else []
    reports = run(settings, pairs=users, seed=seed, versions=versions, top=top, base=not versions)
    out.write_text(explanations_page(reports[-1], settings, seed=seed, top=top))
    if jsonl is not None:
        from app.services.explanation_quality import to_label

        jsonl.write_text("".join(json.dumps(item) + "\n" for item in to_label(reports[-1], seed=seed)))
    typer.echo(f"{len(reports[-1].outputs)} explanations by {reports[-1].model} written to {out}")
