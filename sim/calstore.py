"""The pen's non-volatile memory: calibration banks, cartridge records, lifetime strokes.

Hazard 7 (calibration altered, corrupted or downgraded) is controlled here. A calibration
record carries a CRC-32 (``messages.calibration_crc``); the staging bank is written first and
becomes active only through a commit that names the CRC and carries a counter above every
counter ever committed (a security counter, kept apart from the record so corrupting the
record cannot lower it).

Correction convention (the host's calibration code relies on it)::

    actuator_depth_um = commanded_um  * (1 + depth_gain_ppm / 1e6) + depth_offset_um
    actuator_rate     = commanded_sps * (1 + rate_gain_ppm / 1e6)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from micropen.protocol import device
from micropen.protocol import limits as L
from micropen.protocol.messages import CalBank, CalData, CalWrite, ErrorCode, calibration_crc

from .cartridge import CartridgeRecords, Refusal
from .pairing import PairingStore

__all__ = ["CAL_MODES", "CalRecord", "CalStore", "Nvm"]

CAL_MODES = ("nominal", "blank", "corrupt")
CAL_VERSION = 1
# the factory record; a real calibration commits a higher counter
NOMINAL_COUNTER = device.CAL_FACTORY_COUNTER


@dataclass(frozen=True, slots=True)
class CalRecord:
    """One calibration bank as stored."""

    version: int
    depth_gain_ppm: int
    depth_offset_um: int
    rate_gain_ppm: int
    written_at: int
    counter: int
    crc: int

    @classmethod
    def sealed(
        cls,
        version: int,
        depth_gain_ppm: int,
        depth_offset_um: int,
        rate_gain_ppm: int,
        written_at: int,
        counter: int,
    ) -> CalRecord:
        """A record with its correct CRC."""
        fields = (version, depth_gain_ppm, depth_offset_um, rate_gain_ppm, written_at, counter)
        return cls(*fields, calibration_crc(*fields))

    @classmethod
    def from_write(cls, m: CalWrite) -> CalRecord:
        """The record a CalWrite carries, as sent (its CRC is checked on writing)."""
        return cls(
            m.version, m.depth_gain_ppm, m.depth_offset_um, m.rate_gain_ppm, m.written_at,
            m.counter, m.crc,
        )  # fmt: skip

    @property
    def valid(self) -> bool:
        return self.crc == calibration_crc(
            self.version,
            self.depth_gain_ppm,
            self.depth_offset_um,
            self.rate_gain_ppm,
            self.written_at,
            self.counter,
        )

    def in_range(self) -> Refusal | None:
        for value, limit in (
            (self.depth_gain_ppm, L.CAL_GAIN_PPM_LIMIT),
            (self.depth_offset_um, L.CAL_OFFSET_UM_LIMIT),
            (self.rate_gain_ppm, L.CAL_GAIN_PPM_LIMIT),
        ):
            if abs(value) > limit:
                return Refusal.of(ErrorCode.CALIBRATION_OUT_OF_RANGE, value, limit)
        return None


class CalStore:
    """Two banks and a security counter. ``None`` is an erased (blank) bank."""

    __slots__ = ("active", "counter_floor", "staging")

    def __init__(self, mode: str, today_day: int) -> None:
        if mode not in CAL_MODES:
            raise ValueError(f"calibration mode {mode!r}; valid: {', '.join(CAL_MODES)}")
        self.staging: CalRecord | None = None
        self.active: CalRecord | None = None
        self.counter_floor = 0
        if mode != "blank":
            nominal = CalRecord.sealed(CAL_VERSION, 0, 0, 0, today_day * 86_400, NOMINAL_COUNTER)
            self.active = nominal if mode == "nominal" else replace(nominal, crc=nominal.crc ^ 1)
            self.counter_floor = NOMINAL_COUNTER

    @property
    def calibrated(self) -> bool:
        return self.active is not None and self.active.valid

    @property
    def corrupt(self) -> bool:
        """A record is there but its CRC does not match (blank is not corrupt)."""
        return self.active is not None and not self.active.valid

    def read(self, bank: CalBank) -> CalRecord | None:
        return self.active if bank is CalBank.ACTIVE else self.staging

    def cal_data(self, cmd_id: int, bank: CalBank) -> CalData:
        """CalRead's answer: the bank as stored (an erased bank reads as zeros, invalid)."""
        r = self.read(bank)
        if r is None:
            return CalData(cmd_id, bank, 0, 0, 0, 0, 0, 0, 0, 0)
        return CalData(
            cmd_id, bank, int(r.valid), r.version, r.depth_gain_ppm, r.depth_offset_um,
            r.rate_gain_ppm, r.written_at, r.counter, r.crc,
        )  # fmt: skip

    def write_staging(self, record: CalRecord) -> Refusal | None:
        """Nothing in use changes; a wrong CRC or out-of-range value is refused."""
        expected = CalRecord.sealed(
            record.version,
            record.depth_gain_ppm,
            record.depth_offset_um,
            record.rate_gain_ppm,
            record.written_at,
            record.counter,
        ).crc
        if record.crc != expected:
            return Refusal.of(ErrorCode.CALIBRATION_CRC_MISMATCH, record.crc, expected)
        refusal = record.in_range()
        if refusal is None:
            self.staging = record
        return refusal

    def commit(self, crc: int) -> Refusal | None:
        """Staging becomes active if ``crc`` names it and its counter is newer than any."""
        staging = self.staging
        if staging is None or not staging.valid:
            return Refusal.of(ErrorCode.CALIBRATION_CRC_MISMATCH, crc, 0)
        if crc != staging.crc:
            return Refusal.of(ErrorCode.CALIBRATION_CRC_MISMATCH, crc, staging.crc)
        if staging.counter <= self.counter_floor:
            return Refusal.of(ErrorCode.CALIBRATION_DOWNGRADE, staging.counter, self.counter_floor)
        self.active = staging
        self.counter_floor = staging.counter
        return None

    def corrupt_active(self) -> None:
        """Flip a stored bit (simulated flash decay or tampering)."""
        active = self.active
        if active is None:
            active = CalRecord.sealed(CAL_VERSION, 0, 0, 0, 0, 0)
        self.active = replace(active, crc=active.crc ^ 0x0100)


@dataclass(slots=True)
class Nvm:
    """Everything that survives a reset or brown-out."""

    cal: CalStore
    cartridges: CartridgeRecords = field(default_factory=CartridgeRecords)
    lifetime_strokes: int = 0
    pairings: PairingStore = field(default_factory=lambda: PairingStore(0))
