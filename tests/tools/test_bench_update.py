"""``micropen bench update --json``: one JSON document with positive figures for both
transports, each next to its raw floor (a small image, one run: a few seconds)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TRANSPORT_FIGURES = (
    "upload_kib_s", "upload_total_kib_s", "lockstep_kib_s", "raw_kib_s",
    "upload_over_raw_pct", "pipelining_speedup", "transfer_ms", "lockstep_transfer_ms",
    "raw_ms", "erase_wait_ms", "verify_wait_ms",
)  # fmt: skip


def _micropen() -> list[str]:
    """The installed console script (next to this interpreter, else on PATH)."""
    script = Path(sys.executable).with_name("micropen")
    found = str(script) if script.exists() else shutil.which("micropen")
    if found is None:
        pytest.fail("the micropen console script is not installed: pip install -e '.[test]'")
    return [found]


def test_bench_update_json_shape_and_figures() -> None:
    args = ["bench", "update", "--size", "16", "--repeat", "1", "--json"]
    done = subprocess.run([*_micropen(), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # exactly one JSON document, on one line
    figures = json.loads(lines[0])
    assert figures["size_kib"] == 16 and figures["repeat"] == 1
    assert figures["window"] >= 2  # the host's pipelined default; lock-step is measured too
    assert figures["chunk_bytes"] < figures["wire_frame_bytes"]
    for transport in ("pty", "usb"):
        for name in TRANSPORT_FIGURES:
            value = figures[f"{transport}_{name}"]
            assert isinstance(value, int | float) and value > 0, (transport, name, value)
        # the simulated flash erases (busy) at FwBegin and verifies (busy) at FwFinish
        assert figures[f"{transport}_busy_waits"] >= 2
        assert figures[f"{transport}_resumes"] == 0
        assert figures[f"{transport}_retransmits"] >= 0
        assert figures[f"{transport}_erase_wait_ms"] >= figures["sim_erase_ms"] * 0.9
    assert figures["sim_erase_ms"] > 0 and figures["sim_verify_ms"] > 0
    assert figures["smp_published_kb_s_low"] < figures["smp_published_kb_s_high"]
    assert figures["pty_upload_over_smp_high"] > figures["pty_total_over_smp_high"] > 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--size", "0"], "--size 0 is outside 1–256"),
        (["--size", "300"], "--size 300 is outside 1–256"),
        (["--repeat", "0"], "--repeat 0 is outside"),
        (["--window", "0"], "--window 0 is outside 1–64"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    done = subprocess.run(
        [*_micropen(), "bench", "update", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
