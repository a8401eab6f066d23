"""Calibration records in SQLite: one row per attempt, its points and instruments indexed.

A record is inserted when a procedure starts (outcome *incomplete*, reason "in progress") and
replaced when it ends, so a process killed mid-way still leaves a trace. The full record is
kept as JSON beside the indexed columns; the JSON is the source of truth, the columns serve
queries (history per pen, last calibration per quantity) and auditors with plain SQL.

The store also numbers certificates: when a record begins it gets the next number of its
station's series, ``<prefix>-<year>-<nnnnn>`` (the prefix from the station file), unique in
the database and kept for good, so exporting the certificate again gives the same number.
Schema v2 added that number and each point's expanded uncertainty; a v1 database is
upgraded in place the first time it is written, and read as it is until then.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path

from micropen.host import paths
from micropen.host.errors import InvalidInput

from .errors import CalibrationError
from .measurements import Quantity
from .record import CalibrationRecord, Outcome

DEFAULT_PREFIX = "MP"  # the certificate series without a station file (station.DEFAULT_PREFIX)

__all__ = ["DB_FILENAME", "SCHEMA_VERSION", "RecordStore", "RecordStoreError", "default_db_path"]

DB_FILENAME = "calibration.sqlite"
SCHEMA_VERSION = 2
_ID_PREFIX_MIN = 6  # a shorter record id prefix is too likely to name several records

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calibrations (
    record_id        TEXT PRIMARY KEY,
    procedure        TEXT NOT NULL,
    pen_serial       TEXT NOT NULL,
    pen_model        TEXT NOT NULL,
    firmware         TEXT NOT NULL,
    technician       TEXT NOT NULL,
    station          TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    finished_at      TEXT,
    outcome          TEXT NOT NULL,
    reason           TEXT NOT NULL,
    committed        INTEGER NOT NULL,
    interval_days    INTEGER NOT NULL,
    software_version TEXT NOT NULL,
    ambient_c        REAL,
    record_json      TEXT NOT NULL,
    certificate_number TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS calibrations_pen ON calibrations (pen_serial, started_at);
CREATE TABLE IF NOT EXISTS points (
    record_id  TEXT NOT NULL REFERENCES calibrations (record_id) ON DELETE CASCADE,
    quantity   TEXT NOT NULL,
    stage      TEXT NOT NULL,
    set_value  REAL NOT NULL,
    mean       REAL NOT NULL,
    error      REAL NOT NULL,
    tolerance  REAL NOT NULL,
    verdict    TEXT NOT NULL,
    readings   TEXT NOT NULL,
    expanded_uncertainty REAL,
    coverage_factor      REAL
);
CREATE INDEX IF NOT EXISTS points_record ON points (record_id);
CREATE TABLE IF NOT EXISTS instruments (
    record_id       TEXT NOT NULL REFERENCES calibrations (record_id) ON DELETE CASCADE,
    role            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    manufacturer    TEXT NOT NULL,
    model           TEXT NOT NULL,
    serial          TEXT NOT NULL,
    cal_due         TEXT NOT NULL,
    overdue         INTEGER NOT NULL,
    override_reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instruments_record ON instruments (record_id);
CREATE UNIQUE INDEX IF NOT EXISTS calibrations_certificate
    ON calibrations (certificate_number) WHERE certificate_number != '';
"""
_UPGRADE_V1 = """
ALTER TABLE calibrations ADD COLUMN certificate_number TEXT NOT NULL DEFAULT '';
ALTER TABLE points ADD COLUMN expanded_uncertainty REAL;
ALTER TABLE points ADD COLUMN coverage_factor REAL;
CREATE UNIQUE INDEX IF NOT EXISTS calibrations_certificate
    ON calibrations (certificate_number) WHERE certificate_number != '';
"""


def default_db_path() -> Path:
    """``$MICROPEN_HOME/calibration.sqlite``, else the per-user data folder (host/paths.py)."""
    return paths.calibration_db()


