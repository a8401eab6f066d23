"""Technician calibration: procedures as data, reference instruments, records, certificates.

Typical use (what ``micropen calibrate all`` does)::

    async with await AsyncPen.open(url) as pen:
        instruments = await open_instruments("sim", quantities_of("all"), bench=pen.bench,
                                              today=date.today())
        record = await run_calibration(pen, "all", instruments, store=RecordStore())
        write_certificate(record, paths.certificates_dir())

and after connecting to any pen, ``check_due(pen.identity.serial)`` says whether its
calibration is overdue. Each point carries its uncertainty budget (GUM, :mod:`.uncertainty`)
and the verdict of the decision rule (ILAC-G8, :mod:`.decision`); the certificate is what an
ISO/IEC 17025 laboratory issues, optionally signed (PAdES, :mod:`.signing`). See
docs/calibration.md.
"""

from __future__ import annotations

from .decision import DecisionRule, RuleKind
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
from .record import CalibrationRecord, Issuer, Outcome
from .records import RecordStore, RecordStoreError, default_db_path
from .station import Station, load_station
from .traceability import ReferenceCalibration
from .uncertainty import PointUncertainty

__all__ = [
    "DEFAULT_INTERVAL_DAYS",
    "PROCEDURES",
    "CalValues",
    "CalibrationError",
    "CalibrationRecord",
    "CalibrationStorageError",
    "DecisionRule",
    "DueState",
    "DueStatus",
    "FitError",
    "Instrument",
    "InstrumentDisconnected",
    "InstrumentError",
    "InstrumentInfo",
    "InstrumentRefused",
    "Issuer",
    "Limit",
    "Line",
    "ManualInstrument",
    "Outcome",
    "Phase",
    "PointUncertainty",
    "ProgressEvent",
    "Quantity",
    "ReadingOutOfRange",
    "RecordStore",
    "RecordStoreError",
    "ReferenceCalibration",
    "RuleKind",
    "ScpiInstrument",
    "Settings",
    "SimBenchInstrument",
    "Stage",
    "Station",
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
    "load_station",
    "open_instruments",
    "quantities_of",
    "run_calibration",
]
