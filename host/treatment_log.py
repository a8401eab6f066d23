"""The host's durable treatment log: nothing acknowledged is lost.

Every session (pen identity, operator), run (commanded area, depth, rate, cartridge, soft-cap
override reason), event, fault, override, telemetry sample and run report goes into one SQLite
file. The host acknowledges a record only after the method that stores it returns, so every
method commits before it returns: WAL journal, ``synchronous=FULL`` (an fsync of the WAL on
every commit), one transaction per call. Telemetry comes at up to 1 kHz, so samples arrive in
batches (:meth:`TreatmentLog.add_samples`, one transaction per batch); everything else is
committed one record at a time.

A run report is stored once per (pen serial, boot id, run id): the pen re-sends reports after a
reconnect, and the stroke count in the log must be exact (hazard 3).

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` upgrades old files in
place, one transaction per step, and a file newer than this code is refused.

What the pen hands over is stored exactly once whichever host process receives it: a run
report completes the run's row wherever the run started, and an event re-sent by the pen (its
acknowledgement was lost with a killed host) is recognised by its pen, boot, kind, code, value,
run and pen time and stored once. Runs of an earlier boot that never reported (the pen
restarted mid-run) are closed as ``interrupted`` when a host next meets that pen.

Errors::

    MicropenError
    └── TreatmentLogError      the log cannot store or read a record; the caller must not ack
        └── LogNotWritable     the disk is full, read-only or gone: the fix is outside micropen
"""

from __future__ import annotations

import csv
import json
import math
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple, Self

from micropen.host import paths
from micropen.host.errors import InvalidInput
from micropen.protocol.errors import MicropenError
from micropen.protocol.messages import PenState, Telemetry

__all__ = [
    "CSV_EXPORT_FILES",
    "EVENT_KINDS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "EventRecord",
    "LogNotWritable",
    "Migration",
    "NoSuchSession",
    "OverrideRecord",
    "RunDetail",
    "SampleRow",
    "SessionDetail",
    "SessionSummary",
    "TreatmentLog",
    "TreatmentLogError",
    "apply_migrations",
    "default_path",
]

EVENT_KINDS = ("event", "fault", "link", "remote-command", "host")
EXPORT_FORMAT = "micropen.treatment-log"
CSV_EXPORT_FILES = ("sessions.csv", "runs.csv", "events.csv", "overrides.csv", "samples.csv")
_RUNNING = int(PenState.RUNNING)
_EXPORT_CHUNK = 10_000


class TreatmentLogError(MicropenError):
    """The treatment log could not store or read a record; treat the record as not stored."""


class NoSuchSession(TreatmentLogError, InvalidInput):
    """A session id that is not in the log (bad input: exit 2 on the command line)."""


class LogNotWritable(TreatmentLogError):
    """The log's disk is full, read-only or gone: nothing is wrong with the log itself."""


class SampleRow(NamedTuple):
    """One telemetry sample as stored: the pen's fields plus the host's receive time."""

    t_ms: int
    state: int
    depth_um: int
    rate_csps: int
    run_strokes: int
    current_ma: int
    temperature_dc: int
    battery_mv: int
    cartridge_id: int
    cartridge_strokes: int
    host_time: float

    @classmethod
    def from_telemetry(cls, msg: Telemetry, host_time: float) -> SampleRow:
        return cls(
            msg.t_ms,
            int(msg.state),
            msg.depth_um,
            msg.rate_csps,
            msg.run_strokes,
            msg.current_ma,
            msg.temperature_dc,
            msg.battery_mv,
            msg.cartridge_id,
            msg.cartridge_strokes,
            host_time,
        )


