"""The command line's usage mistakes: click's usage message and exit code 2, never a traceback,
for every command (walked from the app, so a new command is covered when it is added)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from app.cli import app, main
from app.infra.model_registry import registry_for
from ml.registry import CHAMPION, RECOMMENDER
from tests.conftest import Databases, cli, ingest_into, settings_env
from tests.movielens_fixture import write_movielens


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (of the click typer bundles)
            found += _commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["cinerec", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out + captured.err


def test_every_command_is_walked() -> None:
    assert ("serve",) in COMMANDS and ("data", "ingest") in COMMANDS and len(COMMANDS) > 15


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_wrong_option_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    code, output = _run(monkeypatch, capsys, *command, "--no-such-option")
    assert code == 2, output
    assert "No such option" in output and "Traceback" not in output, output


@pytest.mark.parametrize(
    "args",
    [(), ("db",), ("data", "ingest"), ("frobnicate",), ("users", "set-role", "--role", "king")],
    ids=lambda a: " ".join(a) or "nothing",
)
def test_usage_mistakes_exit_2_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    code, output = _run(monkeypatch, capsys, *args)
    assert code == 2 and "Traceback" not in output, output


def test_train_with_an_alias_registers_a_challenger_without_promoting_it(
    databases: Databases, tmp_path: Path
) -> None:
    """The admin path on a demo: a second version under ``challenger`` for an experiment,
    the champion untouched; an alias that is not one is refused before any training."""
    settings = databases.settings("sqlite", llm_backend="none", wandb=True)
    write_movielens(tmp_path / "ml")
    ingest_into(settings, tmp_path / "ml")
    env = settings_env(settings)
    quick = ("--epochs", "2", "--no-tune", "--no-refit")
    assert "version 1: serving (champion)" in cli(env, "train", *quick).stdout
    # W&B without a key: an offline run under the home, with the training's metrics in it
    (run,) = (settings.home / "wandb" / "wandb").glob("offline-run-*")
    assert (run / f"run-{run.name.rsplit('-', 1)[-1]}.wandb").stat().st_size > 0
    refused = cli(env, "train", *quick, "--alias", "champion")
    assert refused.returncode == 2 and "use --promote" in refused.stderr
    second = cli(env, "train", *quick, "--alias", "challenger")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "version 2: registered as challenger; champion is still version 1" in second.stdout
    registry = registry_for(settings)
    assert registry.alias_version(RECOMMENDER, "challenger") == "2"
    assert registry.alias_version(RECOMMENDER, CHAMPION) == "1"
