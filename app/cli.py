"""The ``cinerec`` command line."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.llm_cli import llm_app
from app.settings import Settings, get_settings

if TYPE_CHECKING:
    from ml.training import TrainConfig, TrainData

app = typer.Typer(help="cinerec: movie recommendations over GraphQL.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
data_app = typer.Typer(help="MovieLens data: download and ingest.", no_args_is_help=True)
users_app = typer.Typer(help="Logins and roles.", no_args_is_help=True)
schema_app = typer.Typer(help="The GraphQL schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(data_app, name="data")
app.add_typer(users_app, name="users")
app.add_typer(schema_app, name="schema")
app.add_typer(llm_app, name="llm")

log = logging.getLogger("cinerec")


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code)


async def _revision_gap(settings: Settings) -> tuple[str | None, str | None]:
    from app.db import create_engine
    from app.migrate import current_revision, head_revision

    engine = create_engine(settings)
    try:
        return await current_revision(engine), head_revision(settings)
    finally:
        await engine.dispose()


def ensure_schema(settings: Settings, *, migrate: bool) -> None:
    """Run pending migrations, or refuse with a clear message when ``migrate`` is off."""
    from app.migrate import upgrade

    current, head = asyncio.run(_revision_gap(settings))
    if current == head:
        return
    if not migrate:
        raise _fail(
            f"database schema is at revision {current or 'none'} but this cinerec needs {head}: "
            "run `cinerec db upgrade` (or start with CINEREC_AUTO_MIGRATE=true)",
            code=3,
        )
    log.info("migrating database from %s to %s", current or "empty", head)
    upgrade(settings)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes.")] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
    migrate: Annotated[
        bool | None, typer.Option(help="Run pending migrations first (default: CINEREC_AUTO_MIGRATE).")
    ] = None,
) -> None:
    """Serve the GraphQL API (GraphiQL at /graphql) with uvicorn."""
    import uvicorn

    settings = get_settings()
    ensure_schema(settings, migrate=settings.auto_migrate if migrate is None else migrate)
    typer.echo(
        f"cinerec serving GraphQL at http://{host}:{port}/graphql ({settings.database_url.split(':')[0]})"
    )
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=access_log,
        # SIGTERM: stop accepting, let in-flight requests finish, but never wait forever
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
    )


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from app.migrate import upgrade

    upgrade(get_settings(), revision)
    typer.echo("database schema is up to date")


@db_app.command("current")
def db_current() -> None:
    """Print the database's schema revision and the newest one."""
    current, head = asyncio.run(_revision_gap(get_settings()))
    typer.echo(f"current: {current or 'none'}  newest: {head}")


@data_app.command("download")
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
        raise _fail(f"download failed: {exc}") from exc
    typer.echo(str(folder))


@data_app.command("ingest")
def data_ingest(
    directory: Annotated[Path, typer.Argument(help="A folder in the ml-25m CSV layout.")],
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Load the valid rows; write the rejected ones to a file.")
    ] = False,
    reject_file: Annotated[
        Path | None, typer.Option(help="Where --skip-invalid writes rejected rows.")
    ] = None,
    migrate: Annotated[bool, typer.Option(help="Run pending migrations first.")] = True,
) -> None:
    """Load a MovieLens folder into the database in one transaction (re-runnable)."""
    from app.db import create_engine
    from app.services.ingest import IngestError, ingest
    from ml.data.movielens import DatasetError

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

    try:
        asyncio.run(run())
    except (IngestError, DatasetError) as exc:
        raise _fail(str(exc), code=2) from exc


def _create_account(email: str, password: str, *, admin: bool, user_id: int | None) -> None:
    from app.auth import PasswordHasher, Role
    from app.db import create_engine, session_factory
    from app.errors import CinerecError
    from app.services.accounts import create_account

    settings = get_settings()
    ensure_schema(settings, migrate=True)

    async def run() -> int:
        engine = create_engine(settings)
        hasher = PasswordHasher()
        try:
            async with session_factory(engine)() as session:
                principal = await create_account(
                    session=session,
                    hasher=hasher,
                    email=email,
                    password=password,
                    role=Role.ADMIN if admin else Role.USER,
                    user_id=user_id,
                )
                return principal.user_id
        finally:
            hasher.close()
            await engine.dispose()

    try:
        uid = asyncio.run(run())
    except CinerecError as exc:
        raise _fail(exc.message, code=2) from exc
    typer.echo(f"created {'admin' if admin else 'user'} login {email} for user {uid}")


@users_app.command("create-admin")
def users_create_admin(
    email: Annotated[str, typer.Option()],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
) -> None:
    """Create an admin login (a new user)."""
    _create_account(email, password, admin=True, user_id=None)


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option()],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
    user_id: Annotated[
        int | None, typer.Option(help="Link the login to this existing MovieLens user.")
    ] = None,
) -> None:
    """Create a user login, for a new user or an existing MovieLens user."""
    _create_account(email, password, admin=False, user_id=user_id)


def _change_account(email: str, change: str) -> None:
    """Change or delete a login, then tell running servers so its tokens follow at once."""
    from app.announcements import ACCOUNTS, publish_sync
    from app.auth import Role
    from app.db import create_engine, session_factory
    from app.errors import CinerecError
    from app.services.accounts import delete_account, set_role

    settings = get_settings()
    ensure_schema(settings, migrate=True)

    async def run() -> int:
        engine = create_engine(settings)
        try:
            async with session_factory(engine)() as session:
                if change == "delete":
                    return await delete_account(session=session, email=email)
                return await set_role(session=session, email=email, role=Role(change))
        finally:
            await engine.dispose()

    try:
        account_id = asyncio.run(run())
    except CinerecError as exc:
        raise _fail(exc.message, code=2) from exc
    publish_sync(settings, ACCOUNTS, {"accountId": account_id})
    typer.echo(f"{'deleted' if change == 'delete' else f'role {change} for'} login {email}")


