"""``micropen bench host-telemetry`` runs end to end and refuses what it cannot measure (a smoke
check with real processes and ptys: the figures themselves are benchmarks, not tests)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from micropen.tools.bench_host_telemetry import measure_host_telemetry

CLI = [sys.executable, "-m", "micropen.tools.cli", "bench", "host-telemetry"]


def test_host_cpu_is_measured_batched_single_and_against_the_floor() -> None:
    figures = measure_host_telemetry(seconds=0.6, hz=200, pens=1, warmup=0.3)
    for mode in ("batched", "singles"):
        assert figures[f"{mode}_samples_per_s_per_pen"] > 0, figures  # a rate, not a test
        assert figures[f"{mode}_missing"] == 0
        assert 0 < figures[f"{mode}_cpu_per_pen"] < 1
    assert figures["batched_batches"] > 0 and figures["singles_batches"] == 0
    # 200 Hz in frames of at most 8 samples, against one frame per sample
    assert figures["batched_frames_per_s_per_pen"] < 0.5 * figures["singles_frames_per_s_per_pen"]
    assert figures["floor_cpu_per_pen"] > 0
    assert figures["pens_per_core"] >= 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--hz", "0"], "--hz 0 is outside 1–1000 Hz"),
        (["--hz", "1001"], "--hz 1001 is outside 1–1000 Hz"),
        (["--pens", "0"], "--pens 0 is outside 1–32"),
        (["--seconds", "0.1"], "--seconds 0.1 is outside 0.5–600 s"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    done = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