class RecordStoreError(CalibrationError):
    """The calibration database cannot be read or written; the message names the file."""


class RecordStore:
    """The calibration database. Cheap to create; each call opens its own connection."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()

    # --- writing -----------------------------------------------------------------------------
    def begin(self, record: CalibrationRecord, prefix: str = DEFAULT_PREFIX) -> None:
        """Insert a record as it starts, numbering its certificate (``prefix``: the station's
        series) unless it has a number; it stays incomplete unless :meth:`finish` replaces it."""
        self._write(record, prefix)

    def finish(self, record: CalibrationRecord) -> None:
        """Replace the record with its final state (outcome, points, fits, notes)."""
        self._write(record)

    # --- reading -------------------------------------------------------------------------------
    def get(self, record_id: str) -> CalibrationRecord | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT record_json FROM calibrations WHERE record_id = ?", (record_id,)
            ).fetchone()
        return CalibrationRecord.from_dict(json.loads(row[0])) if row else None

    def find(self, reference: str) -> CalibrationRecord:
        """The record a person names: its id, a unique prefix of it (≥ 6 characters, as
        ``cal history`` shows), or its certificate number. InvalidInput when none or several
        match, naming the fix."""
        reference = reference.strip()
        record = self.get(reference) if reference else None
        if record is not None:
            return record
        rows = self._matching(reference) if len(reference) >= _ID_PREFIX_MIN else []
        if len(rows) == 1:
            return CalibrationRecord.from_dict(json.loads(rows[0][1]))
        if rows:
            raise InvalidInput(
                f"{reference!r} names {len(rows)} records ({', '.join(r[0][:12] for r in rows)}"
                "); give more of the record id"
            )
        raise InvalidInput(
            f"no calibration record {reference!r} in {self.path}; give a record id (at least "
            f"{_ID_PREFIX_MIN} characters) or a certificate number from `micropen cal history`"
        )

    def _matching(self, reference: str) -> list[tuple[str, str]]:
        query = "SELECT record_id, record_json FROM calibrations WHERE record_id LIKE ? ESCAPE '\\'"
        args: tuple[str, ...] = (_like_prefix(reference),)
        with self._connect() as db:
            if _has_column(db, "calibrations", "certificate_number"):  # schema v2 and later
                query += " OR certificate_number = ?"
                args += (reference,)
            return [(r[0], r[1]) for r in db.execute(query, args).fetchall()]

    def history(self, pen_serial: str | None = None) -> list[CalibrationRecord]:
        """Every record, newest first; one pen's when ``pen_serial`` is given."""
        query = "SELECT record_json FROM calibrations"
        args: tuple[str, ...] = ()
        if pen_serial is not None:
            query += " WHERE pen_serial = ?"
            args = (pen_serial,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY started_at DESC, rowid DESC", args).fetchall()
        return [CalibrationRecord.from_dict(json.loads(r[0])) for r in rows]

    def pens(self) -> list[str]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT DISTINCT pen_serial FROM calibrations ORDER BY pen_serial"
            ).fetchall()
        return [r[0] for r in rows]

    def last_pass(self, pen_serial: str, quantity: Quantity) -> CalibrationRecord | None:
        """The newest passing record that covered ``quantity`` (a passing verify counts)."""
        for record in self.history(pen_serial):
            if record.outcome.passed and quantity in record.quantities():
                return record
        return None

    def last_finished(self, pen_serial: str, quantity: Quantity) -> CalibrationRecord | None:
        """The newest record that covered ``quantity`` and ran to a statement (pass, fail or
        conditional): what the pen was last found to be. An incomplete attempt says nothing
        about the pen (and left its calibration as it was), so it is skipped."""
        for record in self.history(pen_serial):
            if record.outcome is not Outcome.INCOMPLETE and quantity in record.quantities():
                return record
        return None

    # --- plumbing --------------------------------------------------------------------------------
    @contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction. Reading never creates anything (no folder, no empty database: a
        mistyped ``--db`` must not leave a file behind); a missing database reads as empty.
        Every SQLite failure becomes one :class:`RecordStoreError` naming the file."""
        try:
            with self._open(write) as db, db:
                yield db
        except sqlite3.Error as exc:
            raise RecordStoreError(
                f"the calibration database {self.path} cannot be "
                f"{'written' if write else 'read'} ({exc}); check the path (--db), or move a "
                "damaged file aside and restore it from a backup"
            ) from None

    @contextmanager
    def _open(self, write: bool) -> Iterator[sqlite3.Connection]:
        if write:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RecordStoreError(
                    f"cannot create the folder of the calibration database {self.path} "
                    f"({exc.strerror}); use a writable folder (--db or MICROPEN_HOME)"
                ) from None
            target, uri = str(self.path), False
        elif not self.path.is_file():
            target, uri = ":memory:", False
        else:
            target, uri = f"{self.path.resolve().as_uri()}?mode=ro", True
        with closing(sqlite3.connect(target, timeout=10.0, uri=uri)) as db:
            db.execute("PRAGMA foreign_keys = ON")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0 and (write or target == ":memory:"):
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version == 1 and write:
                db.executescript(_UPGRADE_V1)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version == 0 and not _has_table(db, "calibrations"):
                raise RecordStoreError(
                    f"{self.path} is not a micropen calibration database; check the path (--db)"
                )
            elif version > SCHEMA_VERSION:
                raise RecordStoreError(
                    f"{self.path} has calibration schema v{version}, newer than this "
                    f"micropen's v{SCHEMA_VERSION}; update micropen to read it"
                )
            yield db

    def _write(self, record: CalibrationRecord, prefix: str | None = None) -> None:
        with self._connect(write=True) as db:
            db.execute("BEGIN IMMEDIATE")  # one writer numbers at a time
            if prefix is not None and not record.certificate_number:
                record.certificate_number = _next_number(db, prefix, record.started_at.year)
            data = record.to_dict()
            db.execute("DELETE FROM calibrations WHERE record_id = ?", (record.record_id,))
            db.execute(
                "INSERT INTO calibrations VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.record_id,
                    record.procedure,
                    record.pen.serial,
                    record.pen.model,
                    record.pen.firmware,
                    record.technician,
                    record.station,
                    _iso(record.started_at),
                    _iso(record.finished_at) if record.finished_at else None,
                    record.outcome.value,
                    record.reason,
                    int(record.committed),
                    record.interval_days,
                    record.software_version,
                    record.ambient_c,
                    json.dumps(data, sort_keys=True),
                    record.certificate_number,
                ),
            )
            db.executemany(
                "INSERT INTO points VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        record.record_id,
                        p.quantity.value,
                        p.stage.value,
                        p.set_value,
                        p.mean,
                        p.error,
                        p.tolerance,
                        p.verdict.value,
                        json.dumps(list(p.readings)),
                        p.expanded,
                        p.uncertainty.coverage_factor if p.uncertainty else None,
                    )
                    for p in record.points
                ],
            )
            db.executemany(
                "INSERT INTO instruments VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        record.record_id,
                        i.role,
                        i.kind,
                        i.manufacturer,
                        i.model,
                        i.serial,
                        i.cal_due.isoformat(),
                        int(i.overdue),
                        i.override_reason,
                    )
                    for i in record.instruments
                ],
            )


def _next_number(db: sqlite3.Connection, prefix: str, year: int) -> str:
    """``<prefix>-<year>-<n>``, n one past the highest of that series in this database."""
    series = f"{prefix}-{year}-"
    rows = db.execute(
        "SELECT certificate_number FROM calibrations WHERE certificate_number LIKE ? ESCAPE '\\'",
        (_like_prefix(series),),
    ).fetchall()
    numbers = [int(tail) for (number,) in rows if (tail := number[len(series) :]).isdigit()]
    return f"{series}{max(numbers, default=0) + 1:05d}"


def _like_prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})"))


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return row.fetchone() is not None


def _iso(moment: datetime) -> str:
    return moment.isoformat()
