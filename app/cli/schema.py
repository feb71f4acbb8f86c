"""``cinerec schema``: the SDL committed for frontend teams."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.infra.settings import get_settings

app = typer.Typer(help="The GraphQL schema.", no_args_is_help=True)


@app.command("export")
def schema_export(
    output: Annotated[Path, typer.Option(help="Where to write the SDL.")] = Path("schema.graphql"),
) -> None:
    """Write the GraphQL schema as SDL (committed as schema.graphql for frontend teams)."""
    from graphql_schema.schema import build_schema

    output.write_text(build_schema(get_settings()).as_str() + "\n")
    typer.echo(f"wrote {output}")
