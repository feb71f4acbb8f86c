"""Model versions in the MLflow registry: log a run, register a version, move aliases.

Artifacts are plain folders registered with ``create_model_version(source=<run artifact
uri>)`` (MLflow 3 refuses ``register_model('runs:/...')`` for a plain folder). Every alias
move is recorded in a registered-model tag so that ``rollback`` can return an alias to the
version it held before, across restarts and replicas.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

RECOMMENDER = "cinerec-recommender"
LLM = "cinerec-llm"
CHAMPION = "champion"
MODEL_PATH = "model"
RERANK_WEIGHT_TAG = "rerank_weight"  # on an LLM version: its validated rerank weight (warm users)
RERANK_WEIGHTS_TAG = "rerank_weights"  # on an LLM version: JSON, validated weight per user segment


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    aliases: list[str]
    metrics: dict[str, float]
    created_ms: int
    run_id: str | None
    source: str


class RegistryError(LookupError):
    pass


class Registry:
    """One MLflow tracking and registry store (a SQLite file locally, any MLflow URI in production)."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def ensure_store(self) -> None:
        """Create the store's tables now (a SQLite store makes them on first use: two workers
        starting together would race to)."""
        self.client.search_experiments(max_results=1)

    def experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        location = (self.artifact_root / name).as_uri() if self.artifact_root else None
        return str(self.client.create_experiment(name, artifact_location=location))

    def log_run(
        self,
        *,
        experiment: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        artifacts: Path | None = None,
        tags: dict[str, str] | None = None,
    ) -> tuple[str, str | None]:
        """(run id, artifact uri of ``artifacts`` logged under ``model/``)."""
        client = self.client
        run = client.create_run(self.experiment_id(experiment), tags=tags or {})
        run_id = run.info.run_id
        try:
            from mlflow.entities import Metric, Param

            now = int(run.info.start_time)
            client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v == v],  # skip NaN
                params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            )
            source = None
            if artifacts is not None:
                client.log_artifacts(run_id, str(artifacts), MODEL_PATH)
                source = f"{client.get_run(run_id).info.artifact_uri}/{MODEL_PATH}"
            client.set_terminated(run_id, "FINISHED")
        except Exception:
            client.set_terminated(run_id, "FAILED")
            raise
        return run_id, source

    def register(self, name: str, *, source: str, run_id: str, claim_champion: bool = True) -> str:
        """A new version of ``name``; it takes ``champion`` when no version holds it yet."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name)
        version = str(self.client.create_model_version(name, source=source, run_id=run_id).version)
        if claim_champion and self.alias_version(name, CHAMPION) is None:
            self.set_alias(name, CHAMPION, version)
        return version

    def alias_version(self, name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def _history(self, name: str, alias: str) -> list[str]:
        tags = self.client.get_registered_model(name).tags
        return list(json.loads(tags.get(f"alias_history.{alias}", "[]")))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version``, remembering where it pointed before."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_model_version(name, version)
        except MlflowException as exc:
            raise RegistryError(f"{name} has no version {version}") from exc
        previous = self.alias_version(name, alias)
        if previous == version:
            return
        history = self._history(name, alias) + ([previous] if previous else [])
        try:
            self.client.set_registered_model_alias(name, alias, version)
        except MlflowException as exc:  # an alias MLflow will not take
            raise RegistryError(f"MLflow refused the alias {alias!r}: {exc.message}") from exc
        self.client.set_registered_model_tag(name, f"alias_history.{alias}", json.dumps(history[-50:]))

    def rollback(self, name: str, alias: str) -> str:
        """Return ``alias`` to the version it held before its last move; the new version."""
        history = self._history(name, alias)
        if not history:
            raise RegistryError(f"{name}@{alias} has no earlier version to return to")
        version = history.pop()
        self.client.set_registered_model_tag(name, f"alias_history.{alias}", json.dumps(history))
        self.client.set_registered_model_alias(name, alias, version)
        return version

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        """The tags recorded on one version (e.g. the LLM's validated rerank weight)."""
        return dict(self.client.get_model_version(name, version).tags)

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, version, key, value)

    def versions(self, name: str) -> list[ModelVersionInfo]:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name='{name}'")
        except MlflowException:
            return []
        if not found:  # never registered: no registered model to read aliases from
            return []
        # search_model_versions leaves aliases out: take them from the registered model.
        by_version: dict[str, list[str]] = {}
        for alias, version in self.client.get_registered_model(name).aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        out = []
        for v in sorted(found, key=lambda v: int(v.version), reverse=True):
            metrics = self.client.get_run(v.run_id).data.metrics if v.run_id else {}
            out.append(
                ModelVersionInfo(
                    name=name,
                    version=str(v.version),
                    aliases=sorted(by_version.get(str(v.version), [])),
                    metrics=dict(metrics),
                    created_ms=int(v.creation_timestamp),
                    run_id=v.run_id,
                    source=v.source or "",
                )
            )
        return out

    def version(self, name: str, version: str) -> ModelVersionInfo:
        for info in self.versions(name):
            if info.version == version:
                return info
        raise RegistryError(f"{name} has no version {version}")

    def download(self, name: str, version: str, cache: Path) -> Path:
        """The version's artifact folder, downloaded once into ``cache``."""
        target = cache / name / version
        if (target / "meta.json").exists():
            return target
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        try:
            source = self.client.get_model_version(name, version).source
        except MlflowException as exc:
            raise RegistryError(f"{name} has no version {version}") from exc

        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=tmp, tracking_uri=self.tracking_uri
                )
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            local.rename(target)
        return target
