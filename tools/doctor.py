"""``micropen doctor``: what a bench PC needs, checked and explained.

Each check prints a status (ok, warning, problem, skipped with the reason), one line of what it
found and, for anything not ok, the exact fix: the commands to run, the udev rule to install.
``--json`` prints one document with every check and where records live. Exit code 0 unless a
check found a problem (warnings are allowed: a CI container has no pens and no udev rule).

Doctor only looks. It creates no folder and no file, opens databases without leaving a journal
behind, and a check that fails in an unexpected way becomes that check's problem line while the
others still run. The checks themselves live in ``doctor_checks`` and ``doctor_devices``;
:class:`Bench` says what they look at, so tests point each one at a fake.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from micropen.host import paths
from micropen.host.transports.discovery import Scan, scan

from .common import JsonOption, emit_json, errors_to_exit, version
from .doctor_checks import (
    Access,
    Runner,
    Status,
    Verdict,
    check_broker,
    check_clock,
    check_clock_sync,
    check_database,
    check_folder,
    check_keystore,
    check_micropen,
    check_python,
    check_registry,
    problem,
    run_command,
)
from .doctor_devices import (
    UDEV_RULE_DIRS,
    Account,
    Groups,
    SystemGroups,
    check_libusb,
    check_pens,
    check_serial_group,
    check_serial_ports,
    check_udev_rule,
    check_usb_bus,
    check_user,
)

__all__ = ["Bench", "Check", "Finding", "doctor", "examine", "plan", "record_paths"]

Check = tuple[str, Callable[[], Verdict]]


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report: a check's name and its verdict."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
        }


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Bench:
    """What doctor looks at. The defaults are this machine; tests replace any of them."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    mqtt: str | None = None
    dev: Path = Path("/dev")
    rule_dirs: tuple[Path, ...] = UDEV_RULE_DIRS
    platform: str = sys.platform
    account: Account = field(default_factory=Account.current)
    groups: Groups = field(default_factory=SystemGroups)
    scanner: Callable[[], Scan] = scan
    now: Callable[[], datetime] = _utc_now
    timedatectl: str | None = field(default_factory=lambda: shutil.which("timedatectl"))
    run: Runner = run_command
    access: Access = os.access


def record_paths(env: Mapping[str, str]) -> dict[str, str]:
    """Where this user's records and settings live (host/paths.py), created or not."""
    return {
        "data_dir": str(paths.data_dir(env)),
        "config_dir": str(paths.config_dir(env)),
        "treatment_log": str(paths.treatment_log(env)),
        "calibration_db": str(paths.calibration_db(env)),
        "certificates_dir": str(paths.certificates_dir(env)),
        "keystore": str(paths.keystore_file(env)),
        "station_file": str(paths.station_file(env)),
        "fleet_outbox": str(paths.fleet_outbox_dir(env)),
        "crash_reports": str(paths.crash_dir(env)),
    }


def paths_source(env: Mapping[str, str]) -> str:
    return "MICROPEN_HOME" if env.get("MICROPEN_HOME") else "platform defaults"


def plan(bench: Bench) -> list[Check]:
    """Every check, in the order a technician reads them, bound to what it looks at."""
    return [*_software(bench), *_records(bench), *_devices(bench), *_network_and_clock(bench)]


def _software(bench: Bench) -> list[Check]:
    here = Path(__file__).resolve().parents[1]
    return [
        ("python", lambda: check_python(_python_version(), sys.executable)),
        ("micropen", lambda: check_micropen(version(), here)),
        ("user", lambda: check_user(bench.account, bench.env.get("SUDO_USER"))),
    ]


def _python_version() -> tuple[int, int, int]:
    major, minor, micro = sys.version_info[:3]
    return major, minor, micro


def _records(bench: Bench) -> list[Check]:
    env, uid, access = bench.env, bench.account.uid, bench.access
    return [
        ("data-folder", lambda: check_folder(paths.data_dir(env), uid, access)),
        ("config-folder", lambda: check_folder(paths.config_dir(env), uid, access)),
        ("certificates-folder", lambda: check_folder(paths.certificates_dir(env), uid, access)),
        ("treatment-log", lambda: _treatment_log(bench)),
        ("calibration-db", lambda: _calibration_db(bench)),
        ("keystore", lambda: check_keystore(paths.keystore_file(bench.env), uid)),
    ]


def _treatment_log(bench: Bench) -> Verdict:
    from micropen.host.treatment_log import SCHEMA_VERSION

    return check_database(
        paths.treatment_log(bench.env),
        what="treatment log",
        table="sessions",
        schema_version=SCHEMA_VERSION,
        uid=bench.account.uid,
        access=bench.access,
    )


def _calibration_db(bench: Bench) -> Verdict:
    from micropen.host.calibration.records import SCHEMA_VERSION

    return check_database(
        paths.calibration_db(bench.env),
        what="calibration database",
        table="calibrations",
        schema_version=SCHEMA_VERSION,
        uid=bench.account.uid,
        access=bench.access,
    )


