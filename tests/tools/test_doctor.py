"""``micropen doctor``: each check against fake trees, the runner's isolation of a failing check,
the broker over loopback, and the installed command leaving no trace on the disk."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import usb.core
from typer.testing import CliRunner

from micropen.host import paths
from micropen.host.errors import TransportError
from micropen.host.transports.discovery import Scan
from micropen.host.treatment_log import TreatmentLog
from micropen.tools import doctor_checks as checks
from micropen.tools import doctor_devices as devices
from micropen.tools.cli import app
from micropen.tools.doctor import Bench, Finding, examine, plan, record_paths
from micropen.tools.doctor_checks import Status, Verdict
from micropen.tools.doctor_devices import Account, Group, GroupTable

ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
CHMOD_IGNORED = "running as root: file modes do not bind root, so chmod cannot deny access"

TECH = Account("tech", 1000, frozenset({1000}))
DEBIAN = GroupTable((Group("dialout", 20), Group("plugdev", 46), Group("tech", 1000)))
ARCH = GroupTable((Group("uucp", 14), Group("tech", 1000)))


def deny(*denied: Path, bits: int = os.W_OK) -> checks.Access:
    """os.access, except that ``bits`` are refused on the given paths (works as root too)."""

    def access(path: Path, mode: int) -> bool:
        if Path(path) in denied and mode & bits:
            return False
        return os.access(path, mode)

    return access


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


# --- folders ----------------------------------------------------------------------------------
def test_a_missing_folder_under_a_writable_parent_is_ok_and_is_not_created(tmp_path: Path) -> None:
    folder = tmp_path / "home" / "certificates"
    verdict = checks.check_folder(folder, os.getuid())
    assert verdict.status is Status.OK
    assert "does not exist yet" in verdict.detail
    assert not (tmp_path / "home").exists()


def test_a_folder_this_user_cannot_write_is_a_problem_with_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    verdict = checks.check_folder(folder, os.getuid(), deny(folder))
    assert verdict.status is Status.PROBLEM
    assert verdict.fix is not None and f"chmod u+rwx {folder}" in verdict.fix


@pytest.mark.skipif(IS_ROOT, reason=CHMOD_IGNORED)
def test_a_folder_made_read_only_with_chmod_is_a_problem(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        verdict = checks.check_folder(folder, os.getuid())
    finally:
        folder.chmod(0o700)
    assert verdict.status is Status.PROBLEM
    assert "mode 500" in verdict.detail


def test_a_missing_folder_whose_parent_is_not_writable_cannot_be_created(tmp_path: Path) -> None:
    verdict = checks.check_folder(tmp_path / "a" / "b", os.getuid(), deny(tmp_path))
    assert verdict.status is Status.PROBLEM
    assert verdict.fix is not None and "MICROPEN_HOME" in verdict.fix


def test_a_file_where_the_folder_should_be_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("oops")
    assert checks.check_folder(tmp_path / "data", os.getuid()).status is Status.PROBLEM


# --- databases --------------------------------------------------------------------------------
def check_log(path: Path, access: checks.Access = os.access) -> Verdict:
    from micropen.host.treatment_log import SCHEMA_VERSION

    return checks.check_database(
        path,
        what="treatment log",
        table="sessions",
        schema_version=SCHEMA_VERSION,
        uid=os.getuid(),
        access=access,
    )


def check_calibrations(path: Path) -> Verdict:
    return checks.check_database(
        path, what="calibration database", table="calibrations", schema_version=1, uid=0
    )


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "treatment.sqlite"
    TreatmentLog(path).close()
    return path


def test_a_treatment_log_is_checked_read_only_without_leaving_a_file(log_path: Path) -> None:
    before = tree(log_path.parent)
    verdict = check_log(log_path)
    assert verdict.status is Status.OK, verdict
    assert "quick_check ok" in verdict.detail
    assert tree(log_path.parent) == before  # no -wal, no -shm


def test_a_treatment_log_being_written_is_read_through_its_wal(log_path: Path) -> None:
    with TreatmentLog(log_path) as live:
        live.start_session(
            pen_serial="SN1", pen_model="MP-12", firmware="1.0.0", protocol_version=1,
            boot_id=1, operator="t", pen_url="sim://", is_simulated=True,
        )  # fmt: skip
        assert Path(f"{log_path}-wal").exists()
        assert check_log(log_path).status is Status.OK


def test_a_missing_log_is_fine_and_stays_missing(tmp_path: Path) -> None:
    verdict = check_log(tmp_path / "treatment.sqlite")
    assert verdict.status is Status.OK
    assert list(tmp_path.iterdir()) == []


def test_a_log_this_user_cannot_write_is_a_problem(log_path: Path) -> None:
    verdict = check_log(log_path, deny(log_path))
    assert verdict.status is Status.PROBLEM
    assert "cannot write" in verdict.detail


def test_a_damaged_database_is_a_problem_and_the_fix_keeps_the_records(tmp_path: Path) -> None:
    path = tmp_path / "treatment.sqlite"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    verdict = check_log(path)
    assert verdict.status is Status.PROBLEM
    assert verdict.fix is not None and "do not delete it" in verdict.fix


def test_a_database_sqlite_opens_but_finds_damaged_fails_the_integrity_check(
    tmp_path: Path,
) -> None:
    path = tmp_path / "calibration.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE calibrations (id INTEGER PRIMARY KEY, note TEXT)")
        db.execute("PRAGMA user_version = 1")
    db.close()
    data = bytearray(path.read_bytes())
    data[36:40] = (5).to_bytes(4, "big")  # the header's free-page count, now a lie
    path.write_bytes(bytes(data))
    verdict = check_calibrations(path)
    assert verdict.status is Status.PROBLEM
    assert verdict.detail.endswith(": Main freelist: size is 0 but should be 5")


def test_a_foreign_sqlite_file_and_a_newer_schema_are_problems(tmp_path: Path) -> None:
    foreign, newer = tmp_path / "foreign.sqlite", tmp_path / "newer.sqlite"
    for path, version in ((foreign, 0), (newer, 9)):
        with sqlite3.connect(path) as db:
            db.execute(
                "CREATE TABLE other (x)" if version == 0 else "CREATE TABLE calibrations (x)"
            )
            db.execute(f"PRAGMA user_version = {version}")
        db.close()
    assert "not a micropen" in check_calibrations(foreign).detail
    newer_verdict = check_calibrations(newer)
    assert newer_verdict.status is Status.PROBLEM
    assert newer_verdict.fix is not None and "upgrade" in newer_verdict.fix


# --- keystore ---------------------------------------------------------------------------------
def write_keystore(path: Path, mode: int, text: str | None = None) -> None:
    document = {"format": "micropen-pairings", "version": 1, "host_id": 7, "pens": []}
    path.write_text(text if text is not None else json.dumps(document))
    path.chmod(mode)


def test_a_keystore_others_can_read_is_a_problem_fixed_by_chmod_600(tmp_path: Path) -> None:
    keystore = tmp_path / "pairings.json"
    write_keystore(keystore, 0o644)
    verdict = checks.check_keystore(keystore, os.getuid())
    assert verdict.status is Status.PROBLEM
    assert verdict.fix == f"chmod 600 {keystore}"


def test_a_private_keystore_is_ok_and_counts_its_pens(tmp_path: Path) -> None:
    keystore = tmp_path / "pairings.json"
    write_keystore(keystore, 0o600)
    verdict = checks.check_keystore(keystore, os.getuid())
    assert verdict.status is Status.OK
    assert "mode 600, 0 pens paired" in verdict.detail


def test_a_damaged_or_foreign_keystore_is_a_problem(tmp_path: Path) -> None:
    keystore = tmp_path / "pairings.json"
    write_keystore(keystore, 0o600, text="{not json")
    assert checks.check_keystore(keystore, os.getuid()).status is Status.PROBLEM
    write_keystore(keystore, 0o600)
    assert "belongs to uid" in checks.check_keystore(keystore, os.getuid() + 1).detail


def test_no_keystore_yet_is_fine(tmp_path: Path) -> None:
    assert checks.check_keystore(tmp_path / "pairings.json", 0).status is Status.OK


# --- serial -----------------------------------------------------------------------------------
@pytest.fixture
def dev(tmp_path: Path) -> Path:
    """A fake /dev: one adapter (ttyUSB0) named by id, one CDC port, and a dangling name."""
    root = tmp_path / "dev"
    (root / "serial" / "by-id").mkdir(parents=True)
    for name in ("ttyUSB0", "ttyACM0", "null"):
        (root / name).touch()
        (root / name).chmod(0o660)  # crw-rw---- root:dialout, as udev leaves a serial port
    (root / "serial" / "by-id" / "usb-micropen_MP-12_SN1-if00").symlink_to("../../ttyACM0")
    (root / "serial" / "by-id" / "usb-gone-if00").symlink_to("../../ttyUSB9")
    return root


def group_of(port: Path) -> Group:
    """A dialout group that owns ``port`` (chown'd to it when root may do so)."""
    gid = 20 if IS_ROOT else os.getgid()
    os.chown(port, -1, gid)
    return Group("dialout", gid)


def test_usable_serial_ports_are_listed_with_their_by_id_names(dev: Path) -> None:
    verdict = devices.check_serial_ports(dev, TECH, DEBIAN, lambda path, mode: True)
    assert verdict.status is Status.OK
    assert f"{dev}/ttyACM0 (usb-micropen_MP-12_SN1-if00)" in verdict.detail
    assert "ttyUSB9" not in verdict.detail and "null" not in verdict.detail


def test_a_port_this_user_cannot_open_names_the_group_to_join(dev: Path) -> None:
    dialout = group_of(dev / "ttyUSB0")
    groups = GroupTable((dialout,))
    verdict = devices.check_serial_ports(dev, TECH, groups, deny(dev / "ttyUSB0", bits=os.R_OK))
    assert verdict.status is Status.PROBLEM
    assert f"cannot open {dev}/ttyUSB0" in verdict.detail and "ttyACM0" not in verdict.detail
    assert verdict.fix == 'sudo usermod -aG dialout "$USER", then log out and back in'


@pytest.mark.skipif(IS_ROOT, reason=CHMOD_IGNORED)
def test_a_port_without_read_permission_in_a_fake_dev_is_a_problem(dev: Path) -> None:
    (dev / "ttyUSB0").chmod(0o000)
    verdict = devices.check_serial_ports(dev, TECH, DEBIAN)
    assert verdict.status is Status.PROBLEM
    assert "udev rule" in (verdict.fix or "")  # mode 000: no group can help


def test_a_member_whose_session_predates_joining_is_told_to_log_in_again(dev: Path) -> None:
    dialout = group_of(dev / "ttyUSB0")
    joined = GroupTable((Group("dialout", dialout.gid, frozenset({"tech"})),))
    verdict = devices.check_serial_ports(dev, TECH, joined, deny(dev / "ttyUSB0", bits=os.R_OK))
    assert "log out and back in" in (verdict.fix or "")
    assert "newgrp dialout" in (verdict.fix or "")


def test_no_serial_ports_is_skipped_with_the_reason(tmp_path: Path) -> None:
    verdict = devices.check_serial_ports(tmp_path, TECH, DEBIAN)
    assert verdict.status is Status.SKIPPED
    assert "no USB serial ports" in verdict.detail


@pytest.mark.parametrize(
    ("account", "groups", "platform", "status", "words"),
    [
        (TECH, DEBIAN, "linux", Status.WARNING, 'usermod -aG dialout "$USER"'),
        (TECH, ARCH, "linux", Status.WARNING, 'usermod -aG uucp "$USER"'),
        (Account("tech", 1000, frozenset({1000, 20})), DEBIAN, "linux", Status.OK, "in group"),
        (Account("root", 0, frozenset({0})), DEBIAN, "linux", Status.SKIPPED, "root"),
        (TECH, GroupTable(), "linux", Status.SKIPPED, "no dialout or uucp"),
        (TECH, DEBIAN, "darwin", Status.SKIPPED, "darwin"),
    ],
)
def test_serial_group_membership(
    account: Account, groups: GroupTable, platform: str, status: Status, words: str
) -> None:
    verdict = devices.check_serial_group(account, groups, platform)
    assert verdict.status is status
    assert words in f"{verdict.detail} {verdict.fix}"


def test_root_and_sudo_are_warned_about_whose_folders_they_use() -> None:
    root = Account("root", 0, frozenset({0}))
    assert devices.check_user(TECH, None).status is Status.OK
    assert devices.check_user(root, None).status is Status.WARNING
    assert "not tech's" in devices.check_user(root, "tech").detail


# --- udev -------------------------------------------------------------------------------------
@pytest.fixture
def rules(tmp_path: Path) -> tuple[Path, Path]:
    etc, lib = tmp_path / "etc" / "rules.d", tmp_path / "lib" / "rules.d"
    etc.mkdir(parents=True)
    lib.mkdir(parents=True)
    (lib / "60-other.rules").write_text('SUBSYSTEM=="usb", ATTR{idVendor}=="0483", MODE="0666"\n')
    return etc, lib


def test_no_rule_for_the_pen_is_a_warning_whose_fix_writes_the_rule(
    rules: tuple[Path, Path],
) -> None:
    verdict = devices.check_udev_rule(rules, TECH, DEBIAN, "linux")
    assert verdict.status is Status.WARNING
    assert verdict.fix is not None
    assert str(devices.RULE_FILE) in verdict.fix and "udevadm control --reload-rules" in verdict.fix
    assert 'ATTR{idVendor}=="1209", ATTR{idProduct}=="0001"' in verdict.fix


@pytest.mark.parametrize("groups", [DEBIAN, ARCH], ids=["debian", "arch"])
def test_the_rule_doctor_writes_is_the_rule_doctor_accepts(
    rules: tuple[Path, Path], groups: GroupTable
) -> None:
    etc, _ = rules
    (etc / devices.RULE_FILE.name).write_text(devices.pen_rules(groups) + "\n")
    verdict = devices.check_udev_rule(rules, TECH, groups, "linux")
    assert verdict.status is Status.OK, verdict
    assert 'TAG+="uaccess"' in verdict.detail


def test_the_rule_names_only_groups_this_distribution_has() -> None:
    assert 'GROUP="plugdev"' in devices.pen_rules(DEBIAN)
    arch = devices.pen_rules(ARCH)
    assert 'GROUP="plugdev"' not in arch and 'GROUP="uucp"' in arch


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash to run the pasted fix")
def test_the_install_commands_paste_into_a_shell_even_indented(tmp_path: Path) -> None:
    fix = devices.install_rule_fix(DEBIAN)
    written = tmp_path / "70-micropen.rules"
    install = fix.splitlines()[:-2]  # printf … | sudo tee FILE, without udevadm
    pasted = "\n".join(f"    {line}" for line in install)
    pasted = pasted.replace(f"sudo tee {devices.RULE_FILE}", f"tee {written}")
    subprocess.run(["bash", "-c", pasted], check=True, timeout=10)
    assert written.read_text() == devices.pen_rules(DEBIAN) + "\n"


@pytest.mark.parametrize(
    ("file", "line", "words"),
    [
        ("99-late.rules", 'ATTRS{idVendor}=="1209", TAG+="uaccess"', "has no effect"),
        ("70-pen.rules", 'ATTR{idVendor}=="1209", ATTR{idProduct}=="0001"', "grants no access"),
        ("70-pen.rules", 'ATTR{idVendor}=="1209", MODE="0660", GROUP="plugdev"', "not in group"),
        ("70-pen.rules", 'ATTR{idVendor}=="1209", MODE="0660", GROUP="pens"', "does not exist"),
    ],
)
def test_a_rule_that_does_not_reach_this_user_is_a_warning_saying_why(
    rules: tuple[Path, Path], file: str, line: str, words: str
) -> None:
    etc, _ = rules
    (etc / file).write_text(f"# the pen\n{line}\n")
    verdict = devices.check_udev_rule(rules, TECH, DEBIAN, "linux")
    assert verdict.status is Status.WARNING
    assert words in verdict.detail


def test_a_rule_for_another_pid_codes_product_does_not_count(rules: tuple[Path, Path]) -> None:
    etc, _ = rules
    (etc / "70-x.rules").write_text('ATTR{idVendor}=="1209", ATTR{idProduct}=="abcd", MODE="0666"')
    assert devices.check_udev_rule(rules, TECH, DEBIAN, "linux").status is Status.WARNING


def test_a_group_rule_reaches_its_members_and_a_file_in_etc_masks_lib(
    rules: tuple[Path, Path],
) -> None:
    etc, lib = rules
    member = Account("tech", 1000, frozenset({1000, 46}))
    (lib / "70-micropen.rules").write_text(
        'SUBSYSTEM=="usb", ATTR{idVendor}=="1209", \\\n  MODE="0660", GROUP="plugdev"\n'
    )
    assert devices.check_udev_rule(rules, member, DEBIAN, "linux").status is Status.OK
    (etc / "70-micropen.rules").write_text("# emptied by the administrator\n")
    assert devices.check_udev_rule(rules, member, DEBIAN, "linux").status is Status.WARNING


@pytest.mark.skipif(IS_ROOT, reason=CHMOD_IGNORED)
def test_a_rule_file_this_user_cannot_read_is_named(rules: tuple[Path, Path]) -> None:
    etc, _ = rules
    (etc / "70-micropen.rules").write_text('ATTR{idVendor}=="1209", MODE="0666"\n')
    (etc / "70-micropen.rules").chmod(0o000)
    verdict = devices.check_udev_rule(rules, TECH, DEBIAN, "linux")
    assert f"not readable here: {etc / '70-micropen.rules'}" in verdict.detail


def test_udev_is_skipped_off_linux_and_without_rules_folders(tmp_path: Path) -> None:
    assert devices.check_udev_rule([tmp_path], TECH, DEBIAN, "darwin").status is Status.SKIPPED
    missing = devices.check_udev_rule([tmp_path / "none"], TECH, DEBIAN, "linux")
    assert missing.status is Status.SKIPPED and "container" in missing.detail


# --- USB --------------------------------------------------------------------------------------
def scan_error(cause: BaseException) -> Scan:
    try:
        raise TransportError(
            "USB scan failed: cannot read the pen at /dev/bus/usb/001/004"
        ) from cause
    except TransportError as exc:
        return Scan([], exc)


def test_a_bus_that_cannot_be_read_for_permission_is_fixed_by_the_udev_rule(
    tmp_path: Path,
) -> None:
    found = scan_error(usb.core.USBError("Access denied", errno=errno.EACCES))
    verdict = devices.check_usb_bus(found, tmp_path, DEBIAN, "linux")
    assert verdict.status is Status.PROBLEM
    assert "USB scan failed" in verdict.detail
    assert verdict.fix == devices.install_rule_fix(DEBIAN)


def test_a_missing_bus_is_skipped_and_a_readable_one_is_ok(tmp_path: Path) -> None:
    assert devices.check_usb_bus(Scan([]), tmp_path / "no", DEBIAN, "linux").status is (
        Status.SKIPPED
    )
    assert devices.check_usb_bus(Scan([]), tmp_path, DEBIAN, "linux").status is Status.OK


def test_pens_found_or_not() -> None:
    one = devices.check_pens(Scan(["usb://1209:0001?serial=SN1"]))
    assert one.status is Status.OK and "SN1" in one.detail
    assert "choose one" in devices.check_pens(Scan(["usb://a", "/dev/serial/by-id/b"])).detail
    assert devices.check_pens(Scan([])).status is Status.WARNING
    unread = devices.check_pens(scan_error(OSError("x")))
    assert "USB could not be read" in unread.detail


def test_libusb_found_missing_or_without_pyusb() -> None:
    class Backend:
        class lib:  # the shape of pyusb's libusb1 backend
            _name = "/usr/lib/libusb-1.0.so.0"

    assert devices.check_libusb(lambda: Backend()).detail.endswith("libusb-1.0.so.0")

    def missing() -> Any:
        raise TransportError("libusb not found: `pip install libusb-package`")

    def no_pyusb() -> Any:
        raise ModuleNotFoundError("No module named 'usb'", name="usb")

    assert devices.check_libusb(missing).status is Status.PROBLEM
    assert devices.check_libusb(no_pyusb).fix == "pip install pyusb"
    assert devices.check_libusb().status is Status.OK  # the installed libusb-package


# --- broker -----------------------------------------------------------------------------------
@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def closed_port() -> int:
    probe = socket.create_server(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    return port


def test_a_listening_broker_is_reachable(listener: int) -> None:
    verdict = checks.check_broker(f"mqtt://127.0.0.1:{listener}")
    assert verdict.status is Status.OK
    assert f"mqtt://127.0.0.1:{listener} accepts TCP connections" in verdict.detail


def test_a_tls_broker_url_is_only_tcp_connected(listener: int) -> None:
    verdict = checks.check_broker(f"mqtts://127.0.0.1:{listener}")
    assert verdict.status is Status.OK and "TLS and login" in verdict.detail


def test_a_closed_port_is_a_problem_saying_nothing_listens() -> None:
    verdict = checks.check_broker(f"mqtt://127.0.0.1:{closed_port()}")
    assert verdict.status is Status.PROBLEM
    assert "nothing listens" in verdict.detail


@pytest.mark.parametrize(
    ("error", "words"),
    [(TimeoutError(), "no answer within 2 s"), (socket.gaierror(-2, "unknown"), "not resolve")],
)
def test_broker_timeouts_and_unknown_names(error: OSError, words: str) -> None:
    def connect(address: tuple[str, int], timeout: float) -> socket.socket:
        raise error

    assert words in checks.check_broker("mqtt://broker.example:1883", connect=connect).detail


def test_no_broker_is_skipped_and_a_bad_url_is_a_problem() -> None:
    assert checks.check_broker(None).status is Status.SKIPPED
    bad = checks.check_broker("http://broker:80")
    assert bad.status is Status.PROBLEM and "mqtt://" in bad.detail


# --- clock ------------------------------------------------------------------------------------
def test_a_clock_before_the_release_year_is_a_problem() -> None:
    assert checks.check_clock(datetime(2019, 3, 1, tzinfo=UTC)).status is Status.PROBLEM
    assert checks.check_clock(datetime.now(UTC)).status is Status.OK


def fake_timedatectl(code: int, out: str, err: str = "") -> checks.Runner:
    def run(argv: Any, timeout: float) -> subprocess.CompletedProcess[str]:
        assert argv[1:] == ["show", "--property=NTPSynchronized", "--value"]
        return subprocess.CompletedProcess(argv, code, out, err)

    return run


def hung(argv: Any, timeout: float) -> subprocess.CompletedProcess[str]:
    raise subprocess.TimeoutExpired(argv, timeout)


@pytest.mark.parametrize(
    ("path", "run", "status", "words"),
    [
        ("/bin/timedatectl", fake_timedatectl(0, "yes\n"), Status.OK, "synchronised"),
        ("/bin/timedatectl", fake_timedatectl(0, "no\n"), Status.WARNING, "not synchronised"),
        (
            "/bin/timedatectl",
            fake_timedatectl(1, "", "System has not been booted with systemd\n"),
            Status.SKIPPED,
            "not been booted with systemd",
        ),
        ("/bin/timedatectl", hung, Status.SKIPPED, "did not answer"),
        (None, hung, Status.SKIPPED, "not available"),
    ],
)
def test_clock_synchronisation(
    path: str | None, run: checks.Runner, status: Status, words: str
) -> None:
    verdict = checks.check_clock_sync(path, run)
    assert verdict.status is status and words in verdict.detail


# --- the runner -------------------------------------------------------------------------------
def test_a_check_that_raises_is_reported_and_the_others_still_run() -> None:
    def broken() -> Verdict:
        raise KeyError("surprise")

    findings = examine(
        [("first", lambda: checks.ok("fine")), ("broken", broken), ("last", lambda: checks.ok("x"))]
    )
    assert [f.name for f in findings] == ["first", "broken", "last"]
    assert findings[1].status is Status.PROBLEM
    assert findings[1].detail == "the check itself failed: KeyError: 'surprise'"
    assert findings[2].status is Status.OK


def fake_bench(home: Path, tmp_path: Path, **changes: Any) -> Bench:
    options: dict[str, Any] = {
        "env": {"MICROPEN_HOME": str(home)},
        "dev": tmp_path / "dev",
        "rule_dirs": (tmp_path / "rules.d",),
        "platform": "linux",
        "account": TECH,
        "groups": DEBIAN,
        "scanner": lambda: Scan([]),
        "now": lambda: datetime(2027, 1, 1, tzinfo=UTC),
        "timedatectl": None,
    }
    return Bench(**(options | changes))


def test_a_scanner_that_crashes_fails_its_two_checks_only(tmp_path: Path) -> None:
    def crash() -> Scan:
        raise RuntimeError("libusb segfault averted")

    findings = {
        f.name: f for f in examine(plan(fake_bench(tmp_path / "h", tmp_path, scanner=crash)))
    }
    broken = {name for name, f in findings.items() if "the check itself failed" in f.detail}
    assert broken == {"usb-bus", "pens"}
    assert findings["clock"].status is Status.OK


def test_every_check_runs_on_a_fake_bench_and_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    findings = examine(plan(fake_bench(home, tmp_path)))
    names = [f.name for f in findings]
    assert names[:3] == ["python", "micropen", "user"]
    assert {"data-folder", "treatment-log", "keystore", "udev-rule", "broker", "clock-sync"} <= set(
        names
    )
    assert len(set(names)) == len(names)
    assert all(isinstance(f, Finding) and f.detail for f in findings)
    assert not home.exists()


# --- the command ------------------------------------------------------------------------------
def micropen_command() -> list[str]:
    """The installed console script beside this Python, else the same entry point via -c."""
    script = Path(sys.executable).with_name("micropen")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from micropen.tools.entry import main; main()"]


def run_doctor(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPEN_")}
    env |= {"MICROPEN_HOME": str(home), "NO_COLOR": "1"}
    return subprocess.run(
        [*micropen_command(), "doctor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_document(stdout: str) -> dict[str, Any]:
    lines = stdout.splitlines()
    assert len(lines) == 1, f"expected one JSON line, got {lines!r}"
    document: dict[str, Any] = json.loads(lines[0])
    return document


def test_installed_doctor_json_in_a_fresh_home_prints_paths_and_creates_nothing(
    tmp_path: Path,
) -> None:
    home = tmp_path / "fresh-home"
    done = run_doctor(home, "--json")
    document = one_document(done.stdout)
    assert "Traceback" not in done.stderr
    assert not home.exists(), "doctor created its home folder"
    env = {"MICROPEN_HOME": str(home)}
    assert document["paths"] == record_paths(env)
    assert document["paths"]["treatment_log"] == str(paths.treatment_log(env))
    assert document["paths_from"] == "MICROPEN_HOME"
    statuses = {c["name"]: c["status"] for c in document["checks"]}
    assert statuses["broker"] == "skipped"
    assert set(statuses.values()) <= {s.value for s in Status}
    problems = [c for c in document["checks"] if c["status"] == "problem"]
    assert done.returncode == (1 if problems else 0), problems
    assert document["ok"] is (not problems)
    assert all(c["fix"] for c in document["checks"] if c["status"] in ("warning", "problem"))


def test_installed_doctor_reads_existing_records_untouched_and_fails_on_a_dead_broker(
    tmp_path: Path, log_path: Path
) -> None:
    write_keystore(tmp_path / "pairings.json", 0o600)
    before = tree(tmp_path)
    done = run_doctor(tmp_path, "--json", "--mqtt", f"mqtt://127.0.0.1:{closed_port()}")
    document = one_document(done.stdout)
    statuses = {c["name"]: c["status"] for c in document["checks"]}
    assert statuses["treatment-log"] == "ok" and statuses["keystore"] == "ok"
    assert statuses["broker"] == "problem"
    assert done.returncode == 1
    assert tree(tmp_path) == before


def test_the_human_report_shows_fixes_and_where_records_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROPEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MICROPEN_MQTT", f"mqtt://127.0.0.1:{closed_port()}")
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 1, result.output
    assert "Where records live (MICROPEN_HOME):" in result.stdout
    assert f"treatment log     {tmp_path / 'home' / 'treatment.sqlite'}" in result.stdout
    assert "problem  broker" in result.stdout and "fix: start the broker" in result.stdout
    assert "1 problem to fix" in result.stdout


def test_the_bench_setup_guide_carries_the_rule_doctor_writes() -> None:
    guide = (ROOT / "docs" / "bench-setup.md").read_text(encoding="utf-8")
    for line in devices.pen_rules(DEBIAN).splitlines():
        assert line in guide, line
