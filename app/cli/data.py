"""``cinerec data``: MovieLens download and ingest."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from app.infra.migrations import ensure_schema
from app.infra.settings import get_settings

app = typer.Typer(help="MovieLens data: download and ingest.", no_args_is_help=True)


def write_report(path: Path, report: dict[str, object]) -> None:
    """A command's outcome as JSON, for a pipeline to track (DVC's metrics and dependencies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


@app.command("download")
def data_download(
    name: Annotated[
        str | None, typer.Argument(help="ml-latest-small, ml-25m or ml-100k (default: CINEREC_DATASET)")
    ] = None,
    dest: Annotated[
        Path | None, typer.Option(help="Folder for the archive (default: CINEREC_HOME/data).")
    ] = None,
) -> None:
    """Download a MovieLens data set from GroupLens (checksum-verified, resumable)."""
    from ml.data.download import DownloadError, download

    settings = get_settings()
    try:
        folder = download(name or settings.dataset, dest or settings.home / "data", settings.dataset_base_url)
    except (DownloadError, OSError) as exc:
        raise DownloadError(f"download failed: {exc}") from exc
    typer.echo(str(folder))


@app.command("ingest")
def data_ingest(
    directory: Annotated[Path, typer.Argument(help="A folder in the ml-25m CSV layout.")],
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Load the valid rows; write the rejected ones to a file.")
    ] = False,
    reject_file: Annotated[
        Path | None, typer.Option(help="Where --skip-invalid writes rejected rows.")
    ] = None,
    migrate: Annotated[bool, typer.Option(help="Run pending migrations first.")] = True,
    report_file: Annotated[
        Path | None, typer.Option("--report", help="Write the counts as JSON here (the DVC pipeline's).")
    ] = None,
) -> None:
    """Load a MovieLens folder into the database in one transaction (re-runnable)."""
    from app.infra.database import create_engine
    from app.services.ingest import ingest

    settings = get_settings()
    ensure_schema(settings, migrate=migrate)
    rejects = (
        reject_file or settings.home / "rejects" / f"{directory.name}-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    )

    async def run() -> None:
        engine = create_engine(settings)
        try:
            report = await ingest(
                engine=engine, directory=directory, skip_invalid=skip_invalid, reject_file=rejects
            )
        finally:
            await engine.dispose()
        typer.echo(
            f"ingested {report.movies} movies, {report.ratings} ratings, {report.tags} tags, "
            f"{report.links} links, {report.users} users in {report.seconds:.1f} s"
        )
        if report.rejected:
            typer.echo(f"rejected {report.rejected} rows: see {report.reject_file}")
        if report_file is not None:
            counts = ("movies", "ratings", "tags", "links", "users", "genome_scores", "rejected")
            write_report(report_file, {name: getattr(report, name) for name in counts})

    asyncio.run(run())
    from app.infra.cache import bump_generation_sync

    bump_generation_sync(settings, "catalog", 0)  # cached catalog responses are stale now
