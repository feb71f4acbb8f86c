"""The ``cinerec`` command line: thin commands over the services.

Each command parses its options and calls a service; domain errors are turned into a
message and an exit code here, in one place (``EXIT_CODES``).
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from app.cli import audit, data, db, llm, models, monitor, schema, serve, users
from app.infra.errors import CinerecError
from app.infra.migrations import SchemaBehind
from ml.data.errors import DatasetError, DownloadError
from ml.registry import RegistryError

app = typer.Typer(help="cinerec: movie recommendations over GraphQL.", no_args_is_help=True)
app.command()(serve.serve)
app.command()(models.train)
app.command()(models.evaluate)
app.add_typer(db.app, name="db")
app.add_typer(data.app, name="data")
app.add_typer(users.app, name="users")
app.add_typer(schema.app, name="schema")
app.add_typer(llm.app, name="llm")
app.add_typer(monitor.app, name="monitor")
app.add_typer(audit.app, name="audit")

# Most specific first: the first match decides the exit code.
EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (SchemaBehind, 3),
    (DatasetError, 2),
    (RegistryError, 2),
    (CinerecError, 2),  # bad input, missing data, nothing to train on
    (DownloadError, 1),
    (OSError, 1),
]


def _exit_code(error: BaseException) -> int | None:
    from app.services.ingest import IngestError

    if isinstance(error, IngestError):
        return 2
    return next((code for kind, code in EXIT_CODES if isinstance(error, kind)), None)


@app.callback()
def _options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress (INFO lines) too.")] = False,
) -> None:
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)


def main() -> None:
    """Run the command line. Usage mistakes are click's to report (its usage message, exit 2:
    typer raises the exceptions of the click it bundles, which only its standalone mode
    catches); domain errors are reported here with their exit codes."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        app()
    except Exception as exc:
        code = _exit_code(exc)
        if code is None:
            raise
        typer.secho(getattr(exc, "message", None) or str(exc), fg=typer.colors.RED, err=True)
        sys.exit(code)
