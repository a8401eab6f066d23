"""The CLI's contract with scripts: JSON keys, exit codes, nothing sent on bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from micropen.protocol.messages import RunMode, RunOutcome, RunReport
from micropen.tools.cli import app


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("MICROPEN_HOME", str(tmp_path))
    monkeypatch.setenv("MICROPEN_PEN", "sim://?seed=5")
    return CliRunner()


def _json(output: str) -> dict:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one JSON line, got {lines!r}"
    return json.loads(lines[0])


def test_status_json_contract(cli: CliRunner) -> None:
    result = cli.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    data = _json(result.stdout)
    for key in ("serial", "firmware_version", "protocol_version", "needle_count"):
        assert key in data
    assert data["needle_count"] == 12
    assert data["serial"] == "SIM-000005"


def test_run_json_contract_and_log(cli: CliRunner) -> None:
    result = cli.invoke(
        app,
        [
            "run",
            "--depth",
            "0.5",
            "--speed",
            "90",
            "--area",
            "forehead",
            "--strokes",
            "120",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = _json(result.stdout)
    assert data["strokes_delivered"] == 120
    assert data["outcome"] == "completed"
    listed = _json(cli.invoke(app, ["log", "list", "--json"]).stdout)
    (session,) = listed["sessions"]
    assert session["strokes_delivered"] == 120
    detail = _json(cli.invoke(app, ["log", "show", str(session["id"]), "--json"]).stdout)
    assert detail["runs"][0]["strokes"] == 120
    assert detail["runs"][0]["cartridge_lot"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["--depth", "1.0", "--speed", "90", "--area", "forehead", "--strokes", "5"],
            "forehead maximum 0.75 mm",
        ),
        (["--depth", "1.8", "--speed", "90", "--area", "cheeks", "--strokes", "5"], "soft cap"),
        (
            ["--depth", "0.5", "--speed", "200", "--area", "forehead", "--strokes", "5"],
            "outside the pen's range 50–150",
        ),
        (
            ["--depth", "0.5", "--speed", "90", "--area", "elbow", "--strokes", "5"],
            "unknown treatment area",
        ),
        (
            ["--depth", "0.5", "--speed", "90", "--area", "forehead", "--strokes", "0"],
            "strokes 0 is outside",
        ),
        (["--depth", "0.5", "--speed", "90", "--area", "forehead"], "exactly one"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_sends_nothing(
    cli: CliRunner, args: list[str], fragment: str
) -> None:
    result = cli.invoke(app, ["run", *args, "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    message = result.stderr.strip()
    assert fragment in message.replace("\n", " ")
    # no pen was even opened: the treatment log has no session
    listed = _json(cli.invoke(app, ["log", "list", "--json"]).stdout)
    assert listed["sessions"] == []


def test_soft_cap_override_is_logged_with_reason(cli: CliRunner) -> None:
    result = cli.invoke(
        app,
        [
            "run",
            "--depth",
            "1.8",
            "--speed",
            "90",
            "--area",
            "cheeks",
            "--strokes",
            "50",
            "--override-soft-cap",
            "physician order 42",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    listed = _json(cli.invoke(app, ["log", "list", "--json"]).stdout)
    detail = _json(
        cli.invoke(app, ["log", "show", str(listed["sessions"][0]["id"]), "--json"]).stdout
    )
    assert detail["overrides"][0]["reason"] == "physician order 42"
    assert detail["runs"][0]["soft_cap_override_reason"] == "physician order 42"


def test_stop_and_estop(cli: CliRunner) -> None:
    stopped = _json(cli.invoke(app, ["stop", "--json"]).stdout)
    assert stopped["state"] in ("idle", "stopping")
    estopped = _json(cli.invoke(app, ["estop", "--json"]).stdout)
    assert estopped["state"] == "fault" and estopped["fault"] == "emergency_stop"


def test_monitor_streams_json_lines(cli: CliRunner) -> None:
    result = cli.invoke(app, ["monitor", "--rate", "50", "--count", "5", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) >= 5
    assert {"state", "depth_um", "run_strokes"} <= set(lines[0])


def test_log_export_csv_and_json(cli: CliRunner, tmp_path: Path) -> None:
    cli.invoke(
        app,
        [
            "run",
            "--depth",
            "0.5",
            "--speed",
            "90",
            "--area",
            "forehead",
            "--strokes",
            "30",
            "--json",
        ],
    )
    out = tmp_path / "csv"
    assert cli.invoke(app, ["log", "export", "--format", "csv", "--out", str(out)]).exit_code == 0
    assert (out / "runs.csv").read_text().count("\n") >= 2
    exported = cli.invoke(app, ["log", "export", "--format", "json"])
    assert json.loads(exported.stdout)["sessions"]


def test_pens_lists_the_simulator(cli: CliRunner) -> None:
    data = _json(cli.invoke(app, ["pens", "--json"]).stdout)
    assert {"url": "sim://", "kind": "simulator (built in)"} in data["pens"]


def test_connecting_to_a_pen_with_overdue_calibration_warns(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import date

    import micropen.tools.common as common
    from micropen.host.calibration.due import DueState, DueStatus
    from micropen.host.calibration.measurements import Quantity

    seen: list[str] = []

    def overdue(serial: str) -> DueStatus:
        seen.append(serial)
        return DueStatus(
            serial, DueState.OVERDUE, date(2026, 1, 1), -30, date(2025, 1, 1), Quantity.DEPTH, "r1"
        )

    monkeypatch.setattr(common, "check_due", overdue)
    result = cli.invoke(app, ["status", "--json"])
    assert result.exit_code == 0
    assert seen == ["SIM-000005"]  # asked about the connected pen
    assert "calibration overdue since 2026-01-01" in result.stderr.replace("\n", " ")
    assert json.loads(result.stdout)["serial"] == "SIM-000005"  # stdout stays one JSON line


@pytest.mark.parametrize(
    ("outcome", "fault"),
    [
        (RunOutcome.FAULT, "stall"),
        (RunOutcome.WATCHDOG, "watchdog"),
        (RunOutcome.STOPPED, None),
        (RunOutcome.CARTRIDGE_LIMIT, None),
    ],
)
def test_a_run_that_did_not_complete_exits_1_and_names_the_latched_fault(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, outcome: RunOutcome, fault: str | None
) -> None:
    """A script checking $? must not take a faulted or cut-short run for a treatment done."""
    from micropen.tools import pen_cli

    def ended(pen: Any, *args: Any, **kwargs: Any) -> RunReport:
        return RunReport(1, outcome, RunMode.STROKES, 1500, 247, 2250, 2, 500, 90, 7)

    monkeypatch.setattr(pen_cli, "_run_with_progress", ended)
    monkeypatch.setattr(pen_cli, "_latched_fault", lambda pen: fault)  # as the pen's status says
    args = ["run", "--depth", "0.5", "--speed", "90", "--area", "forehead", "--strokes", "1500"]
    result = cli.invoke(app, [*args, "--json"])
    assert result.exit_code == 1, result.output
    data = _json(result.stdout)
    assert (data["outcome"], data["strokes_delivered"], data["fault"]) == (
        outcome.name.lower(), 247, fault,
    )  # fmt: skip
    human = cli.invoke(app, args)
    assert human.exit_code == 1
    if fault is not None:
        assert f"latched {fault} fault" in human.stderr and "clear-fault" in human.stderr


def test_the_latched_fault_is_read_from_the_pen() -> None:
    from micropen.host import open_pen
    from micropen.tools.pen_cli import _latched_fault

    with open_pen("sim://?seed=5", log=False) as pen:
        assert _latched_fault(pen) is None
        pen.emergency_stop()
        assert _latched_fault(pen) == "emergency_stop"
