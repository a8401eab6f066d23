"""SIGKILL the real `micropen run` host process mid-session: the treatment log must open
cleanly and hold every run report the host received (committed before it acknowledged)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from micropen.host.treatment_log import TreatmentLog


@pytest.mark.slow
def test_sigkill_of_the_host_mid_session_leaves_a_clean_complete_log(tmp_path: Path) -> None:
    rng = random.Random(7)
    env = {**os.environ, "MICROPEN_HOME": str(tmp_path)}
    killed = 0
    for seed in range(4):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "micropen.tools.cli",
                "run",
                "--pen",
                f"sim://?seed={seed}",
                "--depth",
                "0.5",
                "--speed",
                "90",
                "--area",
                "forehead",
                "--strokes",
                "400",
                "--json",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 3.5))  # a random point: handshake, mid-run or after
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(10)
    assert killed >= 2, "the random points should land inside sessions"
    with TreatmentLog(tmp_path / "treatment.sqlite") as log:
        log.check()
        sessions = log.sessions()
        assert sessions, "sessions started before the kill are in the log"
        for summary in sessions:
            for run in log.session(summary.id).runs:
                if run.outcome == "COMPLETED":
                    assert run.strokes == 400  # an acknowledged report is stored whole