def _devices(bench: Bench) -> list[Check]:
    found = functools.cache(bench.scanner)  # usb-bus and pens share one scan
    who, groups, platform = bench.account, bench.groups, bench.platform
    return [
        ("serial-ports", lambda: check_serial_ports(bench.dev, who, groups, bench.access)),
        ("serial-group", lambda: check_serial_group(who, groups, platform)),
        ("udev-rule", lambda: check_udev_rule(bench.rule_dirs, who, groups, platform)),
        ("libusb", lambda: check_libusb()),
        ("usb-bus", lambda: check_usb_bus(found(), bench.dev / "bus" / "usb", groups, platform)),
        ("pens", lambda: check_pens(found())),
    ]


def _network_and_clock(bench: Bench) -> list[Check]:
    return [
        ("broker", lambda: check_broker(bench.mqtt)),
        ("registry", lambda: check_registry(bench.env)),
        ("clock", lambda: check_clock(bench.now())),
        ("clock-sync", lambda: check_clock_sync(bench.timedatectl, bench.run)),
    ]


def examine(checks: Iterable[Check]) -> list[Finding]:
    """Run every check; one that raises is reported as its own problem, and the rest still run."""
    return [_run_one(name, check) for name, check in checks]


def _run_one(name: str, check: Callable[[], Verdict]) -> Finding:
    try:
        verdict = check()
    except Exception as exc:  # a doctor must report, never crash: this check's line says it
        said = " ".join(str(exc).split()) or "no message"
        verdict = problem(
            f"the check itself failed: {type(exc).__name__}: {said}",
            "a micropen bug: report it with the output of micropen doctor --json",
        )
    return Finding(name, verdict.status, verdict.detail, verdict.fix)


# --- output -----------------------------------------------------------------------------------
STYLES = {
    Status.OK: "green",
    Status.WARNING: "yellow",
    Status.PROBLEM: "bold red",
    Status.SKIPPED: "dim",
}
INDENT = " " * 10


def report_document(findings: list[Finding], env: Mapping[str, str]) -> dict[str, Any]:
    """The --json document: every check, the counts, and where records live."""
    counts = Counter(f.status.value for f in findings)
    return {
        "micropen": version(),
        "ok": counts[Status.PROBLEM.value] == 0,
        "summary": {status.value: counts[status.value] for status in Status},
        "checks": [f.to_dict() for f in findings],
        "paths": record_paths(env),
        "paths_from": paths_source(env),
    }


def render(console: Console, findings: list[Finding], env: Mapping[str, str]) -> None:
    """The human report: one line per check, each fix written out under it, then the paths."""
    console.print(Text(f"micropen doctor — micropen {version()}", style="bold"))
    width = max(len(f.name) for f in findings) + 2
    for finding in findings:
        _render_finding(console, finding, width)
    _render_paths(console, env)
    _render_summary(console, findings)


def _render_finding(console: Console, finding: Finding, width: int) -> None:
    line = Text.assemble(
        (f"{finding.status.value:<9}", STYLES[finding.status]),
        (f"{finding.name:<{width}}", "bold"),
        finding.detail,
    )
    console.print(line, soft_wrap=True)
    if not finding.fix:
        return
    lines = finding.fix.splitlines()
    if len(lines) == 1:  # short fixes on one line; blocks (commands, a rule file) below
        console.print(Text.assemble((f"{INDENT}fix: ", "cyan"), lines[0]), soft_wrap=True)
        return
    console.print(Text(f"{INDENT}fix:", style="cyan"))
    for fix_line in lines:
        console.print(Text(f"{INDENT}  {fix_line}"), soft_wrap=True)


def _render_paths(console: Console, env: Mapping[str, str]) -> None:
    console.print()
    console.print(Text(f"Where records live ({paths_source(env)}):", style="bold"))
    where = record_paths(env)
    width = max(map(len, where)) + 2
    for key, value in where.items():
        console.print(Text(f"  {key.replace('_', ' '):<{width}}{value}"), soft_wrap=True)


def _render_summary(console: Console, findings: list[Finding]) -> None:
    counts = Counter(f.status for f in findings)
    parts = [_count(counts[s], s) for s in Status if counts[s]]
    problems = counts[Status.PROBLEM]
    verdict = (
        Text(f"{_count(problems, Status.PROBLEM)} to fix (above)", style="bold red")
        if problems
        else Text("no problems", style="bold green")
    )
    console.print()
    console.print(Text(", ".join(parts) + ": ") + verdict, soft_wrap=True)


def _count(n: int, status: Status) -> str:
    plural = "s" if n != 1 and status in (Status.WARNING, Status.PROBLEM) else ""
    return f"{n} {status.value}{plural}"


# --- the command ------------------------------------------------------------------------------
def doctor(
    mqtt: Annotated[
        str | None,
        typer.Option(
            "--mqtt", envvar="MICROPEN_MQTT", help="Broker to try: mqtt://HOST:PORT or mqtts://…"
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check this bench PC: permissions, udev rule, libusb, pens, data folders, broker, clock."""
    if mqtt:
        from micropen.host.fleet.broker import parse_broker_url

        with errors_to_exit():  # a mistyped URL is bad input (exit 2), not a broker problem
            parse_broker_url(mqtt)
    bench = Bench(mqtt=mqtt)
    findings = examine(plan(bench))
    if as_json:
        emit_json(report_document(findings, bench.env))
    else:
        render(Console(highlight=False), findings, bench.env)
    if any(f.status is Status.PROBLEM for f in findings):
        raise typer.Exit(1)