# --- schema -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: its statements run in one transaction with the new user_version."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "sessions, runs, events, overrides, samples",
        (
            """CREATE TABLE sessions (
                id INTEGER PRIMARY KEY,
                pen_serial TEXT NOT NULL,
                pen_model TEXT NOT NULL,
                firmware TEXT NOT NULL,
                protocol_version INTEGER NOT NULL,
                boot_id INTEGER NOT NULL,
                operator TEXT NOT NULL,
                pen_url TEXT NOT NULL,
                is_simulated INTEGER NOT NULL CHECK (is_simulated IN (0, 1)),
                started_at REAL NOT NULL,
                ended_at REAL,
                outcome TEXT)""",
            """CREATE TABLE runs (
                id INTEGER PRIMARY KEY,
                session_id INTEGER NOT NULL REFERENCES sessions(id),
                pen_serial TEXT NOT NULL,
                boot_id INTEGER NOT NULL,
                run_id INTEGER NOT NULL,
                started_at REAL,
                area TEXT,
                depth_um INTEGER,
                rate_sps INTEGER,
                mode TEXT,
                target INTEGER,
                cartridge_id INTEGER,
                cartridge_lot TEXT,
                soft_cap_override_reason TEXT,
                reported_at REAL,
                report_session_id INTEGER REFERENCES sessions(id),
                outcome TEXT,
                strokes INTEGER,
                reported_target INTEGER,
                duration_ms INTEGER,
                reported_area TEXT,
                reported_depth_um INTEGER,
                reported_rate_sps INTEGER,
                reported_cartridge_id INTEGER,
                UNIQUE (pen_serial, boot_id, run_id))""",
            """CREATE TABLE events (
                id INTEGER PRIMARY KEY,
                session_id INTEGER NOT NULL REFERENCES sessions(id),
                kind TEXT NOT NULL
                    CHECK (kind IN ('event', 'fault', 'link', 'remote-command', 'host')),
                code TEXT NOT NULL,
                value INTEGER NOT NULL,
                run_id INTEGER NOT NULL,
                pen_t_ms INTEGER,
                detail TEXT NOT NULL,
                host_time REAL NOT NULL)""",
            """CREATE TABLE overrides (
                id INTEGER PRIMARY KEY,
                session_id INTEGER NOT NULL REFERENCES sessions(id),
                depth_um INTEGER NOT NULL,
                area TEXT NOT NULL,
                reason TEXT NOT NULL CHECK (length(trim(reason)) > 0),
                host_time REAL NOT NULL)""",
            """CREATE TABLE samples (
                id INTEGER PRIMARY KEY,
                session_id INTEGER NOT NULL REFERENCES sessions(id),
                t_ms INTEGER NOT NULL,
                state INTEGER NOT NULL,
                depth_um INTEGER NOT NULL,
                rate_csps INTEGER NOT NULL,
                run_strokes INTEGER NOT NULL,
                current_ma INTEGER NOT NULL,
                temperature_dc INTEGER NOT NULL,
                battery_mv INTEGER NOT NULL,
                cartridge_id INTEGER NOT NULL,
                cartridge_strokes INTEGER NOT NULL,
                host_time REAL NOT NULL)""",
        ),
    ),
    Migration(
        2,
        "indexes for per-session queries and per-run sample windows",
        (
            "CREATE INDEX runs_by_session ON runs(session_id, started_at)",
            "CREATE INDEX events_by_session ON events(session_id, host_time)",
            "CREATE INDEX overrides_by_session ON overrides(session_id)",
            "CREATE INDEX samples_by_session_time ON samples(session_id, host_time)",
            "CREATE INDEX sessions_by_pen ON sessions(pen_serial, started_at)",
        ),
    ),
    Migration(
        3,
        "session purpose; pen events stored once per pen boot",
        (
            "ALTER TABLE sessions ADD COLUMN purpose TEXT NOT NULL DEFAULT 'treatment'",
            "ALTER TABLE events ADD COLUMN pen_serial TEXT",
            "ALTER TABLE events ADD COLUMN boot_id INTEGER",
            "CREATE UNIQUE INDEX events_once ON events"
            "(pen_serial, boot_id, kind, code, value, run_id, pen_t_ms) "
            "WHERE pen_t_ms IS NOT NULL AND boot_id IS NOT NULL",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version

SESSION_COLUMNS = [
    "id",
    "pen_serial",
    "pen_model",
    "firmware",
    "protocol_version",
    "boot_id",
    "operator",
    "pen_url",
    "is_simulated",
    "started_at",
    "ended_at",
    "outcome",
    "purpose",
]
RUN_COLUMNS = [
    "id",
    "session_id",
    "pen_serial",
    "boot_id",
    "run_id",
    "started_at",
    "area",
    "depth_um",
    "rate_sps",
    "mode",
    "target",
    "cartridge_id",
    "cartridge_lot",
    "soft_cap_override_reason",
    "reported_at",
    "report_session_id",
    "outcome",
    "strokes",
    "reported_target",
    "duration_ms",
    "reported_area",
    "reported_depth_um",
    "reported_rate_sps",
    "reported_cartridge_id",
]
EVENT_COLUMNS = [
    "id",
    "session_id",
    "kind",
    "code",
    "value",
    "run_id",
    "pen_t_ms",
    "detail",
    "host_time",
    "pen_serial",
    "boot_id",
]
OVERRIDE_COLUMNS = ["id", "session_id", "depth_um", "area", "reason", "host_time"]
SAMPLE_COLUMNS = ("id", "session_id", *SampleRow._fields)


def apply_migrations(
    conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS, *, path: str = "?"
) -> int:
    """Bring ``conn`` up to the last of ``migrations``; each step commits on its own."""
    current = _user_version(conn)
    known = migrations[-1].version if migrations else 0
    if current > known:
        raise TreatmentLogError(
            f"treatment log {path} has schema version {current}, newer than the {known} this "
            "micropen knows; upgrade micropen (pip install -U micropen) to open it, or open a "
            "copy made by this version"
        )
    for step in migrations:
        if step.version > current:
            _apply_one(conn, step)
            current = step.version
    return current


def _user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def _apply_one(conn: sqlite3.Connection, step: Migration) -> None:
    """One step in one write transaction. The version is read again inside it: two processes
    opening a new log at once (two bench tools, two test workers) must not both apply it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if _user_version(conn) >= step.version:
            conn.execute("COMMIT")
            return
        for statement in step.statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {int(step.version)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


# --- read models -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SessionSummary:
    id: int
    pen_serial: str
    operator: str
    started_at: float
    ended_at: float | None
    outcome: str | None
    runs: int
    strokes_delivered: int
    faults: int
    overrides: int
    is_simulated: bool


@dataclass(frozen=True, slots=True)
class RunDetail:
    """A run as commanded (``started_at`` None if the start was never recorded) and as the pen
    reported it (``reported_at`` None until its report arrives), with the measured depth and
    rate of the RUNNING samples received between this run's start and the next run's start."""

    id: int
    session_id: int
    pen_serial: str
    boot_id: int
    run_id: int
    started_at: float | None
    area: str | None
    depth_um: int | None
    rate_sps: int | None
    mode: str | None
    target: int | None
    cartridge_id: int | None
    cartridge_lot: str | None
    soft_cap_override_reason: str | None
    reported_at: float | None
    report_session_id: int | None
    outcome: str | None
    strokes: int | None
    reported_target: int | None
    duration_ms: int | None
    reported_area: str | None
    reported_depth_um: int | None
    reported_rate_sps: int | None
    reported_cartridge_id: int | None
    samples: int = 0
    depth_um_min: int | None = None
    depth_um_max: int | None = None
    depth_um_mean: float | None = None
    rate_csps_min: int | None = None
    rate_csps_max: int | None = None
    rate_csps_mean: float | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    session_id: int
    kind: str
    code: str
    value: int
    run_id: int
    pen_t_ms: int | None
    detail: str
    host_time: float
    pen_serial: str | None = None
    boot_id: int | None = None


@dataclass(frozen=True, slots=True)
class OverrideRecord:
    id: int
    session_id: int
    depth_um: int
    area: str
    reason: str
    host_time: float


@dataclass(frozen=True, slots=True)
class SessionDetail:
    id: int
    pen_serial: str
    pen_model: str
    firmware: str
    protocol_version: int
    boot_id: int
    operator: str
    pen_url: str
    is_simulated: bool
    started_at: float
    ended_at: float | None
    outcome: str | None
    purpose: str = "treatment"
    runs: list[RunDetail] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    overrides: list[OverrideRecord] = field(default_factory=list)
    sample_count: int = 0

    @property
    def strokes_delivered(self) -> int:
        return sum(r.strokes or 0 for r in self.runs)


# --- the log ---------------------------------------------------------------------------------
class TreatmentLog:
    """One SQLite treatment log. Thread-safe: one connection behind a lock."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        readonly: bool = False,
    ) -> None:
        """Open (and create or upgrade) the log; ``readonly`` only reads an existing one and
        works on read-only media (a copy on a CD, a write-protected stick, an auditor's share)."""
        self.path = str(path)
        self.readonly = readonly
        self._clock = clock
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = self._open_readonly() if readonly else self._open()
        except (sqlite3.Error, OSError) as exc:
            self._abandon()
            raise _open_error(self.path, exc) from exc
        except TreatmentLogError:
            self._abandon()
            raise

    def _shown_path(self) -> str:
        """An empty in-memory stand-in (no log written here yet) is named by where it would be."""
        return str(paths.treatment_log()) if self.path == ":memory:" else self.path

    def _open_live_readonly(self, uri: str) -> sqlite3.Connection:
        try:  # a WAL log on a read-only disk cannot get its shared-memory file: read it as is
            return self._connect_ro(f"{uri}?mode=ro")
        except sqlite3.OperationalError:
            return self._connect_ro(f"{uri}?mode=ro&immutable=1")

    def _open_readonly(self) -> sqlite3.Connection:
        if not Path(self.path).is_file():
            raise TreatmentLogError(
                f"there is no treatment log at {self.path}; check the path (--db) or MICROPEN_HOME"
            )
        uri = Path(self.path).resolve().as_uri()
        if not any(Path(self.path + side).exists() for side in ("-wal", "-shm")):
            # no writer is live and everything is in the main file: read it as is, since even
            # mode=ro would leave -wal/-shm files behind (reading must leave no trace)
            conn = self._connect_ro(f"{uri}?mode=ro&immutable=1")
        else:
            conn = self._open_live_readonly(uri)
        version = _user_version(conn)
        if version != SCHEMA_VERSION:
            conn.close()
            raise TreatmentLogError(
                f"treatment log {self.path} has schema version {version}, this micropen reads "
                f"{SCHEMA_VERSION}; open it once where it can be written (it is upgraded in "
                "place), or read it with the micropen that wrote it"
            )
        return conn

    def _connect_ro(self, uri: str) -> sqlite3.Connection:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self._conn = conn
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA fullfsync = ON")  # macOS: flush the drive cache, not just the OS
        conn.execute("PRAGMA checkpoint_fullfsync = ON")
        mode = _enable_wal(conn)
        if mode not in ("wal", "memory"):
            raise TreatmentLogError(
                f"treatment log {self.path} cannot use WAL journalling (got {mode!r}); put the "
                "log on a local disk (WAL does not work on network file systems)"
            )
        conn.execute("PRAGMA synchronous = FULL")
        apply_migrations(conn, path=self.path)
        return conn

    def _abandon(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @classmethod
    def default_path(cls, env: Mapping[str, str] | None = None) -> Path:
        """$MICROPEN_HOME/treatment.sqlite, else the per-user data folder (host/paths.py).
        Not created here: opening the log for writing creates its folder."""
        return paths.treatment_log(env)

    # --- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return _user_version(self._live())

    def settings(self) -> dict[str, int | str]:
        """The durability settings in force on this connection, as SQLite reports them."""
        names = ("journal_mode", "synchronous", "foreign_keys", "fullfsync", "user_version")
        return {name: self._read(f"PRAGMA {name}")[0][0] for name in names}

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise TreatmentLogError(f"treatment log {self.path} is closed; open a new one")
        return self._conn

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One committed transaction; any failure means nothing of it was stored."""
        with self._lock:
            conn = self._live()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise _storage_error(self.path, what, exc) from exc

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Several reads that see one committed state (a WAL read transaction)."""
        with self._lock:
            conn = self._live()
            conn.execute("BEGIN")
            try:
                yield
            finally:
                conn.execute("COMMIT")  # nothing was written: this only ends the snapshot

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            conn = self._live()
            try:
                cur = conn.execute(sql, params)
                cur.row_factory = sqlite3.Row
                return list(cur.fetchall())
            except sqlite3.Error as exc:
                raise TreatmentLogError(f"could not read {self.path}: {exc}") from exc

    def _session_row(self, conn: sqlite3.Connection, session_id: int) -> tuple[str, int]:
        row = conn.execute(
            "SELECT pen_serial, boot_id FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        if row is None:
            raise TreatmentLogError(
                f"session {session_id} does not exist in {self.path}; call start_session() "
                "first and use the id it returns"
            )
        return str(row[0]), int(row[1])

    # --- writes ------------------------------------------------------------------------------
    def start_session(
        self,
        *,
        pen_serial: str,
        pen_model: str,
        firmware: str,
        protocol_version: int,
        boot_id: int,
        operator: str,
        pen_url: str,
        is_simulated: bool,
        started_at: float | None = None,
        purpose: str = "treatment",
    ) -> int:
        _check_text(pen_serial=pen_serial, pen_model=pen_model, firmware=firmware)
        _check_text(operator=operator, pen_url=pen_url, purpose=purpose)
        t = _time(started_at, self._clock, "started_at")
        with self._write("session start") as conn:
            cur = conn.execute(
                "INSERT INTO sessions (pen_serial, pen_model, firmware, protocol_version, "
                "boot_id, operator, pen_url, is_simulated, started_at, purpose) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (pen_serial, pen_model, firmware, protocol_version, boot_id, operator, pen_url,
                 int(bool(is_simulated)), t, purpose),
            )  # fmt: skip
            session_id = cur.lastrowid
        assert session_id is not None
        return session_id

    def record_run_start(
        self,
        session_id: int,
        *,
        run_id: int,
        area: str,
        depth_um: int,
        rate_sps: int,
        mode: str,
        target: int,
        cartridge_id: int,
        cartridge_lot: str,
        soft_cap_override_reason: str | None,
        boot_id: int | None = None,
        started_at: float | None = None,
    ) -> None:
        """Store a run as commanded. ``boot_id`` defaults to the session's; pass the new one if
        the pen rebooted within the session. Recording the same start twice is a no-op;
        the same run id with other settings, or after its report, raises: that is a new run
        under a stale boot id, and merging it silently would lose it."""
        _check_text(area=area, mode=mode, cartridge_lot=cartridge_lot)
        if soft_cap_override_reason is not None:
            _check_reason(soft_cap_override_reason)
        t = _time(started_at, self._clock, "started_at")
        start = {
            "area": area, "depth_um": depth_um, "rate_sps": rate_sps, "mode": mode,
            "target": target, "cartridge_id": cartridge_id, "cartridge_lot": cartridge_lot,
            "soft_cap_override_reason": soft_cap_override_reason,
        }  # fmt: skip
        with self._write(f"start of run {run_id}") as conn:
            serial, session_boot = self._session_row(conn, session_id)
            boot = session_boot if boot_id is None else boot_id
            existing = _fetch_run(conn, serial, boot, run_id)
            if existing is None:
                conn.execute(
                    "INSERT INTO runs (session_id, pen_serial, boot_id, run_id, started_at, "
                    f"{', '.join(start)}) VALUES (?, ?, ?, ?, ?, {', '.join('?' * len(start))})",
                    (session_id, serial, boot, run_id, t, *start.values()),
                )
            elif existing["started_at"] is None:  # its report came first
                sets = ", ".join(f"{k} = ?" for k in start)
                conn.execute(
                    f"UPDATE runs SET started_at = ?, {sets} WHERE id = ?",
                    (t, *start.values(), existing["id"]),
                )
                _flag_mismatch(conn, session_id, run_id, start, existing, t)
            elif existing["reported_at"] is not None or _diff(existing, start):
                raise TreatmentLogError(
                    f"run {run_id} of pen {serial} boot {boot} is already logged "
                    f"({_diff(existing, start) or 'and reported'}); if the pen rebooted, pass "
                    "its new boot_id= or start a new session"
                )

    def record_override(
        self,
        session_id: int,
        *,
        depth_um: int,
        area: str,
        reason: str,
        host_time: float | None = None,
    ) -> None:
        """Store a soft-cap override; the reason is required (FDA: > 1.5 mm not evaluated)."""
        _check_text(area=area)
        _check_reason(reason)
        t = _time(host_time, self._clock, "host_time")
        with self._write("soft-cap override") as conn:
            self._session_row(conn, session_id)
            conn.execute(
                "INSERT INTO overrides (session_id, depth_um, area, reason, host_time) "
                "VALUES (?, ?, ?, ?, ?)",
                (session_id, depth_um, area, reason, t),
            )

    def record_event(
        self,
        session_id: int,
        *,
        kind: str,
        code: str,
        value: int,
        run_id: int,
        pen_t_ms: int | None,
        detail: str = "",
        host_time: float | None = None,
        boot_id: int | None = None,
    ) -> bool:
        """Store one event; ``pen_t_ms`` is None for what the pen did not time (host, link).

        A pen event (``pen_t_ms`` given) is stored once per pen boot (``boot_id``, by default
        the session's): the same event handed over again returns False and stores nothing."""
        if kind not in EVENT_KINDS:
            raise TreatmentLogError(f"event kind {kind!r} is not one of {', '.join(EVENT_KINDS)}")
        _check_text(code=code, detail=detail)
        t = _time(host_time, self._clock, "host_time")
        with self._write(f"{kind} {code}") as conn:
            serial, session_boot = self._session_row(conn, session_id)
            boot = session_boot if boot_id is None else boot_id
            cur = conn.execute(
                "INSERT OR IGNORE INTO events (session_id, kind, code, value, run_id, pen_t_ms, "
                "detail, host_time, pen_serial, boot_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, kind, code, value, run_id, pen_t_ms, detail, t, serial, boot),
            )
            return cur.rowcount == 1

    def close_interrupted_runs(self, session_id: int, *, boot_id: int) -> int:
        """Runs of this session's pen that started under another boot and never reported can
        never report now (the pen's RAM went with the reboot): give them the outcome
        ``interrupted`` (strokes unknown) and a host event saying why. Returns how many."""
        now = self._clock()
        with self._write("interrupted runs") as conn:
            serial, _ = self._session_row(conn, session_id)
            rows = conn.execute(
                "SELECT id, run_id, boot_id FROM runs WHERE pen_serial = ? AND boot_id != ? "
                "AND reported_at IS NULL AND outcome IS NULL",
                (serial, boot_id),
            ).fetchall()
            for row_id, run_id, old_boot in rows:
                conn.execute("UPDATE runs SET outcome = 'interrupted' WHERE id = ?", (row_id,))
                detail = (
                    f"pen {serial} restarted (boot {old_boot:08x} -> {boot_id:08x}) before "
                    "reporting this run; strokes unknown, see the pen's lifetime counter"
                )
                _insert_event(conn, session_id, "host", "run_interrupted", 0, run_id, None,
                              detail, now)  # fmt: skip
        return len(rows)

    def record_run_report(
        self,
        session_id: int,
        *,
        boot_id: int,
        run_id: int,
        outcome: str,
        strokes: int,
        target: int,
        duration_ms: int,
        area: str,
        depth_um: int,
        rate_sps: int,
        cartridge_id: int,
        host_time: float | None = None,
    ) -> bool:
        """Store the pen's report of a run once. Returns False (and stores nothing new) when this
        pen's (boot_id, run_id) is already reported; a duplicate whose content differs, or a
        report that differs from the commanded run, also leaves a "host" event."""
        _check_text(outcome=outcome, area=area)
        report = {
            "outcome": outcome, "strokes": strokes, "reported_target": target,
            "duration_ms": duration_ms, "reported_area": area, "reported_depth_um": depth_um,
            "reported_rate_sps": rate_sps, "reported_cartridge_id": cartridge_id,
        }  # fmt: skip
        now = _time(host_time, self._clock, "host_time")
        with self._write(f"report of run {run_id}") as conn:
            serial, _ = self._session_row(conn, session_id)
            existing = _fetch_run(conn, serial, boot_id, run_id)
            if existing is not None and existing["reported_at"] is not None:
                if any(existing[k] != v for k, v in report.items()):
                    detail = f"duplicate report differs: {_diff(existing, report)}"
                    _insert_event(conn, session_id, "host", "run_report_conflict", strokes,
                                  run_id, None, detail, now)  # fmt: skip
                return False
            sets = ", ".join(f"{k} = ?" for k in report)
            if existing is None:
                cur = conn.execute(
                    "INSERT INTO runs (session_id, pen_serial, boot_id, run_id) VALUES (?,?,?,?)",
                    (session_id, serial, boot_id, run_id),
                )
                row_id = cur.lastrowid
            else:
                row_id = existing["id"]
                if existing["started_at"] is not None:
                    _flag_mismatch(conn, session_id, run_id, existing, report, now)
            conn.execute(
                f"UPDATE runs SET reported_at = ?, report_session_id = ?, {sets} WHERE id = ?",
                (now, session_id, *report.values(), row_id),
            )
        return True

    def add_samples(self, session_id: int, samples: Sequence[SampleRow]) -> None:
        """Store a batch of telemetry samples in one transaction: all of them or none."""
        if not samples:
            return
        rows = [(session_id, *_sample_tuple(s)) for s in samples]
        with self._write(f"{len(rows)} telemetry samples") as conn:
            self._session_row(conn, session_id)
            conn.executemany(
                f"INSERT INTO samples ({', '.join(SAMPLE_COLUMNS[1:])}) "
                f"VALUES ({', '.join('?' * (len(SAMPLE_COLUMNS) - 1))})",
                rows,
            )

    def end_session(self, session_id: int, *, outcome: str, ended_at: float | None = None) -> None:
        """Close a session. Ending it again with the same outcome is a no-op."""
        _check_text(outcome=outcome)
        t = _time(ended_at, self._clock, "ended_at")
        with self._write(f"end of session {session_id}") as conn:
            self._session_row(conn, session_id)
            row = conn.execute(
                "SELECT ended_at, outcome FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row[0] is not None:
                if row[1] != outcome:
                    raise TreatmentLogError(
                        f"session {session_id} already ended with outcome {row[1]!r}; it cannot "
                        f"end again as {outcome!r} (record an event instead)"
                    )
                return
            conn.execute(
                "UPDATE sessions SET ended_at = ?, outcome = ? WHERE id = ?",
                (t, outcome, session_id),
            )

    # --- reads -------------------------------------------------------------------------------
    def sessions(self, *, pen_serial: str | None = None, limit: int = 100) -> list[SessionSummary]:
        """Newest first."""
        where = "" if pen_serial is None else "WHERE s.pen_serial = ?"
        params: list[Any] = [] if pen_serial is None else [pen_serial]
        rows = self._read(
            "SELECT s.id, s.pen_serial, s.operator, s.started_at, s.ended_at, s.outcome, "
            "(SELECT count(*) FROM runs r WHERE r.session_id = s.id) AS runs, "
            "(SELECT coalesce(sum(r.strokes), 0) FROM runs r WHERE r.session_id = s.id) "
            "  AS strokes_delivered, "
            "(SELECT count(*) FROM events e WHERE e.session_id = s.id AND e.kind = 'fault') "
            "  AS faults, "
            "(SELECT count(*) FROM overrides o WHERE o.session_id = s.id) AS overrides, "
            f"s.is_simulated FROM sessions s {where} "
            "ORDER BY s.started_at DESC, s.id DESC LIMIT ?",
            [*params, limit],
        )
        return [
            SessionSummary(**{**dict(r), "is_simulated": bool(r["is_simulated"])}) for r in rows
        ]

    def session(self, session_id: int) -> SessionDetail:
        with self._snapshot():
            return self._session_detail(session_id)

    def _session_detail(self, session_id: int) -> SessionDetail:
        rows = self._read("SELECT * FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            raise NoSuchSession(
                f"session {session_id} does not exist in {self._shown_path()}; "
                "micropen log list shows the sessions there"
            )
        s = dict(rows[0])
        s["is_simulated"] = bool(s["is_simulated"])
        sample_count = self._read(
            "SELECT count(*) FROM samples WHERE session_id = ?", (session_id,)
        )[0][0]
        return SessionDetail(
            **s,
            runs=self._runs(session_id),
            events=[EventRecord(**dict(r)) for r in self._rows("events", session_id)],
            overrides=[OverrideRecord(**dict(r)) for r in self._rows("overrides", session_id)],
            sample_count=int(sample_count),
        )

    def _rows(self, table: str, session_id: int) -> list[sqlite3.Row]:
        return self._read(f"SELECT * FROM {table} WHERE session_id = ? ORDER BY id", (session_id,))

    def _runs(self, session_id: int) -> list[RunDetail]:
        rows = self._read(
            "SELECT * FROM runs WHERE session_id = ? ORDER BY started_at IS NULL, started_at, id",
            (session_id,),
        )
        starts = [r["started_at"] for r in rows if r["started_at"] is not None]
        runs = []
        for r in rows:
            stats: dict[str, Any] = {}
            if r["started_at"] is not None:
                later = [t for t in starts if t > r["started_at"]]
                stats = self._run_stats(session_id, r["started_at"], min(later, default=math.inf))
            runs.append(RunDetail(**dict(r), **stats))
        return runs

    def _run_stats(self, session_id: int, start: float, end: float) -> dict[str, Any]:
        row = self._read(
            "SELECT count(*) AS samples, min(depth_um) AS depth_um_min, "
            "max(depth_um) AS depth_um_max, avg(depth_um) AS depth_um_mean, "
            "min(rate_csps) AS rate_csps_min, max(rate_csps) AS rate_csps_max, "
            "avg(rate_csps) AS rate_csps_mean FROM samples "
            "WHERE session_id = ? AND state = ? AND host_time >= ? AND host_time < ?",
            (session_id, _RUNNING, start, end if math.isfinite(end) else sys.float_info.max),
        )[0]
        return dict(row)

    # --- export ------------------------------------------------------------------------------
    def _export_ids(self, session_ids: Sequence[int] | None) -> list[int]:
        known = [int(r[0]) for r in self._read("SELECT id FROM sessions ORDER BY id")]
        if session_ids is None:
            return known
        missing = sorted(set(session_ids) - set(known))
        if missing:
            raise NoSuchSession(
                f"sessions {missing} do not exist in {self._shown_path()}; "
                "micropen log list shows the sessions there"
            )
        return list(dict.fromkeys(session_ids))

    def export_json(self, session_ids: Sequence[int] | None, out: IO[str]) -> int:
        """Write one JSON document (streamed, so a long session does not fill memory)."""
        ids = self._export_ids(session_ids)
        head = {"format": EXPORT_FORMAT, "schema_version": self.schema_version}
        out.write(json.dumps(head)[:-1] + ', "sessions": [')
        for n, sid in enumerate(ids):
            out.write(",\n" if n else "\n")
            self._json_session(sid, out)
        out.write("\n]}\n")
        return len(ids)

    def _json_session(self, sid: int, out: IO[str]) -> None:
        doc: dict[str, Any] = dict(self._read("SELECT * FROM sessions WHERE id = ?", (sid,))[0])
        doc["is_simulated"] = bool(doc["is_simulated"])
        for table in ("runs", "events", "overrides"):
            doc[table] = [dict(r) for r in self._rows(table, sid)]
        doc["sample_columns"] = list(SampleRow._fields)
        out.write(json.dumps(doc, ensure_ascii=False)[:-1] + ', "samples": [')
        for n, row in enumerate(self._iter_samples([sid], SampleRow._fields)):
            out.write(("," if n else "") + "\n" + json.dumps(list(row)))
        out.write("]}")

    def _iter_samples(
        self, ids: Sequence[int], columns: Sequence[str]
    ) -> Iterator[tuple[Any, ...]]:
        sql = f"SELECT {', '.join(columns)} FROM samples WHERE session_id = ? ORDER BY id"
        for sid in ids:
            with self._lock:
                rows = self._live().execute(sql, (sid,)).fetchall()
            yield from rows

    def export_csv(self, session_ids: Sequence[int] | None, out_dir: Path) -> list[Path]:
        """sessions.csv, runs.csv, events.csv, overrides.csv, samples.csv (UTF-8, RFC 4180)."""
        ids = self._export_ids(session_ids)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tables = {
            "sessions": SESSION_COLUMNS,
            "runs": RUN_COLUMNS,
            "events": EVENT_COLUMNS,
            "overrides": OVERRIDE_COLUMNS,
        }
        written = []
        for table, columns in tables.items():
            key = "id" if table == "sessions" else "session_id"
            sql = f"SELECT {', '.join(columns)} FROM {table} WHERE {key} = ? ORDER BY id"
            rows = (r for sid in ids for r in self._read(sql, (sid,)))
            written.append(_write_csv(out_dir / f"{table}.csv", columns, rows))
        samples = self._iter_samples(ids, SAMPLE_COLUMNS)
        written.append(_write_csv(out_dir / "samples.csv", SAMPLE_COLUMNS, samples))
        return written

    # --- integrity -----------------------------------------------------------------------------
    def check(self, *, quick: bool = False) -> None:
        """Raise TreatmentLogError unless SQLite's integrity and foreign-key checks pass."""
        pragma = "quick_check" if quick else "integrity_check"
        fix = "copy the file aside, then recover with `sqlite3 FILE .recover | sqlite3 NEW`"
        try:
            problems = [str(r[0]) for r in self._read(f"PRAGMA {pragma}")]
            orphans = self._read("PRAGMA foreign_key_check")
        except TreatmentLogError as exc:  # damage bad enough that the check itself fails
            cause = exc.__cause__ or exc
            message = f"treatment log {self.path} failed {pragma}: {cause}; {fix}"
            raise TreatmentLogError(message) from exc
        if problems != ["ok"]:
            raise TreatmentLogError(
                f"treatment log {self.path} failed {pragma}: {'; '.join(problems[:10])}; {fix}"
            )
        if orphans:
            raise TreatmentLogError(
                f"treatment log {self.path} has {len(orphans)} rows pointing at missing rows "
                f"(first: {dict(orphans[0])}); copy the file aside and report it"
            )


def default_path() -> Path:
    """Module-level alias of :meth:`TreatmentLog.default_path` (other stores share the folder)."""
    return TreatmentLog.default_path()


# --- helpers ---------------------------------------------------------------------------------
def _check_text(**values: object) -> None:
    """Free text is stored as given. Refused, naming the field, before anything is written: what
    is not a str, not encodable as UTF-8, or holds a NUL (SQLite's own functions and the sqlite3
    CLI stop at a NUL, so an inspector would see less text than the log holds)."""
    for name, value in values.items():
        if not isinstance(value, str):
            raise TreatmentLogError(f"{name} must be text, got {type(value).__name__} {value!r}")
        if "\x00" in value:
            raise TreatmentLogError(f"{name} {value!r} contains a NUL character; remove it")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TreatmentLogError(
                f"{name} {value!r} is not valid Unicode text ({exc.reason}); re-enter it"
            ) from exc


def _check_reason(reason: str) -> None:
    _check_text(reason=reason)
    if not reason.strip():
        raise TreatmentLogError(
            "a soft-cap override needs a reason (depths above 1.5 mm are outside the evaluated "
            "range); ask the operator for one"
        )


def _sample_tuple(sample: Sequence[Any]) -> tuple[Any, ...]:
    if len(sample) != len(SampleRow._fields):
        raise TreatmentLogError(
            f"a sample has {len(sample)} fields, expected {len(SampleRow._fields)} "
            f"({', '.join(SampleRow._fields)}); build it with SampleRow"
        )
    if not math.isfinite(sample[-1]):
        raise TreatmentLogError(f"sample host_time {sample[-1]!r} is not a finite time")
    return tuple(sample)


def _time(value: float | None, clock: Callable[[], float], name: str) -> float:
    t = clock() if value is None else float(value)
    if not math.isfinite(t):
        raise TreatmentLogError(f"{name} {t!r} is not a finite UNIX time in seconds")
    return t


def _fetch_run(
    conn: sqlite3.Connection, serial: str, boot_id: int, run_id: int
) -> sqlite3.Row | None:
    cur = conn.execute(
        "SELECT * FROM runs WHERE pen_serial = ? AND boot_id = ? AND run_id = ?",
        (serial, boot_id, run_id),
    )
    cur.row_factory = sqlite3.Row
    row: sqlite3.Row | None = cur.fetchone()
    return row


def _diff(existing: sqlite3.Row, new: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}: {existing[k]!r} -> {v!r}" for k, v in new.items() if existing[k] != v)


_Record = Mapping[str, Any] | sqlite3.Row

_COMMANDED_VS_REPORTED = {
    "area": "reported_area",
    "depth_um": "reported_depth_um",
    "rate_sps": "reported_rate_sps",
    "target": "reported_target",
    "cartridge_id": "reported_cartridge_id",
}


def _flag_mismatch(
    conn: sqlite3.Connection,
    session_id: int,
    run_id: int,
    commanded: _Record,
    reported: _Record,
    now: float,
) -> None:
    """The pen reporting other settings than the host commanded deserves a record of its own."""
    diffs = [
        f"{cmd}: commanded {commanded[cmd]!r}, reported {reported[rep]!r}"
        for cmd, rep in _COMMANDED_VS_REPORTED.items()
        if commanded[cmd] != reported[rep]
    ]
    if diffs:
        _insert_event(conn, session_id, "host", "run_report_mismatch", int(reported["strokes"]),
                      run_id, None, "; ".join(diffs), now)  # fmt: skip


def _insert_event(
    conn: sqlite3.Connection,
    session_id: int,
    kind: str,
    code: str,
    value: int,
    run_id: int,
    pen_t_ms: int | None,
    detail: str,
    host_time: float,
) -> None:
    conn.execute(
        "INSERT INTO events (session_id, kind, code, value, run_id, pen_t_ms, detail, host_time)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (session_id, kind, code, value, run_id, pen_t_ms, detail, host_time),
    )


def _write_csv(path: Path, columns: Sequence[str], rows: Iterator[Sequence[Any]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])
    return path


_NOT_WRITABLE = {
    "SQLITE_FULL": "the disk is full; free space on it",
    "SQLITE_READONLY": "the file or its folder is read-only; make it writable",
    "SQLITE_IOERR": "the disk reported an I/O error (full, removed or failing); check it",
    "SQLITE_CANTOPEN": "the file cannot be opened; check the folder exists and is writable",
    "SQLITE_PERM": "permission denied; make the file and its folder writable for this user",
}


def _storage_error(path: str, what: str, exc: sqlite3.Error) -> TreatmentLogError:
    """A disk that is full or read-only is the operator's to fix, not a damaged log."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    for prefix, fix in _NOT_WRITABLE.items():
        if name.startswith(prefix):
            return LogNotWritable(
                f"cannot write the treatment log {path} (not stored: {what}): {fix}, then "
                "connect again — the pen keeps what it has not handed over"
            )
    return TreatmentLogError(
        f"could not store {what} in {path}: {exc}; it is NOT stored, do not acknowledge it"
    )


def _open_error(path: str, exc: sqlite3.Error | OSError) -> TreatmentLogError:
    """Why a log could not be opened: the disk (full, read-only, no permission) or the file."""
    errno_fix = {
        28: "the disk is full; free space on it",  # ENOSPC
        30: "the disk is read-only; use a writable folder (MICROPEN_HOME)",  # EROFS
        13: "permission denied; make the folder writable for this user",  # EACCES
    }
    if isinstance(exc, OSError) and exc.errno in errno_fix:
        return LogNotWritable(f"cannot open the treatment log {path}: {errno_fix[exc.errno]}")
    name = getattr(exc, "sqlite_errorname", "") or ""
    folder = Path(path).parent
    read_only_folder = folder.is_dir() and not os.access(folder, os.W_OK)
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) and (
        read_only_folder or _on_read_only_mount(folder)
    ):
        return LogNotWritable(
            f"cannot open the treatment log {path} for writing: its folder is on a read-only "
            "disk or not writable; use a writable folder (MICROPEN_HOME), or read it with "
            "micropen log list --db"
        )
    for prefix, fix in _NOT_WRITABLE.items():
        if name.startswith(prefix) and prefix != "SQLITE_CANTOPEN":
            return LogNotWritable(f"cannot open the treatment log {path}: {fix}")
    return TreatmentLogError(
        f"cannot open treatment log {path}: {exc}; if the file is damaged, move it aside (keep "
        "it for the record) and start a new log"
    )


def _on_read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _enable_wal(conn: sqlite3.Connection, attempts: int = 100) -> str:
    """Switch to WAL. On a brand-new file another process may be doing the same at the same
    instant, and SQLite answers that switch with 'locked' at once (no busy wait): retry."""
    for _ in range(attempts - 1):
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            time.sleep(0.02)
    return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
