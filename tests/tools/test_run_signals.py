"""Ctrl-C and SIGTERM to a real `micropen run`, over a real pty and a real TCP socket.

Before: the process exited 130 in ~60 ms without sending Stop; the pen ran on until its
watchdog fired and stayed latched in a WATCHDOG fault, and the log row kept 0 strokes. Now the
pen is stopped (urgent Stop, acknowledged), left idle with no fault, the CLI prints the pen's
own count and the log row holds it.

The child starts with default signal dispositions (a background job of a non-interactive shell
would ignore SIGINT). Waits are for conditions (the run's row in the log, the process exit),
each with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from micropen.host import open_pen
from micropen.protocol.messages import FaultCode, PenState, RunOutcome

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
STOP_BOUND_S = 5.0  # the process is gone, the pen stopped, within this


@pytest.fixture(params=["tcp", "pty"])
def served_pen(request: pytest.FixtureRequest) -> Iterator[str]:
    args = ["--tcp", "0"] if request.param == "tcp" else ["--pty"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "micropen.sim.serve", *args, "--seed", "31"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        where = proc.stdout.readline().split()[0]
        yield f"socket://127.0.0.1:{where}" if request.param == "tcp" else where
    finally:
        proc.terminate()
        proc.wait(10)


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _wait_for_running_row(db: Path, proc: subprocess.Popen[str], deadline: float) -> None:
    while True:
        assert proc.poll() is None, "micropen run ended before it was interrupted"
        assert time.monotonic() < deadline, "the run never started"
        if db.exists():
            with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(db) as conn:
                if conn.execute("SELECT count(*) FROM runs").fetchone()[0]:
                    return  # (before that, the tables may not even exist yet)
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_stops_the_pen_and_reports_its_count(
    served_pen: str, sig: signal.Signals
) -> None:
    db = Path(os.environ["MICROPEN_HOME"]) / "treatment.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "micropen.tools.cli", "run", "--pen", served_pen, "--depth",
         "0.5", "--speed", "90", "--area", "forehead", "--seconds", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals,
    )  # fmt: skip
    _wait_for_running_row(db, proc, time.monotonic() + 30)
    time.sleep(0.3)  # let it deliver strokes: the count must be the pen's, not zero
    sent = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=STOP_BOUND_S)
    assert time.monotonic() - sent < STOP_BOUND_S
    assert proc.returncode == EXIT_CODES[sig], err
    assert "Traceback" not in err and "destroyed but it is pending" not in err
    match = re.search(r"stopped after ([\d,]+) strokes", err)
    assert match, err
    printed = int(match.group(1).replace(",", ""))
    with open_pen(served_pen, log=False) as pen:
        status = pen.status()
    assert status.state in (PenState.IDLE, PenState.STOPPING)
    assert status.fault is FaultCode.NONE  # stopped by the host, not by its watchdog
    assert status.run_outcome is RunOutcome.STOPPED
    assert printed == status.run_strokes > 0
    with sqlite3.connect(db) as conn:
        [(strokes, outcome)] = conn.execute("SELECT strokes, outcome FROM runs").fetchall()
    assert (strokes, outcome) == (printed, "STOPPED")
