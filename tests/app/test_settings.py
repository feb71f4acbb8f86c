"""The settings object: defaults, the JWT secret, and production refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.infra.settings import Settings


def test_embedded_defaults(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'cinerec.db'}"
    assert settings.redis_url is None and settings.is_sqlite


def test_local_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = Settings(home=tmp_path).signing_secret()
    assert len(first) >= 32 and (tmp_path / "jwt_secret").stat().st_mode & 0o777 == 0o600
    assert Settings(home=tmp_path).signing_secret() == first


@pytest.mark.parametrize("secret", [None, "short", "changeme"])
def test_production_refuses_missing_or_weak_secret(tmp_path: Path, secret: str | None) -> None:
    with pytest.raises(ValidationError, match="CINEREC_JWT_SECRET"):
        Settings(env="production", home=tmp_path, jwt_secret=secret)


def test_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CINEREC_HOME", str(tmp_path))
    monkeypatch.setenv("CINEREC_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("CINEREC_REDIS_URL", "redis://127.0.0.1:6379/1")
    settings = Settings()
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.home == tmp_path and settings.redis_url == "redis://127.0.0.1:6379/1"
