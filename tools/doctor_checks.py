"""``micropen doctor``'s checks of this host: versions, where records live, the broker, the clock.

Each check is a small function that takes what it inspects (a path, a URL, a clock, a runner)
and returns a :class:`Verdict`: a status, one line of what was found and, for anything not ok,
the exact fix. Nothing here creates, changes or locks a file: a doctor that left an empty
database or a folder behind would hide the very problem it is asked about. Device checks
(serial, USB, udev) live in ``doctor_devices``.
"""

from __future__ import annotations

import os
import shlex
import socket
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

__all__ = [
    "RELEASE_YEAR",
    "Access",
    "Runner",
    "Status",
    "Verdict",
    "check_broker",
    "check_clock",
    "check_clock_sync",
    "check_database",
    "check_folder",
    "check_keystore",
    "check_micropen",
    "check_python",
    "check_registry",
    "run_command",
]

RELEASE_YEAR = 2026  # micropen 0.1 was released in 2026: a clock reading earlier is wrong
BROKER_TIMEOUT_S = 2.0
TIMEDATECTL_TIMEOUT_S = 3.0

Access = Callable[[Path, int], bool]
"""``os.access``-shaped: tests deny access without chmod, which root ignores."""

Runner = Callable[[Sequence[str], float], "subprocess.CompletedProcess[str]"]
"""Runs a command with a timeout and returns its completed process (text mode)."""


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"  # works, but something will bite: exit code stays 0
    PROBLEM = "problem"  # something a bench needs does not work: exit code 1
    SKIPPED = "skipped"  # nothing to look at here; the detail says why


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one check found; ``fix`` (commands or a file's content) when it is not ok."""

    status: Status
    detail: str
    fix: str | None = None


def ok(detail: str) -> Verdict:
    return Verdict(Status.OK, detail)


def warning(detail: str, fix: str) -> Verdict:
    return Verdict(Status.WARNING, detail, fix)


def problem(detail: str, fix: str) -> Verdict:
    return Verdict(Status.PROBLEM, detail, fix)


def skipped(reason: str) -> Verdict:
    return Verdict(Status.SKIPPED, reason)


def run_command(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """The real :data:`Runner`: no shell, output captured, a hung tool cut off."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


# --- versions ------------------------------------------------------------------------------
def check_python(version: tuple[int, int, int], executable: str) -> Verdict:
    """The interpreter, and where it is: a bench with two Pythons runs the wrong one often."""
    text = ".".join(map(str, version))
    if version < (3, 11):
        return problem(
            f"Python {text} ({executable}); micropen needs 3.11 or newer",
            "install Python 3.11 or newer, then: python3 -m pip install micropen",
        )
    return ok(f"Python {text} ({executable})")


def check_micropen(version: str, location: Path) -> Verdict:
    """The installed micropen: a service engineer's first question."""
    if version == "0+unknown":
        return warning(
            f"micropen runs from a source tree ({location}) without being installed",
            "install it: python3 -m pip install .  (run in the source tree)",
        )
    return ok(f"micropen {version} ({location})")


# --- folders --------------------------------------------------------------------------------
def check_folder(path: Path, uid: int, access: Access = os.access) -> Verdict:
    """A records or settings folder can be written, or created at first use. Never created
    here: the nearest existing parent must let this user make it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return _folder_to_come(path, uid, access)
    except OSError as exc:
        return problem(f"{path} cannot be looked at: {exc.strerror}", _fix_owner(path, uid))
    if not stat.S_ISDIR(info.st_mode):
        return problem(
            f"{path} is a file where a folder should be",
            f"move it aside: mv {shlex.quote(str(path))} {shlex.quote(str(path))}.moved",
        )
    if access(path, os.R_OK | os.W_OK | os.X_OK):
        return ok(f"{path} (readable and writable)")
    return problem(
        f"{path} exists but this user cannot write into it (mode "
        f"{stat.S_IMODE(info.st_mode):o}, owner uid {info.st_uid})",
        _fix_owner(path, uid, info.st_uid),
    )


def _folder_to_come(path: Path, uid: int, access: Access) -> Verdict:
    parent = _nearest_existing(path)
    if parent.is_dir() and access(parent, os.W_OK | os.X_OK):
        return ok(f"{path} does not exist yet; micropen creates it at first use")
    return problem(
        f"{path} does not exist and cannot be created: {parent} is not writable by this user",
        f'sudo install -d -o "$USER" -m 0700 {shlex.quote(str(path))}\n'
        "or point MICROPEN_HOME at a folder this user can write",
    )


def _nearest_existing(path: Path) -> Path:
    for candidate in path.parents:
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def _fix_owner(path: Path, uid: int, owner: int | None = None) -> str:
    quoted = shlex.quote(str(path))
    if owner is not None and owner == uid:
        return f"chmod u+rwx {quoted}"
    return f'sudo chown -R "$USER" {quoted}\nor point MICROPEN_HOME at a folder this user can write'


# --- databases ------------------------------------------------------------------------------
_SIDECARS = ("-wal", "-shm", "-journal")


def check_database(
    path: Path,
    *,
    what: str,
    table: str,
    schema_version: int,
    uid: int,
    access: Access = os.access,
) -> Verdict:
    """A SQLite store (the treatment log, the calibration database), when present: readable,
    writable, of a schema this micropen reads, and passing ``PRAGMA quick_check``."""
    if not os.path.lexists(path):
        return ok(f"no {what} yet at {path}; micropen creates it at first use")
    if not path.is_file():
        quoted = shlex.quote(str(path))
        return problem(f"{path} is not a file", f"move it aside: mv {quoted} {quoted}.moved")
    if not access(path, os.R_OK):
        return problem(f"this user cannot read {path}", _fix_owner(path, uid))
    try:
        version, has_table, messages = _inspect(path, table)
    except sqlite3.Error as exc:
        return problem(f"{path} cannot be read as a SQLite database: {exc}", _damaged_fix(path))
    if version == 0 and not has_table:
        return problem(
            f"{path} is a SQLite database but not a micropen {what}",
            f"move it aside (mv {shlex.quote(str(path))} {shlex.quote(str(path))}.foreign); "
            "micropen starts a new one",
        )
    if messages != ["ok"]:
        found = "; ".join(_one_line(m) for m in messages[:3])
        return problem(f"{path} fails its integrity check: {found}", _damaged_fix(path))
    return _database_state(path, what, version, schema_version, uid, access)


def _database_state(
    path: Path, what: str, version: int, schema_version: int, uid: int, access: Access
) -> Verdict:
    if version > schema_version:
        return problem(
            f"{path} has schema version {version}; this micropen reads {schema_version}",
            "update micropen: python3 -m pip install --upgrade micropen",
        )
    if not (access(path, os.W_OK) and access(path.parent, os.W_OK | os.X_OK)):
        return problem(
            f"{path} is intact but this user cannot write to it: nothing new can be recorded",
            _fix_owner(path.parent, uid),
        )
    if version < schema_version:
        return ok(
            f"{path}: intact, schema version {version} (micropen upgrades it to "
            f"{schema_version} in place when it next writes)"
        )
    return ok(f"{path}: intact (quick_check ok), schema version {version}")


def _inspect(path: Path, table: str) -> tuple[int, bool, list[str]]:
    """Schema version, whether ``table`` exists, and quick_check's messages. If a writer
    appeared while an immutable read ran, its answer does not count: read again through it."""
    before = _sidecars(path)
    with _read_only(path, before) as db:
        found = _query(db, table)
    if found[2] != ["ok"] and _sidecars(path) != before:
        with _read_only(path, _sidecars(path)) as db:
            found = _query(db, table)
    return found


def _query(db: sqlite3.Connection, table: str) -> tuple[int, bool, list[str]]:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    has_table = (
        db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        is not None
    )
    messages = [str(row[0]) for row in db.execute("PRAGMA quick_check(10)")]
    return version, has_table, messages


def _one_line(message: str) -> str:
    """quick_check's messages span lines and name the schema; the report wants one line."""
    return " ".join(message.replace("*** in database main ***", "").split())


def _sidecars(path: Path) -> frozenset[str]:
    return frozenset(s for s in _SIDECARS if os.path.lexists(f"{path}{s}"))


@contextmanager
def _read_only(path: Path, sidecars: frozenset[str]) -> Iterator[sqlite3.Connection]:
    """Open without leaving a trace. ``mode=ro`` on a WAL database creates its -wal and -shm
    files when they are missing (SQLite ≥ 3.22), so a database without them — closed cleanly,
    everything in the main file — is read ``immutable``; with them (a writer may be live) or
    a rollback journal, ``mode=ro`` reads through them and creates nothing."""
    live = {"-wal", "-shm"} <= sidecars or "-journal" in sidecars
    query = "mode=ro" if live else "mode=ro&immutable=1"
    uri = f"{path.resolve().as_uri()}?{query}"
    with closing(sqlite3.connect(uri, uri=True, timeout=2.0)) as db:
        yield db


def _damaged_fix(path: Path) -> str:
    quoted = shlex.quote(str(path))
    return (
        "do not delete it (it holds records): close every micropen program, copy it aside "
        f"(cp {quoted} {quoted}.damaged), then restore the last backup; "
        f"sqlite3 {quoted}.damaged .recover salvages what it can"
    )


# --- the pairing keystore -------------------------------------------------------------------
def check_keystore(path: Path, uid: int) -> Verdict:
    """The pairing keystore, when present: mode 0600, this user's, and readable as one."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return ok(f"no keystore yet at {path}; it is written when this host first pairs")
    mode = stat.S_IMODE(info.st_mode)
    quoted = shlex.quote(str(path))
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return problem(
            f"{path} has mode {mode:o}: others can read the pairing keys (micropen refuses it)",
            f"chmod 600 {quoted}",
        )
    if info.st_uid != uid:
        return problem(
            f"{path} belongs to uid {info.st_uid}, not to this user (uid {uid})",
            f'sudo chown "$USER" {quoted}',
        )
    return _keystore_contents(path, mode)


def _keystore_contents(path: Path, mode: int) -> Verdict:
    from micropen.host.pairing import HostKeys, KeystoreError

    try:
        paired = len(HostKeys(path, create=False).pens())
    except KeystoreError as exc:
        return problem(str(exc), "move it aside and pair the pens again (micropen pair --pen URL)")
    return ok(f"{path} (mode {mode:o}, {paired} pen{'s' if paired != 1 else ''} paired)")


# --- the broker -----------------------------------------------------------------------------
Connect = Callable[[tuple[str, int], float], socket.socket]


def check_broker(
    url: str | None,
    *,
    timeout: float = BROKER_TIMEOUT_S,
    connect: Connect = socket.create_connection,
) -> Verdict:
    """The MQTT broker accepts a TCP connection. Only TCP: TLS and login are the fleet
    commands' business, and doctor has no credentials to offer."""
    if not url:
        return skipped("no broker configured (--mqtt URL or MICROPEN_MQTT)")
    from micropen.host.fleet.broker import parse_broker_url
    from micropen.host.fleet.errors import BrokerConfigError

    try:
        config = parse_broker_url(url)
    except BrokerConfigError as exc:
        return problem(str(exc), "correct --mqtt or MICROPEN_MQTT")
    started = time.perf_counter()
    try:
        connect((config.host, config.port), timeout).close()
    except OSError as exc:
        return _unreachable(config.url, exc, timeout)
    took_ms = (time.perf_counter() - started) * 1000
    tls = " (TLS and login are tried by the fleet commands)" if config.tls else ""
    return ok(f"{config.url} accepts TCP connections ({took_ms:.0f} ms){tls}")


def _unreachable(url: str, exc: OSError, timeout: float) -> Verdict:
    if isinstance(exc, socket.gaierror):
        return problem(
            f"{url}: the host name does not resolve ({exc.strerror})",
            "check the broker's name (DNS, /etc/hosts) or use its IP address",
        )
    if isinstance(exc, ConnectionRefusedError):
        return problem(
            f"{url}: nothing listens there (connection refused)",
            "start the broker (e.g. sudo systemctl start mosquitto) or correct the port",
        )
    if isinstance(exc, TimeoutError):
        return problem(
            f"{url}: no answer within {timeout:g} s",
            "the host is down or a firewall drops the connection: check both",
        )
    return problem(f"{url}: {exc.strerror or exc}", "check the network and the broker URL")


def check_registry(env: Mapping[str, str], *, timeout: float = BROKER_TIMEOUT_S) -> Verdict:
    """The fleet cartridge registry (MICROPEN_REGISTRY) answers and holds the fleet schema: a
    bench whose registry is down refuses every run under the default policy."""
    if not env.get("MICROPEN_REGISTRY", ""):
        return skipped("no fleet cartridge registry configured (MICROPEN_REGISTRY)")
    import psycopg

    from micropen.host.cartridge_guard import RegistryMisconfigured
    from micropen.host.errors import InvalidInput
    from micropen.host.fleet.errors import FleetError
    from micropen.host.fleet.migrate import SchemaTooNew, check_schema
    from micropen.host.fleet.registry import classify, guard_from_env

    try:
        guard = guard_from_env(env)
    except InvalidInput as exc:
        fix = "correct MICROPEN_REGISTRY, MICROPEN_SITE and MICROPEN_REGISTRY_UNREACHABLE"
        return problem(str(exc), fix)
    assert guard is not None
    dsn, policy = env["MICROPEN_REGISTRY"].strip(), guard.policy.action
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, round(timeout))) as conn:
            check_schema(conn)
            conn.execute("SELECT 1 FROM recalled_lots LIMIT 1")
    except SchemaTooNew as exc:
        return problem(f"every run is refused: {exc}", "upgrade micropen on this bench")
    except FleetError as exc:  # the schema is missing or incomplete
        return problem(f"every run is refused: {exc}", "run micropen fleet db migrate --db URL")
    except (psycopg.Error, OSError) as exc:
        found = classify(exc)
        if isinstance(found, RegistryMisconfigured):
            return problem(
                f"every run is refused: the fleet cartridge registry is misconfigured ({found})",
                "correct MICROPEN_REGISTRY (database, role, login, URL options)",
            )
        verdict = problem if policy == "refuse" else warning
        return verdict(
            f"the fleet cartridge registry does not answer ({found}); when unreachable: {policy}",
            "check the database server, the network and MICROPEN_REGISTRY",
        )
    return ok(f"fleet cartridge registry answers (site {guard.site}; when unreachable: {policy})")


