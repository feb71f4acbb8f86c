"""The drift check's subprocess is spawned without freezing the server's event loop.

uvloop spawns with fork(): while another thread was inside a BLAS call (the recommender
scores with numpy), a spawn could wait forever in OpenBLAS's pre-fork handler. It froze a
whole test session on a drift watcher's 5-second check, and a script spawning 40 times beside
a thread inverting matrices hung within 30 s in each try. ``run_command`` spawns with the
standard library instead."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.services.drift import run_command

SPAWNS = """
import asyncio, os, sys, threading
import numpy as np, uvloop
from app.services.drift import run_command

stop, inversions = threading.Event(), [0]

def blas():
    matrix = np.random.default_rng(0).random((1000, 1000)) + 10 * np.eye(1000)
    while not stop.is_set():
        np.linalg.inv(matrix)
        inversions[0] += 1

async def spawn_many():
    codes = []
    for _ in range(40):
        codes.append((await run_command(["true"], dict(os.environ)))[0])
        await asyncio.sleep(0.02)
    return codes

threading.Thread(target=blas, daemon=True).start()
with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
    before = inversions[0]
    codes = runner.run(spawn_many())
print(codes.count(0), inversions[0] - before, flush=True)
os._exit(0)  # the BLAS thread is still inside numpy: no interpreter shutdown around it
"""


def test_spawning_beside_a_blas_call_does_not_freeze_the_loop() -> None:
    # In a child interpreter: a frozen loop cannot be interrupted from inside the process,
    # so the parent's timeout is what fails the test instead of hanging the suite.
    try:
        done = subprocess.run(
            [sys.executable, "-c", SPAWNS], capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("40 spawns beside a BLAS thread did not finish in 120 s: the loop froze")
    assert done.returncode == 0, done.stderr[-2000:]
    spawned, inversions = map(int, done.stdout.split())
    assert spawned == 40
    assert inversions > 0  # the BLAS thread really was working while the loop spawned


def test_a_cancelled_command_is_killed_and_reaped(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    async def cancelled() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                run_command(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"], dict(os.environ)), 1.0
            )

    asyncio.run(cancelled())
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed, and waited for (no zombie left)
        os.kill(pid, 0)


def test_a_failing_command_reports_its_code_and_error() -> None:
    code, err = asyncio.run(run_command(["sh", "-c", "echo broken >&2; exit 3"], dict(os.environ)))
    assert (code, err.strip()) == (3, b"broken")
