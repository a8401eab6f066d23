"""Kill a real `micropen run` at random points, many times, against one pen that outlives the
hosts; run `micropen status` in between. The treatment log must hold exactly the strokes the
pen counted (its lifetime counter), and every run must have an outcome.

Before sessions, the next host acknowledged the killed host's run reports during its handshake,
before its recorder had a session, and `micropen status` had no recorder at all: over 30 kills
the pen delivered 5,038 strokes and the log held 1.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from micropen.host import open_pen
from micropen.host.treatment_log import TreatmentLog
from micropen.protocol.messages import PenState

KILLS = 10
CLI = [sys.executable, "-m", "micropen.tools.cli"]


@pytest.fixture
def served_pen() -> Iterator[str]:
    """One simulated pen in a process of its own, on TCP: it outlives every host."""
    proc = subprocess.Popen(
        [*CLI, "sim", "serve", "--tcp", "0", "--seed", "21"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().split()[0]
        yield f"socket://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _status(url: str) -> dict[str, object]:
    done = subprocess.run(
        [*CLI, "status", "--pen", url, "--json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    status: dict[str, object] = json.loads(done.stdout)
    return status


def _settle(url: str) -> None:
    """Wait for the pen to come to rest (its watchdog stops a run whose host died), then clear
    the latched fault so the next run may start."""
    deadline = time.monotonic() + 10
    with open_pen(url) as pen:
        while pen.status().state not in (PenState.IDLE, PenState.FAULT):
            assert time.monotonic() < deadline, "the pen did not come to rest"
            time.sleep(0.05)
        if pen.status().state is PenState.FAULT:
            pen.clear_fault()


@pytest.mark.slow
def test_killed_hosts_leave_a_log_that_matches_the_pens_counter(served_pen: str) -> None:
    rng = random.Random(10)
    run = [*CLI, "run", "--pen", served_pen, "--depth", "0.5", "--speed", "90"]
    run += ["--area", "forehead", "--seconds", "3", "--json"]
    killed = 0
    for _ in range(KILLS):
        proc = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.8))  # handshake, set-up, mid-run or at its end
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(10)
        _status(served_pen)  # a short-lived host in between: it records what it is handed
        _settle(served_pen)
    assert killed >= KILLS // 2, "the random points should land inside sessions"
    lifetime = _status(served_pen)["lifetime_strokes"]
    with TreatmentLog(Path(os.environ["MICROPEN_HOME"]) / "treatment.sqlite") as log:
        log.check()
        runs = [r for s in log.sessions(limit=1000) for r in log.session(s.id).runs]
    assert runs and all(r.outcome is not None for r in runs), [
        (r.run_id, r.outcome) for r in runs if r.outcome is None
    ]
    assert len({(r.boot_id, r.run_id) for r in runs}) == len(runs)
    assert sum(r.strokes or 0 for r in runs) == lifetime
