"""``micropen calibrate`` and ``micropen cal …`` driven as a technician drives them: the
installed command in a subprocess, with its own MICROPEN_HOME. Certificates land in the
certificates folder unless --out says otherwise; history shows record ids in 80 columns and
filters with --serial; a failed verify makes a pen "failed", not "ok"; signed certificates
verify and tampered ones do not; and bad input is one line on stderr with exit 2 (failure 1),
never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

CLI = [sys.executable, "-m", "micropen.tools.cli"]
TODAY_DAY = (date.today() - date(1970, 1, 1)).days  # the CLI dates instruments by the calendar
SIM = f"sim://?seed=3&today_day={TODAY_DAY}"


def run(home: Path, *args: str | Path, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MICROPEN_HOME": str(home), "COLUMNS": str(columns)}
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=120, env=env, cwd=home
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A station with a lab and a signatory's key; one signed `calibrate depth` (pass), then a
    `calibrate verify` of a fresh unit (fails): what a day on the bench leaves behind."""
    home = tmp_path_factory.mktemp("bench-home")
    template = run(home, "cal", "station", "--template")
    (home / "station.toml").write_text(template.stdout)
    signer = run(home, "cal", "signer", "init", "--name", "Dr. A. Reviewer",
                 "--role", "Head of laboratory", "--json")  # fmt: skip
    assert signer.returncode == 0, signer.stderr
    keys = json.loads(signer.stdout)
    sign = ["--sign-key", keys["key"], "--sign-cert", keys["certificate"]]
    calibrated = run(home, "calibrate", "depth", "--pen", SIM, "--technician", "A. Tech", *sign,
                     "--json")  # fmt: skip
    assert calibrated.returncode == 0, calibrated.stderr
    verified = run(home, "calibrate", "verify", "--pen", SIM, "--json")
    assert verified.returncode == 1, verified.stderr  # a fresh seed-3 unit is out of tolerance
    yield {
        "home": home,
        "keys": keys,
        "all": json.loads(calibrated.stdout),
        "verify": json.loads(verified.stdout),
    }


def test_certificates_go_to_the_certificates_folder(bench: dict[str, Any]) -> None:
    home, done = bench["home"], bench["all"]
    certificates = home / "certificates"
    assert Path(done["certificate"]).parent == certificates
    assert Path(done["record"]).parent == certificates
    assert done["certificate_number"] == f"EX-B2-{date.today().year}-00001"
    assert done["signed_by"] == "Dr. A. Reviewer"
    assert bench["verify"]["certificate_number"] == f"EX-B2-{date.today().year}-00002"
    Path(done["certificate"]).unlink()
    again = run(home, "cal", "export", done["certificate_number"], "--json")
    assert again.returncode == 0, again.stderr
    exported = json.loads(again.stdout)
    assert exported["certificate"] == done["certificate"]  # same folder, same name, same number
    assert exported["certificate_number"] == done["certificate_number"]


def test_a_failed_verify_makes_the_pen_failed_not_ok(bench: dict[str, Any]) -> None:
    due = run(bench["home"], "cal", "due", "--json")
    [pen] = json.loads(due.stdout)["pens"]
    assert (pen["serial"], pen["state"]) == ("SIM-000003", "failed")
    assert pen["record_id"] == bench["verify"]["record_id"]
    human = run(bench["home"], "cal", "due")
    assert "failed" in human.stdout and all(len(line) <= 80 for line in human.stdout.splitlines())


def test_history_shows_ids_in_80_columns_and_filters_by_serial(bench: dict[str, Any]) -> None:
    home = bench["home"]
    human = run(home, "cal", "history")
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), human.stdout
    for done in (bench["all"], bench["verify"]):
        assert done["record_id"][:8] in human.stdout
        assert done["certificate_number"] in human.stdout
    assert run(home, "cal", "export", bench["all"]["record_id"][:8], "--json").returncode == 0
    mine = json.loads(run(home, "cal", "history", "--serial", "SIM-000003", "--json").stdout)
    assert len(mine["records"]) == 2
    other = json.loads(run(home, "cal", "history", "--serial", "SIM-999999", "--json").stdout)
    assert other["records"] == []
    as_pen = run(home, "cal", "history", "--pen", "SIM-000003")  # --pen is a pen URL, always
    assert as_pen.returncode == 2 and "No such option: --pen" in as_pen.stderr
    assert "Traceback" not in as_pen.stderr


