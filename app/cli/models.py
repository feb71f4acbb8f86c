"""``cinerec train`` and ``cinerec evaluate``: the recommender."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.infra.migrations import ensure_schema
from app.infra.settings import get_settings

if TYPE_CHECKING:
    from app.services.training import RerankOutcome
    from ml.training import RankerReport, TrainConfig

ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")  # a registry alias a person types
EpochsOption = Annotated[int, typer.Option(help="LightFM epochs.")]
ComponentsOption = Annotated[int, typer.Option(help="LightFM latent dimensions.")]
SeedOption = Annotated[int, typer.Option(help="Seed of the split and the models.")]
TuneOption = Annotated[bool, typer.Option(help="Choose blending weights on a validation split.")]
EvalUsersOption = Annotated[int | None, typer.Option(help="Evaluate on a sample of this many users.")]


RankerOption = Annotated[
    bool,
    typer.Option(
        help="Fit the learned ranker for users with few ratings on the validation split (with --tune); "
        "it serves the users it measurably helps on the held-out split."
    ),
]


def _config(
    epochs: int, components: int, seed: int, tune: bool, eval_users: int | None, ranker: bool = True
) -> TrainConfig:
    from ml.training import TrainConfig

    return TrainConfig(
        epochs=epochs, components=components, seed=seed, tune=tune, eval_users=eval_users, ranker=ranker
    )


def print_ranker(report: RankerReport | None) -> None:
    if report is None:
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="learned ranker for new users: nDCG@10, held-out split, histories cut")
    for column in ("users cut to", "users", "blend", "ranker", "gain", "95% interval"):
        table.add_column(column, justify="right")
    for g in report.gains:
        table.add_row(
            f"{g.ratings} rating{'s' if g.ratings > 1 else ''}",
            str(g.users),
            f"{g.without:.4f}",
            f"{g.with_ranker:.4f}",
            f"{g.gain:+.4f}",
            f"[{g.low:+.4f}, {g.high:+.4f}]",
        )
    Console(width=200).print(table)
    typer.echo(
        f"learned ranker: orders the lists of users with 1 to {report.up_to} ratings"
        if report.up_to
        else "learned ranker: serves no one (no cold segment gained with an interval above zero)"
    )


def print_table(metrics: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    columns = [c for c in next(iter(metrics.values())) if c != "validation_ndcg"]
    table = Table(title="held-out evaluation (per-user 75/25 split)")
    table.add_column("model")
    for c in columns:
        table.add_column(c, justify="right")
    for name, row in metrics.items():
        table.add_row(name, *(f"{row[c]:.4f}" for c in columns))
    Console(width=200).print(table)


def print_rerank(outcome: RerankOutcome) -> None:
    from rich.console import Console
    from rich.table import Table

    which = (
        f"cinerec-llm version {outcome.version}"
        if outcome.version
        else "the base LLM (no adapter registered)"
    )
    table = Table(title=f"rerank of the top 20 with {which}: nDCG@10 on the test half of each segment")
    for column in ("segment", "users (val/test)", "weight", "without", "with", "gain", "95% interval"):
        table.add_column(column, justify="right")
    for s in outcome.segments:
        table.add_row(
            s.segment,
            f"{s.users_validation}/{s.users_test}",
            f"{s.weight:g}",
            f"{s.ndcg_without:.4f}",
            f"{s.ndcg_with:.4f}",
            f"{s.gain:+.4f}",
            f"[{s.gain_low:+.4f}, {s.gain_high:+.4f}]",
        )
    Console(width=200).print(table)
    typer.echo(f"{outcome.seconds:.0f} s")
    if outcome.recorded:
        typer.echo(
            f"cinerec-llm version {outcome.version} now reranks with weights {outcome.served_weights()} "
            "(0: no rerank; a segment reranks only where its gain's interval is above 0)"
        )


def evaluate(
    epochs: EpochsOption = 30,
    components: ComponentsOption = 64,
    seed: SeedOption = 42,
    tune: TuneOption = True,
    eval_users: EvalUsersOption = None,
    rerank_users: Annotated[
        int,
        typer.Option(
            help="Also measure the LLM rerank of the top 20 on this many of the LLM's held-out users "
            "(0: skip). Sets the served rerank weight of the LLM champion to the validated one."
        ),
    ] = 0,
    ranker: RankerOption = True,
) -> None:
    """Evaluate popularity, EASE, LightFM and the hybrid on one held-out split; log to MLflow."""
    from app.services.training import TrainingService

    settings = get_settings()
    ensure_schema(settings, migrate=True)
    outcome = TrainingService(settings).evaluate(
        _config(epochs, components, seed, tune, eval_users, ranker), rerank_users=rerank_users
    )
    print_table(outcome.metrics)
    print_ranker(outcome.ranker)
    if outcome.rerank is not None:
        print_rerank(outcome.rerank)
    typer.echo(f"blend weights {outcome.weights}; MLflow run {outcome.run_id}; timings {outcome.timings}")


def train(
    promote: Annotated[bool, typer.Option(help="Make the new version the champion at once.")] = False,
    refit: Annotated[bool, typer.Option(help="Refit on every rating after the held-out evaluation.")] = True,
    epochs: EpochsOption = 30,
    components: ComponentsOption = 64,
    seed: SeedOption = 42,
    tune: TuneOption = True,
    eval_users: EvalUsersOption = None,
    if_missing: Annotated[
        bool, typer.Option("--if-missing", help="Do nothing when a champion exists.")
    ] = False,
    ranker: RankerOption = True,
    alias: Annotated[
        str | None,
        typer.Option(
            help="Give the new version this alias (a challenger for an experiment) without promoting it."
        ),
    ] = None,
    report_file: Annotated[
        Path | None,
        typer.Option("--report", help="Write the version, its data and its metrics as JSON here (DVC's)."),
    ] = None,
) -> None:
    """Train the hybrid on the database's ratings, evaluate it, register a new version in MLflow."""
    from app.infra.errors import BadUserInput
    from app.infra.model_registry import registry_for
    from app.services.training import TrainingService
    from ml.registry import CHAMPION, RECOMMENDER

    if alias is not None and (alias == CHAMPION or not ALIAS.fullmatch(alias)):
        raise BadUserInput(
            f"--alias {alias!r}: letters, digits, '-' and '_', and not {CHAMPION!r} (use --promote)",
            field="alias",
        )
    settings = get_settings()
    ensure_schema(settings, migrate=True)
    service = TrainingService(settings)
    if if_missing and (existing := service.champion(RECOMMENDER)):
        typer.echo(f"{RECOMMENDER} version {existing} is the champion already: not training")
        return
    outcome = service.train(
        _config(epochs, components, seed, tune, eval_users, ranker), refit=refit, promote=promote
    )
    print_table(outcome.metrics)
    print_ranker(outcome.ranker)
    if alias is not None:
        registry_for(settings).set_alias(RECOMMENDER, alias, outcome.version)
    state = (
        "serving (champion)"
        if outcome.champion == outcome.version
        else f"registered{f' as {alias}' if alias else ''}; champion is still version {outcome.champion}"
    )
    typer.echo(f"{RECOMMENDER} version {outcome.version}: {state}; MLflow run {outcome.run_id}")
    typer.echo(f"timings {outcome.timings}")
    if report_file is not None:
        from app.cli.data import write_report

        write_report(
            report_file,
            {
                "version": outcome.version,
                "run_id": outcome.run_id,
                "ratings_sha256": outcome.ratings_sha256,
                "weights": outcome.weights,
                "metrics": outcome.metrics,
            },
        )
