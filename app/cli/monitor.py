"""``cinerec monitor drift``: the ratings since the serving model's cut-off against its
training snapshot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.infra.migrations import ensure_schema
from app.infra.settings import get_settings

app = typer.Typer(help="Watch the serving model's data.", no_args_is_help=True)


@app.command()
def drift(
    version: Annotated[
        str | None,
        typer.Option(help="Recommender version whose snapshot is the reference (default: champion)."),
    ] = None,
    html: Annotated[Path | None, typer.Option(help="Write Evidently's HTML report here.")] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the report (decisions and Evidently's metrics) here.")
    ] = None,
    store: Annotated[
        bool, typer.Option(help="Store the report: the server's `drift` query and gauges show it.")
    ] = False,
) -> None:
    """Evidently's data drift report: rating value, genre, user activity, item popularity and
    new-user share of the ratings made since the model's data cut-off, against the sample of
    its training ratings stored with it. Exit 0 either way; 2 when there is nothing to compare."""
    from rich.console import Console
    from rich.table import Table

    from app.services import drift as service

    settings = get_settings()
    ensure_schema(settings, migrate=False)
    outcome = service.check(settings, version=version, keep=store)
    result = outcome.stored.result
    if html is not None:
        outcome.snapshot.save_html(str(html))
    if json_path is not None:
        json_path.write_text(
            json.dumps(
                {
                    "generatedAt": outcome.stored.generated_at,
                    "modelVersion": outcome.stored.model_version,
                    "since": outcome.since,
                    **result.as_dict(),
                    "evidently": outcome.snapshot.dict(),
                },
                indent=2,
                default=str,
            )
        )
    version = outcome.stored.model_version
    table = Table(
        title=f"drift of {result.current_rows} ratings since version {version}'s cut-off "
        f"against {result.reference_rows} training ratings"
    )
    for name in ("column", "method", "statistic", "threshold", "drifted"):
        table.add_column(name, justify="left" if name in ("column", "method") else "right")
    for c in result.columns:
        table.add_row(
            c.name, c.method, f"{c.statistic:.4f}", f"{c.threshold:.3g}", "yes" if c.drifted else "no"
        )
    console = Console(width=200)
    console.print(table)
    console.print(
        f"dataset drift: {'YES' if result.dataset_drift else 'no'} "
        f"({result.drift_share:.0%} of columns drifted; threshold {result.threshold:.0%})"
    )