# --- the clock ------------------------------------------------------------------------------
def check_clock(now: datetime, release_year: int = RELEASE_YEAR) -> Verdict:
    """Records and certificates carry this clock's dates, and due dates are computed from it."""
    shown = now.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    if now.year < release_year:
        return problem(
            f"the clock reads {shown}, before this micropen was released ({release_year}): "
            "treatment records and certificates would carry wrong dates",
            "set the clock: sudo timedatectl set-ntp true (or sudo date -s 'YYYY-MM-DD HH:MM'); "
            "a clock that is wrong after every start has a flat RTC battery",
        )
    return ok(shown)


def check_clock_sync(timedatectl: str | None, run: Runner = run_command) -> Verdict:
    """NTP synchronisation, as systemd sees it; other systems are skipped with the reason."""
    if timedatectl is None:
        return skipped(
            "timedatectl is not available (not a systemd system); check time synchronisation "
            "with this system's own tools"
        )
    argv = [timedatectl, "show", "--property=NTPSynchronized", "--value"]
    try:
        done = run(argv, TIMEDATECTL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return skipped(f"timedatectl did not answer within {TIMEDATECTL_TIMEOUT_S:g} s")
    except OSError as exc:
        return skipped(f"timedatectl cannot be run: {exc.strerror or exc}")
    answer = done.stdout.strip()
    if done.returncode != 0 or answer not in ("yes", "no"):
        said = (done.stderr.strip().splitlines() or [answer or f"exit code {done.returncode}"])[0]
        return skipped(f"timedatectl cannot tell ({said})")
    if answer == "no":
        return warning(
            "the clock is not synchronised with a time server (NTP)",
            "sudo timedatectl set-ntp true, then check that a time server can be reached "
            "(timedatectl timesync-status)",
        )
    return ok("synchronised with a time server (NTP)")
