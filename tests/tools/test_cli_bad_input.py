"""Every command, fed bad input by the installed ``micropen``: one line on stderr, exit 2 (bad
input) or 1 (failure), never a traceback, never an "internal error".

Each case runs in its own data folder, prepared with a few files a technician might have
(a corrupt database, an existing file where a folder is expected). Cases that need a pen use the
built-in simulator, so nothing here needs hardware.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MICROPEN = shutil.which("micropen")
pytestmark = pytest.mark.skipif(MICROPEN is None, reason="micropen is not installed")
SIM = "sim://?seed=3"

# (argv, exit code). Placeholders: {home} the data folder, {file} an existing plain file,
# {dir} an existing folder, {corrupt} a file of garbage, {missing} a path that does not exist.
CASES: list[tuple[str, int]] = [
    # the command line itself
    ("--bogus", 2),
    ("nosuchcommand", 2),
    ("status --bogus", 2),
    # pen URLs
    ("status --pen bogus://x", 2),
    ("status --pen sim://?seed=abc", 2),
    ("status --pen sim://?nosuchoption=1", 2),
    ("status --pen socket://127.0.0.1:notaport", 2),
    ("status --pen {missing}/ttyUSB9", 1),
    ("stop --pen bogus://x", 2),
    ("clear-fault --pen bogus://x", 2),
    # run: every value checked before the port opens
    ("run", 2),
    ("run --depth x --speed 90 --area forehead --strokes 10", 2),
    ("run --depth 9 --speed 90 --area forehead --strokes 10 --pen " + SIM, 2),
    ("run --depth nan --speed 90 --area forehead --strokes 10 --pen " + SIM, 2),
    ("run --depth 1e308 --speed 90 --area forehead --strokes 10 --pen " + SIM, 2),
    ("run --depth -1e308 --speed 90 --area forehead --strokes 10 --pen " + SIM, 2),
    ("run --depth 0 --speed 90 --area forehead --strokes 10 --pen " + SIM, 2),
    ("run --depth 0.5 --speed 90 --area forehead --seconds 1e308 --pen " + SIM, 2),
    ("doctor --mqtt mqtt://[::1", 2),
    ("cal history --db {dir}", 2),
    ("cal due --db {missing}/calibration.sqlite", 2),
    ("run --depth 0.5 --speed 91 --area forehead --strokes 10 --pen " + SIM, 2),
    ("run --depth 0.5 --speed 90 --area nowhere --strokes 10 --pen " + SIM, 2),
    ("run --depth 0.5 --speed 90 --area forehead --strokes -5 --pen " + SIM, 2),
    ("run --depth 0.5 --speed 90 --area forehead --strokes 0 --pen " + SIM, 2),
    ("run --depth 0.5 --speed 90 --area forehead --pen " + SIM, 2),
    ("run --depth 0.5 --speed 90 --area forehead --seconds -1 --pen " + SIM, 2),
    ("run --depth 1.8 --speed 90 --area cheeks --strokes 5 --pen " + SIM, 2),
    ("run --depth 0.5 --speed 90 --area bench_fixture --strokes 5 --pen " + SIM, 2),
    ("monitor --rate 0 --pen " + SIM, 2),
    ("monitor --count -1 --pen " + SIM, 2),
    # the treatment log
    ("log show 999", 2),
    ("log show abc", 2),
    ("log list --limit 0", 2),
    ("log list --db {missing}/treatment.sqlite", 2),
    ("log list --db {corrupt}", 1),
    ("log list --db {dir}", 2),
    ("log export --session 999", 2),
    ("log export --format xml", 2),
    ("log export --out {dir}", 2),
    ("log export --out {missing}/sub/out.json", 2),
    ("log export --format csv --out {file}", 2),
    # calibration records and procedures
    ("cal history --db {corrupt}", 1),
    ("cal due --db {corrupt}", 1),
    ("cal due --interval-days 0", 2),
    ("cal export nosuchrecord", 2),
    ("calibrate all --readings 0 --pen " + SIM, 2),
    ("calibrate all --gauge bogus --pen " + SIM, 2),
    ("calibrate depth --interval-days -3 --pen " + SIM, 2),
    ("calibrate depth --override-instrument-due ' ' --pen " + SIM, 2),
    # simulator
    ("sim serve --tcp 99999", 2),
    ("sim serve --pty --set nosuchparam=1", 2),
    ("sim serve --pty --state {missing}/sub/pen.state", 2),
    ("sim serve", 2),
    # firmware images
    ("firmware info {missing}/app.img", 2),
    ("firmware info {file}", 1),
    ("firmware verify {file} --dev-key", 1),
    ("firmware sign {missing}/app.bin --dev-key --version 1.2.3 --out {home}/o.img", 2),
    ("firmware sign {file} --dev-key --version one --out {home}/o.img", 2),
    ("firmware keygen {file}", 2),
    ("firmware upload {missing}/app.img --pen " + SIM, 2),
    # pairing
    ("pair revoke NOSUCHPEN", 2),
    ("pair --pen bogus://x", 2),
    # fleet
    ("fleet bridge --pen " + SIM + " --mqtt bogus://broker", 2),
    ("fleet watch --mqtt mqtt://", 2),
    ("fleet command", 2),
    # bench tools
    ("proxy --pen " + SIM + " --listen bogus", 2),
    ("proxy --pen " + SIM + " --listen tcp:5001 --drop-frames 2", 2),
    ("hil --pen bogus://x", 2),
    ("bench codec --frames 0", 2),
    ("demo --strokes -1", 2),
    ("demo --strokes 10 --out {file} --pen " + SIM, 2),
]


def _prepare(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "a-file").write_text("not a folder, not an image\n")
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "corrupt.sqlite").write_bytes(b"SQLite format 3\x00" + os.urandom(2000))
    return {
        "home": str(home),
        "file": str(tmp_path / "a-file"),
        "dir": str(tmp_path / "a-dir"),
        "corrupt": str(tmp_path / "corrupt.sqlite"),
        "missing": str(tmp_path / "missing"),
    }


def run_micropen(
    argv: list[str], home: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    assert MICROPEN is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPEN_")}
    env.update(MICROPEN_HOME=home, COLUMNS="100", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [MICROPEN, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], code: int) -> None:
    stderr = result.stderr
    shown = f"exit {result.returncode}\nstdout: {result.stdout[-2000:]}\nstderr: {stderr[-3000:]}"
    assert "Traceback" not in stderr + result.stdout, shown
    assert "internal error" not in stderr, shown
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, shown
    assert result.returncode == code, shown


@pytest.mark.parametrize(("command", "code"), CASES, ids=[c for c, _ in CASES])
def test_bad_input_gives_one_line_and_the_right_exit_code(
    tmp_path: Path, command: str, code: int
) -> None:
    where = _prepare(tmp_path)
    argv = [part.format(**where) for part in _split(command)]
    result = run_micropen(argv, where["home"])
    assert_one_line_refusal(result, code)


def _split(command: str) -> list[str]:
    import shlex

    return shlex.split(command)


def test_a_defect_is_one_line_pointing_at_a_saved_crash_report(tmp_path: Path) -> None:
    """The guard's last resort: an exception nobody expected (here injected through the
    debugging hook) is one line naming a crash report that holds the traceback."""
    home = tmp_path / "home"
    code = (
        "import sys; from micropen.tools import cli, pen_cli;"
        "pen_cli.pens.__code__ = (lambda as_json=False: 1 / 0).__code__;"
        "sys.argv = ['micropen', 'pens']; cli.main()"
    )
    env = {**os.environ, "MICROPEN_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: internal error (ZeroDivisionError: division by zero)")
    (report,) = (home / "crash-reports").iterdir()
    assert str(report) in line
    assert "ZeroDivisionError" in report.read_text()


def test_status_with_a_damaged_calibration_database_warns_and_still_answers(
    tmp_path: Path,
) -> None:
    where = _prepare(tmp_path)
    Path(where["home"], "calibration.sqlite").write_bytes(Path(where["corrupt"]).read_bytes())
    result = run_micropen(["status", "--pen", SIM, "--json"], where["home"])
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "warning: the calibration database" in result.stderr
    assert '"serial": "SIM-000003"' in result.stdout


def test_reading_commands_leave_no_file_behind(tmp_path: Path) -> None:
    """A mistyped --db, or a fresh machine, must not gain a folder or an empty database."""
    home = tmp_path / "fresh"
    for argv in (
        ["log", "list"],
        ["log", "list", "--db", str(tmp_path / "mistyped" / "path")],
        ["log", "show", "1"],
        ["log", "export"],
        ["cal", "history"],
        ["cal", "due"],
        ["pair", "list"],
        ["pens"],
        ["doctor"],
        ["--version"],
        ["--help"],
    ):
        result = run_micropen(argv, str(home))
        assert "Traceback" not in result.stderr, (argv, result.stderr)
        assert not home.exists(), f"{argv} created {list(home.rglob('*'))}"
        assert not (tmp_path / "mistyped").exists(), argv


def test_reading_an_existing_log_leaves_no_side_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ran = run_micropen(
        ["run", "--depth", "0.5", "--speed", "90", "--area", "forehead", "--strokes", "20",
         "--operator", "T. Nurse", "--pen", SIM],
        str(home),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    before = sorted(p.name for p in home.iterdir())
    for argv in (["log", "list"], ["log", "show", "1"], ["log", "export"], ["doctor"]):
        result = run_micropen(argv, str(home))
        assert "Traceback" not in result.stderr, (argv, result.stderr)
        assert sorted(p.name for p in home.iterdir()) == before, argv


def test_output_speaks_names_and_units(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    pen = f"{SIM}&state={tmp_path / 'pen.state'}"  # one unit across the processes
    run = run_micropen(
        ["run", "--depth", "0.5", "--speed", "90", "--area", "forehead", "--strokes", "20",
         "--json", "--pen", pen],
        home,
    )  # fmt: skip
    assert "warning: no operator given" in run.stderr
    report = json.loads(run.stdout)
    assert (report["outcome"], report["area"], report["mode"]) == (
        "completed",
        "forehead",
        "strokes",
    )
    status = json.loads(run_micropen(["status", "--json", "--pen", pen], home).stdout)
    assert status["state"] == "idle" and status["run_outcome"] == "none"  # a new boot
    assert status["run_area"] is None and "telemetry" in status["capabilities"]
    assert status["temperature_c"] == status["temperature_dc"] / 10
    assert status["calibration"]["state"] == "never"
    human = run_micropen(["status", "--pen", pen], home).stdout
    assert "°C" in human and " V" in human and "none since power on" in human
    assert "_dc" not in human and "_mv" not in human
    shown = run_micropen(["log", "show", "1"], home).stdout
    assert "outcome: completed" in shown and "cartridge: " in shown
    cartridge = status["cartridge_id"]
    assert f"cartridge: {cartridge}" in shown  # unsigned, as printed on the cartridge
    assert "STOPPED" not in shown


def test_a_stop_says_the_state_in_words(tmp_path: Path) -> None:
    result = run_micropen(["estop", "--pen", SIM], str(tmp_path / "home"))
    assert result.returncode == 0, result.stderr
    assert "is fault" not in result.stdout
    assert "latched emergency stop fault" in " ".join(result.stdout.split())
