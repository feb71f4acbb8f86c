"""The app's way to the MLflow registry (``ml.registry`` speaks to MLflow): which store a
deployment uses, and registering a version so that running servers hear of a new champion."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.infra.announcements import PROMOTIONS, publish_sync
from ml.registry import CHAMPION, Registry

if TYPE_CHECKING:
    from app.infra.settings import Settings


def registry_for(settings: Settings) -> Registry:
    """The MLflow store of ``settings``. A local store keeps artifacts under ``home``; a
    tracking server (http) keeps them where it was told to (a shared store, proxied)."""
    remote = settings.mlflow_tracking_uri.startswith(("http://", "https://"))
    return Registry(settings.mlflow_tracking_uri, None if remote else settings.home / "mlartifacts")


def announce_sync(settings: Settings, model: str, version: str) -> None:
    """Tell running servers (through Redis, when configured) that ``model``'s champion moved."""
    publish_sync(settings, PROMOTIONS, {"model": model, "alias": CHAMPION, "version": version})


def register_version(
    settings: Settings, registry: Registry, name: str, *, source: str, run_id: str, promote: bool
) -> tuple[str, str | None]:
    """A new version of ``name``: the champion when ``promote`` or when none is yet. Running
    servers hear of a champion move. Returns (new version, champion now)."""
    before = registry.alias_version(name, CHAMPION)
    version = registry.register(name, source=source, run_id=run_id)
    if promote:
        registry.set_alias(name, CHAMPION, version)
    champion = registry.alias_version(name, CHAMPION)
    if champion != before and champion is not None:
        announce_sync(settings, name, champion)
    return version, champion
