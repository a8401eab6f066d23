"""Calibration errors: one subtree under the host's root, split by what went wrong.

::

    HostError (micropen.host.errors)
    └── CalibrationError                    the calibration could not be completed
        ├── InstrumentError                 a reference instrument misbehaved
        │   ├── InstrumentDisconnected      it stopped answering or the link dropped
        │   └── ReadingOutOfRange           a reading outside the instrument's range
        ├── InstrumentRefused (InvalidInput)  overdue (or otherwise unusable) and not overridden
        ├── FitError                        the points do not give a usable correction
        └── CalibrationStorageError         the pen's calibration storage did not read back right

Every message names the value, the limit and what to do. A ``CalibrationError`` during a
procedure ends it with the record marked incomplete and the reason; the pen keeps its previous
calibration.
"""

from __future__ import annotations

from micropen.host.errors import HostError, InvalidInput

__all__ = [
    "CalibrationError",
    "CalibrationStorageError",
    "FitError",
    "InstrumentDisconnected",
    "InstrumentError",
    "InstrumentRefused",
    "ReadingOutOfRange",
]


class CalibrationError(HostError):
    """The calibration could not be completed; the record says why."""


class InstrumentError(CalibrationError):
    """A reference instrument gave no usable reading."""


class InstrumentDisconnected(InstrumentError):
    """The instrument stopped answering or its link dropped."""


class ReadingOutOfRange(InstrumentError):
    """A reading outside the instrument's measuring range (or not a number)."""


class InstrumentRefused(CalibrationError, InvalidInput):
    """The instrument may not be used (calibration overdue) and no override was given."""


class FitError(CalibrationError):
    """The readings do not give a usable correction (too few points, beyond storage limits)."""


class CalibrationStorageError(CalibrationError):
    """The pen's calibration storage did not read back what was written."""
