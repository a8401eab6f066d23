"""``micropen monitor`` prints the same lines whether the pen batches its telemetry or not."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from micropen.protocol.messages import PenState, Telemetry
from micropen.tools.cli import app
from micropen.tools.present import telemetry_document


def _monitor(pen: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    monkeypatch.setenv("MICROPEN_HOME", str(tmp_path))
    result = CliRunner().invoke(
        app, ["monitor", "--rate", "100", "--count", "40", "--json", "--pen", pen]
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_monitor_lines_are_the_same_with_batches_or_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batched = _monitor("sim://?seed=5", tmp_path / "a", monkeypatch)
    singles = _monitor("sim://?seed=5&telemetry_batch=0", tmp_path / "b", monkeypatch)
    keys = set(telemetry_document(Telemetry(0, PenState.IDLE, 0, 0, 0, 0, 0, 0, 0, 0)))
    for lines in (batched, singles):
        assert len(lines) >= 40
        assert all(set(line) == keys for line in lines)
        steps = {b["t_ms"] - a["t_ms"] for a, b in itertools.pairwise(lines)}
        assert steps == {10}, "a sample missing, doubled or out of order"
        assert all(line["state"] == "idle" for line in lines)