def test_the_calibrate_tables_fit_80_columns(bench: dict[str, Any], tmp_path: Path) -> None:
    result = run(bench["home"], "calibrate", "depth", "--pen", SIM, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    table = [line for line in result.stdout.splitlines() if str(tmp_path) not in line]
    assert "error ± U" in result.stdout and "statement" in result.stdout
    assert all(len(line) <= 80 for line in table), result.stdout
    assert list(tmp_path.glob("cal-SIM-000003-*.pdf"))  # --out still wins


def test_signed_certificates_verify_and_tampered_ones_do_not(
    bench: dict[str, Any], tmp_path: Path
) -> None:
    home, cert = bench["home"], bench["keys"]["certificate"]
    exported = json.loads(run(home, "cal", "export", bench["all"]["record_id"], "--out", tmp_path,
                              "--sign-key", bench["keys"]["key"], "--sign-cert", cert,
                              "--json").stdout)  # fmt: skip
    pdf = Path(exported["certificate"])
    good = run(home, "cal", "verify-certificate", pdf, "--trust", cert)
    assert good.returncode == 0 and "Dr. A. Reviewer" in good.stdout, good.stderr
    data = bytearray(pdf.read_bytes())
    data[data.index(b"stream", 1000) + 40] ^= 0x01
    (tmp_path / "tampered.pdf").write_bytes(bytes(data))
    one_line_error(run(home, "cal", "verify-certificate", tmp_path / "tampered.pdf"), 1,
                   "altered after it was signed")  # fmt: skip
    unsigned = run(home, "cal", "export", bench["verify"]["record_id"], "--out", tmp_path, "--json")
    plain = json.loads(unsigned.stdout)["certificate"]
    one_line_error(run(home, "cal", "verify-certificate", plain), 1, "is not signed")


def test_demo_writes_its_certificate_to_the_certificates_folder(tmp_path: Path) -> None:
    result = run(tmp_path, "demo", "--pen", SIM, "--strokes", "20", "--json")
    assert result.returncode == 0, result.stderr
    calibration = json.loads(result.stdout)["calibration"]
    assert Path(calibration["certificate"]).parent == tmp_path / "certificates"
    assert calibration["simulation"] is True


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["calibrate", "depth", "--pen", SIM, "--out", "afile"], 2, "is a file, not a folder"),
        (["calibrate", "depth", "--pen", SIM, "--out", "afile/sub"], 2, "cannot create the output"),
        (["cal", "export", "0123456789abcdef"], 2, "no calibration record '0123456789abcdef'"),
        (["cal", "export", "0123456789abcdef", "--out", "afile"], 2, "is a file, not a folder"),
        (["calibrate", "depth", "--pen", SIM, "--sign-key", "afile", "--sign-cert", "afile"], 2,
         "is not a private key"),
        (["cal", "verify-certificate", "afile"], 2, "is not a PDF"),
        (["cal", "verify-certificate", "nosuch.pdf"], 2, "cannot read nosuch.pdf"),
        (["cal", "signer", "init", "--name", "", "--role", "x"], 2, "signatory name"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], code: int, words: str
) -> None:
    (tmp_path / "afile").write_text("not a folder, key or PDF")
    os.chmod(tmp_path / "afile", 0o600)
    one_line_error(run(tmp_path, *args), code, words)
    assert not (tmp_path / "calibration.sqlite").exists()  # nothing was done


@pytest.mark.parametrize(
    "args",
    [
        ["cal", "history"],
        ["cal", "due"],
        ["cal", "export", "0123456789ab"],
        ["calibrate", "depth", "--pen", SIM],
    ],
)
def test_a_damaged_database_is_one_line_and_exit_1(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "calibration.sqlite").write_bytes(b"this is not an SQLite database" * 100)
    one_line_error(run(tmp_path, *args), 1, "calibration database")


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders"
)
def test_an_unwritable_out_folder_is_bad_input(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        one_line_error(run(tmp_path, "calibrate", "depth", "--pen", SIM, "--out", locked), 2,
                       "is not writable")  # fmt: skip
    finally:
        locked.chmod(0o700)


def test_station_shows_where_the_file_belongs(tmp_path: Path) -> None:
    missing = run(tmp_path, "cal", "station")
    assert missing.returncode == 0 and str(tmp_path / "station.toml") in missing.stdout
    assert "issuing laboratory is not configured" in missing.stdout
    (tmp_path / "station.toml").write_text("[lab]\nnmae = 'typo'\n")
    one_line_error(run(tmp_path, "cal", "station"), 2, "unknown key(s) nmae in lab;")
    one_line_error(run(tmp_path, "calibrate", "depth", "--pen", SIM), 2, "unknown key(s) nmae")
