"""Weights & Biases logging, offline unless an API key is configured."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)


def log_wandb(
    *,
    project: str,
    name: str,
    config: dict[str, Any],
    metrics: dict[str, float],
    directory: Path,
    api_key: str | None,
) -> str | None:
    """One W&B run with ``config`` and ``metrics``; returns its local folder (offline) or URL."""
    import wandb

    directory.mkdir(parents=True, exist_ok=True)
    mode: Literal["online", "offline"] = "online" if api_key else "offline"
    if api_key:
        wandb.login(key=api_key, verify=False)
    run = wandb.init(
        project=project,
        name=name,
        config=config,
        dir=str(directory),
        mode=mode,
        settings=wandb.Settings(silent=True),
    )
    try:
        run.log({k: v for k, v in metrics.items() if v == v})
        where = run.url if api_key else str(directory / "wandb")
    finally:
        run.finish()
    return where
