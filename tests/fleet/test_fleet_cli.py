"""``micropen fleet bridge|watch|command`` against a real broker (typer CliRunner), and the
last will of a bridge process that is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _fleet_helpers import OPERATOR, WATCHER, FleetBroker, password
from typer.testing import CliRunner

from micropen.tools.fleet_cli import app

runner = CliRunner()


def _secret(tmp_path: Path, user: str) -> str:
    path = tmp_path / f"{user}.pw"
    path.write_text(password(user) + "\n")
    path.chmod(0o600)
    return str(path)


def _watch(broker: FleetBroker, tmp_path: Path, site: str, *extra: str) -> list[dict]:  # type: ignore[type-arg]
    result = runner.invoke(
        app,
        ["watch", "--mqtt", broker.mosquitto.url, "--site", site, "--username", WATCHER,
         "--password-file", _secret(tmp_path, WATCHER), "--json", *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_bridge_runs_for_a_while_and_leaves_an_offline_status(
    fleet_broker: FleetBroker, tmp_path: Path
) -> None:
    serial = "SIM-000007"
    result = runner.invoke(
        app,
        ["bridge", "--pen", "sim://?seed=7", "--mqtt", fleet_broker.mosquitto.url,
         "--site", "cli", "--password-file", _secret(tmp_path, serial),
         "--queue-dir", str(tmp_path / "q"), "--telemetry-hz", "50", "--seconds", "1.0",
         "--calibration-due", "2031-02-03", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["event"] == "connected"
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["telemetry_batches"] >= 5
    assert summary["outbox"] == 0 and summary["connects"] == 1
    [view] = _watch(fleet_broker, tmp_path, "cli", "--count", "1")
    assert (view["serial"], view["online"], view["reason"]) == (serial, False, "bridge stopped")
    assert view["calibration_due"] is None  # an offline payload carries no pen fields


def test_bad_options_exit_2_naming_the_fix(fleet_broker: FleetBroker, tmp_path: Path) -> None:
    url = fleet_broker.mosquitto.url
    cases = [
        (["bridge", "--pen", "sim://", "--mqtt", "http://x"], "mqtt://HOST:PORT"),
        (["bridge", "--pen", "sim://", "--mqtt", url, "--allow", "run"], "operator holding"),
        (["bridge", "--pen", "sim://", "--mqtt", url, "--site", "a/b"], "topic levels"),
        (["bridge", "--pen", "sim://", "--mqtt", url, "--calibration-due", "soon"], "YYYY-MM-DD"),
        (["watch", "--mqtt", "mqtt://u:p@h"], "--password-file"),
    ]
    for argv, fix in cases:
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert fix in result.output.replace("\n", " "), (argv, result.output)


def test_bridge_with_a_wrong_password_exits_1(fleet_broker: FleetBroker, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("nope\n")
    result = runner.invoke(
        app,
        ["bridge", "--pen", "sim://?seed=7", "--mqtt", fleet_broker.mosquitto.url,
         "--password-file", str(wrong), "--queue-dir", str(tmp_path / "q"), "--seconds", "5"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "refused user 'SIM-000007'" in result.output.replace("\n", " ")


@pytest.fixture
def bridge_process(fleet_broker: FleetBroker, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """`micropen fleet bridge` in its own process (so it can be killed), once connected."""
    serial = "SIM-000008"
    proc = subprocess.Popen(
        [sys.executable, "-m", "micropen.tools.fleet_cli", "bridge", "--pen", "sim://?seed=8",
         "--mqtt", fleet_broker.mosquitto.url, "--site", "will",
         "--password-file", _secret(tmp_path, serial), "--queue-dir", str(tmp_path / "q"),
         "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        for line in proc.stdout:  # the bridge prints one JSON line per notice
            if json.loads(line)["event"] == "connected":
                break
            assert time.monotonic() < deadline
        else:
            pytest.fail(f"bridge exited: {proc.stderr.read() if proc.stderr else ''}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_watch_command_and_the_last_will_of_a_killed_bridge(
    fleet_broker: FleetBroker, tmp_path: Path, bridge_process: subprocess.Popen[str]
) -> None:
    [live] = _watch(fleet_broker, tmp_path, "will", "--count", "1")
    assert (live["serial"], live["online"], live["state"]) == ("SIM-000008", True, "IDLE")
    assert live["cartridge"] and live["link"] == "up"

    operator = ["--mqtt", fleet_broker.mosquitto.url, "--site", "will", "--serial", "SIM-000008",
                "--username", OPERATOR, "--password-file", _secret(tmp_path, OPERATOR)]  # fmt: skip
    status = runner.invoke(app, ["command", "status", *operator, "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["result"]["state"] == "IDLE"
    refused = runner.invoke(app, ["command", "run", *operator, "--arg", "strokes=10"])
    assert refused.exit_code == 1
    assert "refused (not-allowed)" in refused.output.replace("\n", " ")

    bridge_process.send_signal(signal.SIGKILL)  # no clean disconnect: the broker sends the will
    bridge_process.wait(10)
    deadline = time.monotonic() + 10
    while True:
        [view] = _watch(fleet_broker, tmp_path, "will", "--count", "1")
        if not view["online"] or time.monotonic() > deadline:
            break
    assert (view["online"], view["reason"]) == (False, "connection lost (last will)")


def test_watch_table_for_humans(fleet_broker: FleetBroker, tmp_path: Path) -> None:
    runner.invoke(
        app,
        ["bridge", "--pen", "sim://?seed=9", "--mqtt", fleet_broker.mosquitto.url,
         "--site", "table", "--password-file", _secret(tmp_path, "SIM-000009"),
         "--queue-dir", str(tmp_path / "q"), "--seconds", "0.3"],
    )  # fmt: skip
    result = runner.invoke(
        app,
        ["watch", "--mqtt", fleet_broker.mosquitto.url, "--site", "table", "--username",
         WATCHER, "--password-file", _secret(tmp_path, WATCHER), "--seconds", "0.5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "SIM-000009" in line)
    assert "table" in row and " no " in row and "stopped" in result.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_the_bridge_as_a_stop_not_a_failure(
    fleet_broker: FleetBroker, tmp_path: Path, signum: int
) -> None:
    """A service manager's SIGTERM was reported as an abnormal end (exit 143, status reason
    "bridge cancelled: CancelledError", no summary)."""
    serial, site = "SIM-000009", f"sig{signum}"  # a site of its own: one retained status
    proc = subprocess.Popen(
        [sys.executable, "-m", "micropen.tools.cli", "fleet", "bridge", "--pen", "sim://?seed=9",
         "--mqtt", fleet_broker.mosquitto.url, "--site", site,
         "--password-file", _secret(tmp_path, serial), "--queue-dir", str(tmp_path / "q"),
         "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line)["event"] == "connected":
                break
        else:
            pytest.fail(f"bridge exited: {proc.stderr.read() if proc.stderr else ''}")
        proc.send_signal(signum)
        rest, errors = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, errors
    events = [json.loads(line)["event"] for line in rest.splitlines()]
    assert events[-1] == "summary", rest
    [view] = _watch(fleet_broker, tmp_path, site, "--count", "1")
    assert (view["serial"], view["online"], view["reason"]) == (serial, False, "bridge stopped")


def test_command_results_in_words(fleet_broker: FleetBroker, tmp_path: Path,
                                  bridge_process: subprocess.Popen[str]) -> None:  # fmt: skip
    operator = ["--mqtt", fleet_broker.mosquitto.url, "--site", "will", "--serial", "SIM-000008",
                "--username", OPERATOR, "--password-file", _secret(tmp_path, OPERATOR)]  # fmt: skip
    status = runner.invoke(app, ["command", "status", *operator])
    assert status.exit_code == 0, status.output
    said = " ".join(status.output.split())
    assert "state idle" in said and " V" in said and "°C" in said and "'calibrated'" not in said
    stop = runner.invoke(app, ["command", "stop", *operator])
    assert stop.exit_code == 0 and "SIM-000008: stopped" in stop.output
