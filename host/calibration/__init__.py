"""Technician calibration: procedures as data, reference instruments, records, certificates.

Typical use (what ``micropen calibrate all`` does)::

    async with await AsyncPen.open(url) as pen:
        instruments = await open_instruments("sim", quantities_of("all"), bench=pen.bench,
                                              today=date.today())
        record = await run_calibration(pen, "all", instruments, store=RecordStore())
        write_certificate(record, Path("certs"))

and after connecting to any pen, ``check_due(pen.identity.serial)`` says whether its
calibration is overdue. See docs/calibration.md.
"""

from __future__ import annotations

from .due import DEFAULT_INTERVAL_DAYS, DueState, DueStatus, all_due, check_due
from .errors import (
    CalibrationError,
    CalibrationStorageError,
    FitError,
    InstrumentDisconnected,
    InstrumentError,
    InstrumentRefused,
    ReadingOutOfRange,
)
from .fit import CalValues, Line, corrected_depth, corrected_rate, fit_line, fit_slope
from .instruments import (
    Instrument,
    InstrumentInfo,
    ManualInstrument,
    ScpiInstrument,
    SimBenchInstrument,
    check_instruments,
    check_spec,
    close_instruments,
    open_instruments,
)
from .measurements import Limit, Quantity, Stage, Verdict
from .procedure import (
    PROCEDURES,
    Phase,
    ProgressEvent,
    Settings,
    quantities_of,
    run_calibration,
)
from .record import CalibrationRecord, Outcome
from .records import RecordStore, default_db_path

__all__ = [
    "DEFAULT_INTERVAL_DAYS",
    "PROCEDURES",
    "CalValues",
    "CalibrationError",
    "CalibrationRecord",
    "CalibrationStorageError",
    "DueState",
    "DueStatus",
    "FitError",
    "Instrument",
    "InstrumentDisconnected",
    "InstrumentError",
    "InstrumentInfo",
    "InstrumentRefused",
    "Limit",
    "Line",
    "ManualInstrument",
    "Outcome",
    "Phase",
    "ProgressEvent",
    "Quantity",
    "ReadingOutOfRange",
    "RecordStore",
    "ScpiInstrument",
    "Settings",
    "SimBenchInstrument",
    "Stage",
    "Verdict",
    "all_due",
    "check_due",
    "check_instruments",
    "check_spec",
    "close_instruments",
    "corrected_depth",
    "corrected_rate",
    "default_db_path",
    "fit_line",
    "fit_slope",
    "open_instruments",
    "quantities_of",
    "run_calibration",
]