@users_app.command("set-role")
def users_set_role(
    email: Annotated[str, typer.Option()],
    role: Annotated[str, typer.Option(help="user or admin")],
) -> None:
    """Change a login's role; its tokens carry the new role on their next request."""
    if role not in ("user", "admin"):
        raise _fail("--role must be user or admin", code=2)
    _change_account(email, role)


@users_app.command("delete")
def users_delete(email: Annotated[str, typer.Option()]) -> None:
    """Delete a login (the MovieLens user and ratings stay); its tokens stop working."""
    _change_account(email, "delete")


def _train_config(epochs: int, components: int, seed: int, tune: bool, eval_users: int | None) -> TrainConfig:
    from ml.training import TrainConfig

    return TrainConfig(epochs=epochs, components=components, seed=seed, tune=tune, eval_users=eval_users)


def _load_data(settings: Settings) -> TrainData:
    from app.db import create_engine
    from app.services.training_data import load_train_data

    async def run() -> TrainData:
        engine = create_engine(settings)
        try:
            return await load_train_data(engine=engine)
        finally:
            await engine.dispose()

    data = asyncio.run(run())
    if data.ratings.empty:
        raise _fail("no ratings in the database: run `cinerec data ingest DIR` first", code=2)
    return data


def _print_table(metrics: dict[str, dict[str, float]]) -> None:
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


def _flat(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """Hybrid metrics under their own names, the baselines' prefixed by model."""
    out = dict(metrics["hybrid"])
    for name, row in metrics.items():
        if name != "hybrid":
            out.update({f"{name}.{k}": v for k, v in row.items()})
    return out


def _log_wandb(settings: Settings, name: str, params: dict, metrics: dict[str, float]) -> None:
    from ml.tracking import log_wandb

    try:
        where = log_wandb(
            project="cinerec",
            name=name,
            config=params,
            metrics=metrics,
            directory=settings.home / "wandb",
            api_key=settings.wandb_api_key,
        )
        log.info("W&B run: %s", where)
    except Exception as exc:  # tracking is a side channel: a W&B failure must not lose the model
        log.warning("W&B logging failed: %s", exc)


EpochsOption = Annotated[int, typer.Option(help="LightFM epochs.")]
ComponentsOption = Annotated[int, typer.Option(help="LightFM latent dimensions.")]
SeedOption = Annotated[int, typer.Option(help="Seed of the split and the models.")]
TuneOption = Annotated[bool, typer.Option(help="Choose blending weights on a validation split.")]
EvalUsersOption = Annotated[int | None, typer.Option(help="Evaluate on a sample of this many users.")]


@app.command()
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
) -> None:
    """Evaluate popularity, EASE, LightFM and the hybrid on one held-out split; log to MLflow."""
    from ml.training import train as fit

    settings = get_settings()
    ensure_schema(settings, migrate=True)
    data = _load_data(settings)
    result = fit(
        data,
        _train_config(epochs, components, seed, tune, eval_users),
        evaluate_only=True,
        keep_evaluation=rerank_users > 0,
    )
    _print_table(result.metrics)
    from app.serving import registry_for

    metrics = _flat(result.metrics)
    if rerank_users > 0:
        from app.llm_cli import evaluate_rerank_cli

        metrics.update(evaluate_rerank_cli(settings, data, result, rerank_users, seed))
    run_id, _ = registry_for(settings).log_run(
        experiment="cinerec-evaluation",
        params={**result.params, "weights": result.weights, "rerank_users": rerank_users},
        metrics=metrics,
    )
    _log_wandb(settings, f"evaluate-{run_id[:8]}", result.params, metrics)
    typer.echo(f"blend weights {result.weights}; MLflow run {run_id}; timings {result.timings}")


@app.command()
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
) -> None:
    """Train the hybrid on the database's ratings, evaluate it, register a new version in MLflow."""
    import tempfile

    from app.serving import register_version, registry_for
    from ml.registry import CHAMPION, RECOMMENDER
    from ml.training import train as fit

    settings = get_settings()
    ensure_schema(settings, migrate=True)
    if if_missing and (existing := registry_for(settings).alias_version(RECOMMENDER, CHAMPION)):
        typer.echo(f"{RECOMMENDER} version {existing} is the champion already: not training")
        return
    result = fit(_load_data(settings), _train_config(epochs, components, seed, tune, eval_users), refit=refit)
    assert result.model is not None
    _print_table(result.metrics)
    registry = registry_for(settings)
    params = {**result.params, "weights": result.weights, "refit": refit}
    with tempfile.TemporaryDirectory() as tmp:
        result.model.save(Path(tmp))
        run_id, source = registry.log_run(
            experiment=RECOMMENDER, params=params, metrics=_flat(result.metrics), artifacts=Path(tmp)
        )
    assert source is not None
    version, champion = register_version(
        settings, registry, RECOMMENDER, source=source, run_id=run_id, promote=promote
    )
    _log_wandb(settings, f"train-v{version}", params, _flat(result.metrics))
    state = (
        "serving (champion)" if champion == version else f"registered; champion is still version {champion}"
    )
    typer.echo(f"{RECOMMENDER} version {version}: {state}; MLflow run {run_id}; timings {result.timings}")


@schema_app.command("export")
def schema_export(
    output: Annotated[Path, typer.Option(help="Where to write the SDL.")] = Path("schema.graphql"),
) -> None:
    """Write the GraphQL schema as SDL (committed as schema.graphql for frontend teams)."""
    from graphql_schema.schema import build_schema

    output.write_text(build_schema(get_settings()).as_str() + "\n")
    typer.echo(f"wrote {output}")


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    app()
