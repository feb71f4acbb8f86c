"""The command line's usage mistakes: click's usage message and exit code 2, never a traceback,
for every command (walked from the app, so a new command is covered when it is added)."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import typer

from app.cli import app, main


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
