"""``cinerec serve``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from app.infra.migrations import ensure_schema
from app.infra.settings import Settings, get_settings


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
    import logging.config

    import uvicorn

    settings = get_settings()
    if settings.log_format == "json":
        # every line one JSON object, from here on and in each worker: MLflow keeps its own
        # handler (another format) unless told not to configure logging
        os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    logging.config.dictConfig(logging_config(settings.log_format))
    ensure_schema(settings, migrate=settings.auto_migrate if migrate is None else migrate)
    if workers > 1:
        _share_metrics(settings)
        _share_cores(workers)
        from app.infra.model_registry import registry_for

        registry_for(settings).ensure_store()  # once, before the workers race to create it
    typer.echo(
        f"cinerec serving GraphQL at http://{host}:{port}/graphql ({settings.database_url.split(':')[0]})"
    )
    _announce_when_ready(host, port)
    uvicorn.run(
        "app.server.factory:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        log_config=logging_config(settings.log_format),
        access_log=access_log,
        **uvicorn_options(settings),
    )


def _announce_when_ready(host: str, port: int) -> None:
    """Print the web client's address once the server answers: the last line a person sees."""
    import threading
    import time
    import urllib.error
    import urllib.request

    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host

    def wait() -> None:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://{shown}:{port}/healthz", timeout=2) as answer:
                    ready = answer.status == 200
                if ready:
                    typer.echo(
                        f"\ncinerec is ready: open http://{shown}:{port}/ "
                        "(demo account: demo@cinerec.local, password demo-password)"
                    )
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)

    threading.Thread(target=wait, name="announce-ready", daemon=True).start()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How uvicorn must run cinerec, wherever it is started (``cinerec serve``, the tests)."""
    return {
        # SIGTERM: stop accepting, let in-flight requests finish, but never wait forever;
        # open websockets are told 1001 (going away) so that clients reconnect elsewhere
        "timeout_graceful_shutdown": int(settings.shutdown_timeout_seconds),
        "ws": "app.server.going_away:GoingAwayProtocol",
        # a websocket message is held to the HTTP body limit: uvicorn's default is 16 MiB, and the
        # frame is read whole before the app sees it
        "ws_max_size": settings.max_body_bytes,
        # X-Forwarded-For is believed by cinerec only from CINEREC_TRUSTED_PROXIES (app.server.callers);
        # uvicorn's own rewrite would trust it from 127.0.0.1 whatever the settings say
        "proxy_headers": False,
    }


def logging_config(log_format: str) -> dict:
    """Logging for every worker (uvicorn applies it in each): one handler on the root logger,
    text or one JSON object per line (python-json-logger; a record's extra fields become keys)."""
    text = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    formatter: dict = (
        {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
        if log_format == "json"
        else {"format": text}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["default"], "level": "INFO"},
        "loggers": {
            **{
                name: {"level": "INFO", "handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
            # Alembic's own set-up lines at every start say nothing; cinerec logs a migration
            "alembic": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }


def _share_cores(workers: int) -> None:
    """Each worker's numerical libraries get their share of the cores: with their default of
    one thread per core in every worker, scoring threads fought over the cores (open-loop p99
    at 200 recommendations/s: 961 ms with the default, 254 ms with one thread each, 2 workers
    on 2 cores; benchmarks/serving.py). An operator's own setting wins."""
    share = str(max(1, (os.cpu_count() or 1) // workers))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, share)


def _share_metrics(settings: Settings) -> None:
    """With several workers, each writes its metrics to files in one folder and /metrics
    merges them (prometheus-client's multiprocess mode, switched on by this variable)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder is None:
        folder = str(settings.home / "prometheus-multiproc")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    path = Path(folder)
    if path.exists():
        shutil.rmtree(path)  # counts of an earlier run's workers must not be summed in
    path.mkdir(parents=True)
