"""``micropen bench link`` refuses what it cannot measure: one line, exit 2, never a
traceback (``--estops -1`` used to end in a StatisticsError traceback with exit 0)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "micropen.tools.cli", "bench", "link"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--estops", "-1"], "--estops -1 must be at least 1"),
        (["--estops", "0"], "--estops 0 must be at least 1"),
        (["--rounds", "0"], "--rounds 0 must be at least 1"),
        (["--commands", "-5"], "--commands -5 must be at least 1"),
        (["--loss", "1.5"], "--loss 1.5 is not a probability"),
        (["--loss", "nan"], "is not a probability"),
        (["--loss", "0.01", "--telemetry-hz", "5000"], "outside 0–1000 Hz"),
        (["--loss", "0.01", "--window", "0"], "--window 0 must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
