"""``micropen calibrate …`` and ``micropen cal …`` through typer's test runner (in-process:
the JSON contract, prompts, options); test_cli_commands.py drives the installed command."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from micropen.tools.cal_cli import cal_app, calibrate_app

EPOCH = date(1970, 1, 1)
TODAY_DAY = (date.today() - EPOCH).days  # the CLI dates instruments by the real calendar
SIM = f"sim://?seed=3&today_day={TODAY_DAY}"
JSON_KEYS = {
    "outcome",
    "as_found_max_error_mm",
    "as_left_max_error_mm",
    "as_left_max_expanded_uncertainty_mm",
    "certificate",
    "certificate_number",
    "conditional",
    "decision_rule",
    "simulation",
    "simulated_parts",
    "signed_by",
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _one_json_line(stdout: str) -> dict[str, object]:
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    data: dict[str, object] = json.loads(lines[0])
    return data


def test_calibrate_all_json_contract_then_history_and_due(
    runner: CliRunner, tmp_path: Path
) -> None:
    db, out = tmp_path / "cal.sqlite", tmp_path / "certs"
    result = runner.invoke(
        calibrate_app,
        ["all", "--pen", SIM, "--gauge", "sim", "--technician", "A. Tech", "--station", "B1",
         "--out", str(out), "--db", str(db), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = _one_json_line(result.stdout)
    assert data.keys() >= JSON_KEYS
    assert data["outcome"] == "pass" and data["conditional"] is False
    assert data["as_found_max_error_mm"] > 0.1 >= 0.05 >= data["as_left_max_error_mm"]  # type: ignore[operator]
    assert 0 < data["as_left_max_expanded_uncertainty_mm"] < 0.005  # type: ignore[operator]
    assert data["decision_rule"] == {"rule": "non-binary", "guard_band": 1.0}
    assert data["simulation"] is True and data["signed_by"] is None
    assert str(data["certificate_number"]).startswith("MP-")
    pdf = Path(str(data["certificate"]))
    assert pdf.parent == out and pdf.read_bytes().startswith(b"%PDF")
    assert Path(str(data["record"])).exists()

    history = runner.invoke(
        cal_app, ["history", "--serial", "SIM-000003", "--db", str(db), "--json"]
    )
    assert history.exit_code == 0
    [row] = _one_json_line(history.stdout)["records"]  # type: ignore[misc]
    assert row["record_id"] == data["record_id"] and row["technician"] == "A. Tech"
    assert row["certificate_number"] == data["certificate_number"]
    due = runner.invoke(cal_app, ["due", "--db", str(db), "--json"])
    [pen] = _one_json_line(due.stdout)["pens"]  # type: ignore[misc]
    assert pen["serial"] == "SIM-000003" and pen["state"] == "ok" and pen["days_left"] == 365

    human = runner.invoke(cal_app, ["history", "--db", str(db)])
    assert human.exit_code == 0 and "SIM-000003" in human.stdout
    again = runner.invoke(
        cal_app, ["export", str(data["record_id"]), "--out", str(tmp_path / "x"), "--db", str(db)]
    )
    assert again.exit_code == 0 and (tmp_path / "x" / pdf.name).exists()


def test_verify_out_of_tolerance_exits_1_with_the_table(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        calibrate_app, ["verify", "--pen", SIM, "--db", str(tmp_path / "c.sqlite"),
                        "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.stdout and "as-found out of tolerance" in result.stdout
    assert "certificate MP-" in result.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--interval-days", "0"], "interval 0 days is outside 1–1825"),
        (["--gauge", "bogus://x"], "unknown instrument"),
        (["--override-instrument-due", "  "], "needs a reason"),
        (["--ambient-c", "95"], "ambient temperature 95.0 °C"),
        (["--readings", "1"], "readings per point 1 is outside 2–50"),
        (["--decision-rule", "strict"], "'strict' is not one of"),
        (["--guard-band", "-1"], "guard band factor -1.0"),
        (["--owner", "x" * 201], "owner"),
        (["--pen", "nosuch://x"], "unknown pen URL scheme"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    runner: CliRunner, tmp_path: Path, args: list[str], words: str
) -> None:
    result = runner.invoke(
        calibrate_app, ["depth", "--pen", SIM, "--db", str(tmp_path / "c.sqlite"), *args]
    )
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert not (tmp_path / "c.sqlite").exists()  # nothing recorded, nothing written


def test_overdue_instrument_exit_2_then_override_is_recorded(
    runner: CliRunner, tmp_path: Path
) -> None:
    old_bench = f"sim://?seed=3&today_day={TODAY_DAY - 400}"  # its instruments lapsed
    db = str(tmp_path / "c.sqlite")
    refused = runner.invoke(calibrate_app, ["depth", "--pen", old_bench, "--db", db, "--json"])
    assert refused.exit_code == 2 and "override-instrument-due" in refused.output
    assert refused.stdout == ""
    result = runner.invoke(
        calibrate_app,
        ["depth", "--pen", old_bench, "--db", db, "--json", "--out", str(tmp_path),
         "--override-instrument-due", "lab gauge out for repair; spare checked against block"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = _one_json_line(result.stdout)
    record = json.loads(Path(str(data["record"])).read_text())
    [gauge] = record["instruments"]
    assert gauge["overdue"] and gauge["override_reason"].startswith("lab gauge out")


IDENTITY = ["Mitutoyo", "543-790", "A123", "2099-01-31"]
CERTIFICATE = ["DKD-K-1-2025-0042", "Example Metrology", "2025-03-01", "0.002", "2", "0.001"]


def test_manual_gauge_prompts_for_identity_calibration_and_readings(
    runner: CliRunner, tmp_path: Path
) -> None:
    """A technician typing readings of a perfect unit: identity, the gauge's own certificate,
    then 3 readings per point (alternating ±1 µm: a repeatability to evaluate)."""
    points = ["0.25", "0.5", "1", "1.5", "2", "2.5"]
    readings = [f"{float(p) + d:.3f}" for p in points for d in (-0.001, 0.0, 0.001)]
    typed = [*IDENTITY, *CERTIFICATE, "oops", *readings, *readings]
    result = runner.invoke(
        calibrate_app,
        ["depth", "--pen", SIM, "--gauge", "manual", "--readings", "3",
         "--db", str(tmp_path / "c.sqlite"), "--out", str(tmp_path), "--json"],
        input="\n".join(typed) + "\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "'oops' is not a number" in result.output
    data = _one_json_line(result.stdout)
    assert data["outcome"] == "pass" and data["as_left_max_error_mm"] == 0.0
    # u_c = √((1 µm/√3)² + (2 µm/2)² + (0.5 µm/√3)²) = 1.19 µm; ν_eff = 36: k = 2.07
    assert data["as_left_max_expanded_uncertainty_mm"] == 0.0025
    assert data["simulated_parts"] == ["pen SIM-000003 (" + SIM + ")"]  # the gauge is real
    record = json.loads(Path(str(data["record"])).read_text())
    gauge = record["instruments"][0]
    assert (gauge["serial"], gauge["kind"], gauge["simulated"]) == ("A123", "manual", False)
    assert gauge["calibration"]["certificate"] == "DKD-K-1-2025-0042"


def test_manual_gauge_end_of_input_leaves_the_record_incomplete(
    runner: CliRunner, tmp_path: Path
) -> None:
    typed = [*IDENTITY, *CERTIFICATE, "0.25"]
    result = runner.invoke(
        calibrate_app,
        ["depth", "--pen", SIM, "--gauge", "manual", "--db", str(tmp_path / "c.sqlite"),
         "--out", str(tmp_path), "--json"],
        input="\n".join(typed) + "\n",
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    data = _one_json_line(result.stdout)
    assert data["outcome"] == "incomplete" and "standard input closed" in str(data["reason"])


@pytest.mark.parametrize(
    ("seed", "rule", "code", "outcome"),
    [
        (24, [], 4, "conditional_pass"),  # 2.5 mm: +0.0976 ± 0.0032 mm against ±0.1 mm
        (1, [], 4, "conditional_fail"),  # 2.5 mm: +0.1025 ± 0.0033 mm
        (24, ["--decision-rule", "simple"], 0, "pass"),  # U plays no part: shared risk
        (1, ["--decision-rule", "simple"], 1, "fail"),
        (24, ["--decision-rule", "guard-band"], 1, "fail"),  # binary: inside TL − U or fail
    ],
)
def test_conditional_results_exit_4_and_the_rule_decides(
    runner: CliRunner, tmp_path: Path, seed: int, rule: list[str], code: int, outcome: str
) -> None:
    """A conditional statement is neither a pass nor a fail to a script: exit 4, and the JSON
    says which; a conditional pass renews the due date, a conditional fail does not."""
    pen = f"sim://?seed={seed}&today_day={TODAY_DAY}"
    result = runner.invoke(
        calibrate_app,
        ["verify", "--pen", pen, "--db", str(tmp_path / "c.sqlite"), "--out", str(tmp_path),
         "--json", *rule],
    )  # fmt: skip
    assert result.exit_code == code, result.output
    data = _one_json_line(result.stdout)
    assert data["outcome"] == outcome and data["conditional"] is (code == 4)
    assert (data["next_due"] is not None) is (outcome in ("pass", "conditional_pass"))
