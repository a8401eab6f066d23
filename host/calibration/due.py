"""When each pen is due for calibration, from the records.

For each quantity (depth and stroke rate) the newest record that covered it and ran to a
statement decides: if it failed (fail or conditional fail) the pen is *failed* — not
calibrated, whatever passed before: a pen whose last verify failed is out of tolerance now.
Otherwise it passed (pass or conditional pass) and the quantity is due ``interval_days``
later; the earlier of the two dates is the pen's due date. An incomplete attempt says nothing
about the pen and is skipped. The interval is the one recorded with that calibration unless
the caller overrides it. The host calls :func:`check_due` after connecting and warns when the
pen needs attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from typing import Protocol

from .measurements import Quantity
from .record import CalibrationRecord
from .records import RecordStore

__all__ = [
    "DEFAULT_INTERVAL_DAYS",
    "DUE_SOON_DAYS",
    "DueState",
    "DueStatus",
    "FinishedRecords",
    "all_due",
    "check_due",
]

DEFAULT_INTERVAL_DAYS = 365
DUE_SOON_DAYS = 30
MAX_INTERVAL_DAYS = 5 * 365


class DueState(StrEnum):
    OK = "ok"
    DUE_SOON = "due_soon"  # within DUE_SOON_DAYS
    OVERDUE = "overdue"
    FAILED = "failed"  # the newest finished record of a quantity failed
    NEVER = "never"  # no finished calibration on record for a quantity


@dataclass(frozen=True)
class DueStatus:
    serial: str
    state: DueState
    due: date | None  # None when never calibrated
    days_left: int | None  # negative when overdue
    last_calibrated: date | None  # the limiting quantity's last passing calibration
    limiting: Quantity | None  # the quantity that is due first (or never calibrated)
    record_id: str | None

    @property
    def needs_attention(self) -> bool:
        return self.state in (DueState.OVERDUE, DueState.FAILED, DueState.NEVER)

    @property
    def message(self) -> str:
        """One line for a warning or a table."""
        what = self.limiting.value if self.limiting else "depth and rate"
        if self.state is DueState.NEVER:
            return (
                f"pen {self.serial}: no passing {what} calibration on record; "
                f"run `micropen calibrate all --pen URL`"
            )
        if self.state is DueState.FAILED:
            return (
                f"pen {self.serial}: its last {what} calibration or verification failed "
                f"(record {(self.record_id or '?')[:12]}); it is not calibrated: run "
                "`micropen calibrate all --pen URL`"
            )
        assert self.due is not None and self.days_left is not None
        if self.state is DueState.OVERDUE:
            return (
                f"pen {self.serial}: {what} calibration overdue since {self.due} "
                f"({-self.days_left} days); run `micropen calibrate all --pen URL`"
            )
        return f"pen {self.serial}: {what} calibration due {self.due} (in {self.days_left} days)"

    def to_dict(self) -> dict[str, object]:
        return {
            "serial": self.serial,
            "state": self.state.value,
            "due": self.due.isoformat() if self.due else None,
            "days_left": self.days_left,
            "last_calibrated": self.last_calibrated.isoformat() if self.last_calibrated else None,
            "limiting": self.limiting.value if self.limiting else None,
            "record_id": self.record_id,
        }


class FinishedRecords(Protocol):
    """Where the rule reads a pen's records: a bench's store, or the fleet database's."""

    def last_finished(self, pen_serial: str, quantity: Quantity) -> CalibrationRecord | None: ...


def check_due(
    serial: str,
    *,
    store: FinishedRecords | None = None,
    today: date | None = None,
    interval_days: int | None = None,
) -> DueStatus:
    """The pen's calibration due status; ``today`` defaults to the local date."""
    store = store if store is not None else RecordStore()
    today = today if today is not None else date.today()
    candidates: list[tuple[date, Quantity, date, str]] = []
    for quantity in (Quantity.DEPTH, Quantity.RATE):
        record = store.last_finished(serial, quantity)
        if record is None:
            return DueStatus(serial, DueState.NEVER, None, None, None, quantity, None)
        done = (record.finished_at or record.started_at).date()
        if not record.outcome.passed:
            return DueStatus(serial, DueState.FAILED, None, None, done, quantity, record.record_id)
        interval = interval_days if interval_days is not None else record.interval_days
        candidates.append((done + timedelta(days=interval), quantity, done, record.record_id))
    due, quantity, done, record_id = min(candidates, key=lambda c: c[0])
    days_left = (due - today).days
    if days_left < 0:
        state = DueState.OVERDUE
    elif days_left <= DUE_SOON_DAYS:
        state = DueState.DUE_SOON
    else:
        state = DueState.OK
    return DueStatus(serial, state, due, days_left, done, quantity, record_id)


def all_due(
    store: RecordStore, *, today: date | None = None, interval_days: int | None = None
) -> list[DueStatus]:
    """Every pen in the records, soonest due first (never-calibrated and failed ones first)."""
    statuses = [
        check_due(serial, store=store, today=today, interval_days=interval_days)
        for serial in store.pens()
    ]
    return sorted(statuses, key=lambda s: (s.days_left is not None, s.days_left or 0, s.serial))
