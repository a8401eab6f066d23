"""``micropen fleet report``: per site and pen, what the fleet database holds.

A pen that moved between sites has a row at each, with what it did there.

Sessions, runs and strokes (the pens' own counts), cartridges used in runs, faults and
overrides, and the calibration status with its due date — computed by the same rule as on a bench
(:func:`micropen.host.calibration.due.check_due`), from the calibration records the benches
published, so a pen is "overdue" in the report exactly when it is on its bench.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import psycopg

from ..calibration.due import DueStatus, check_due
from ..calibration.measurements import Quantity
from ..calibration.record import CalibrationRecord, Outcome
from .migrate import check_schema

__all__ = ["PenReport", "fleet_report"]

CONNECT_TIMEOUT_S = 5

# one row per (site, serial) the records name: a pen moved to another site shows at both, each
# with what it did there (the pens table keeps only the site it was first seen at)
_PENS = """
WITH seen AS (
    SELECT site, serial, started_at AS t FROM sessions
    UNION ALL SELECT site, serial, at FROM runs
    UNION ALL SELECT site, serial, at FROM events
    UNION ALL SELECT site, serial, at FROM faults
    UNION ALL SELECT site, serial, at FROM overrides
    UNION ALL SELECT site, serial, at FROM cartridge_mounts
    UNION ALL SELECT site, serial, at FROM calibration_records
), pairs AS (
    SELECT site, serial, max(t) AS last_seen FROM seen
    WHERE %(site)s::text IS NULL OR site = %(site)s
    GROUP BY site, serial
)
SELECT pr.site, pr.serial, p.model, p.firmware, p.simulated,
  (SELECT count(*) FROM sessions s WHERE s.serial = pr.serial AND s.site = pr.site),
  (SELECT count(*) FROM runs r WHERE r.serial = pr.serial AND r.site = pr.site),
  (SELECT coalesce(sum(r.strokes), 0) FROM runs r
   WHERE r.serial = pr.serial AND r.site = pr.site),
  (SELECT count(*) FROM (
      SELECT r.cartridge_id FROM runs r
      WHERE r.serial = pr.serial AND r.site = pr.site AND r.cartridge_id > 0
      UNION
      SELECT m.cartridge_id FROM cartridge_mounts m
      WHERE m.serial = pr.serial AND m.site = pr.site AND m.action = 'used'
        AND m.cartridge_id > 0) c),
  (SELECT count(*) FROM faults f WHERE f.serial = pr.serial AND f.site = pr.site),
  (SELECT count(*) FROM overrides o WHERE o.serial = pr.serial AND o.site = pr.site),
  pr.last_seen
FROM pairs pr LEFT JOIN pens p ON p.serial = pr.serial
ORDER BY pr.site, pr.serial
"""
_CALIBRATIONS = """
SELECT serial, record FROM calibration_records
WHERE serial = ANY(%(serials)s) AND finished_at IS NOT NULL
ORDER BY finished_at DESC
"""


@dataclass(frozen=True, slots=True)
class PenReport:
    site: str
    serial: str
    model: str | None
    firmware: str | None
    simulated: bool | None
    sessions: int
    runs: int
    strokes: int
    cartridges: int
    faults: int
    overrides: int
    last_seen: datetime | None
    calibration: DueStatus

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "serial": self.serial,
            "model": self.model,
            "firmware": self.firmware,
            "simulated": self.simulated,
            "sessions": self.sessions,
            "runs": self.runs,
            "strokes": self.strokes,
            "cartridges": self.cartridges,
            "faults": self.faults,
            "overrides": self.overrides,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "calibration": self.calibration.to_dict(),
        }


class _PublishedRecords:
    """The pens' published calibration records, newest first, as the due rule reads them."""

    def __init__(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        self._by_pen: dict[str, list[CalibrationRecord]] = defaultdict(list)
        for serial, record in rows:
            self._by_pen[serial].append(CalibrationRecord.from_dict(record))

    def last_finished(self, pen_serial: str, quantity: Quantity) -> CalibrationRecord | None:
        for record in self._by_pen.get(pen_serial, []):
            if record.outcome is not Outcome.INCOMPLETE and quantity in record.quantities():
                return record
        return None


def fleet_report(
    dsn: str, *, site: str | None = None, today: date | None = None
) -> list[PenReport]:
    """Every pen of the fleet (or of ``site``), ordered by site and serial."""
    today = today or datetime.now(UTC).date()
    with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        check_schema(conn)
        pens = conn.execute(_PENS, {"site": site}).fetchall()
        serials = [row[1] for row in pens]
        records = conn.execute(_CALIBRATIONS, {"serials": serials}).fetchall()
    published = _PublishedRecords([(serial, record) for serial, record in records])
    out = []
    for row in pens:
        (site_, serial, model, firmware, simulated, sessions, runs, strokes, cartridges,
         faults, overrides, last_seen) = row  # fmt: skip
        out.append(
            PenReport(
                site_, serial, model, firmware, simulated, int(sessions), int(runs),
                int(strokes), int(cartridges), int(faults), int(overrides),
                _when(last_seen),
                check_due(serial, store=published, today=today),
            )
        )  # fmt: skip
    return out


def _when(seconds: float | None) -> datetime | None:
    """A record's time as a date, or None for one no clock can have made (a record with an
    absurd ``at`` must not take the whole report down)."""
    if seconds is None or not math.isfinite(seconds):
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None
