"""The calibration record: everything a certificate and an auditor need, as plain data.

One record per attempt, complete or not. It round-trips through JSON exactly
(:meth:`CalibrationRecord.to_dict` / :meth:`CalibrationRecord.from_dict`), which is also how
the SQLite store keeps the full record beside its indexed columns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from .fit import CalValues
from .measurements import Quantity, Stage, Verdict, worst

__all__ = [
    "RECORD_FORMAT",
    "BankSnapshot",
    "CalibrationRecord",
    "FitResult",
    "InstrumentRef",
    "Outcome",
    "PenInfo",
    "PhaseLog",
    "PointResult",
]

RECORD_FORMAT = 1


class Outcome(StrEnum):
    PASS = "pass"  # every as-left (or verify) point within its limit
    FAIL = "fail"  # the procedure ran to the end and a point is outside its limit
    INCOMPLETE = "incomplete"  # it stopped early; ``reason`` says why


@dataclass(frozen=True)
class PenInfo:
    serial: str
    model: str
    firmware: str
    protocol_version: int
    url: str


@dataclass(frozen=True)
class InstrumentRef:
    """A reference instrument as used: identity, traceability and any due-date override."""

    role: str  # the quantity it measured: "depth" or "rate"
    kind: str  # "sim-bench", "manual", "scpi"
    manufacturer: str
    model: str
    serial: str
    cal_due: date
    url: str = ""
    overdue: bool = False
    override_reason: str = ""


@dataclass(frozen=True)
class PointResult:
    quantity: Quantity
    stage: Stage
    set_value: float  # mm or strokes/s
    readings: tuple[float, ...]
    mean: float
    error: float  # mm for depth, % of the set rate for rate
    tolerance: float
    limit_name: str
    verdict: Verdict

    @property
    def units(self) -> str:
        return self.quantity.set_units

    @property
    def error_units(self) -> str:
        return self.quantity.error_units


@dataclass(frozen=True)
class FitResult:
    """The fitted line (measured against set, pen units) and the correction it gives."""

    quantity: Quantity
    slope: float
    intercept: float
    max_residual: float
    before: CalValues
    after: CalValues


@dataclass(frozen=True)
class BankSnapshot:
    """A calibration bank as the pen reported it."""

    values: CalValues
    valid: bool
    version: int
    counter: int
    written_at: int
    crc: int


@dataclass(frozen=True)
class PhaseLog:
    name: str
    outcome: str  # "pass", "fail", "error", "skipped", "cancelled"
    attempts: int
    message: str = ""


@dataclass
class CalibrationRecord:
    """One calibration attempt. Mutable while the procedure runs, frozen in the store."""

    record_id: str
    procedure: str  # "depth", "rate", "all", "verify"
    pen: PenInfo
    technician: str
    station: str
    software_version: str
    started_at: datetime
    interval_days: int
    ambient_c: float | None = None
    ambient_source: str = ""
    instruments: list[InstrumentRef] = field(default_factory=list)
    points: list[PointResult] = field(default_factory=list)
    fits: list[FitResult] = field(default_factory=list)
    cal_before: BankSnapshot | None = None
    cal_after: BankSnapshot | None = None
    committed: bool = False  # a new calibration was committed and is in force
    phases: list[PhaseLog] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outcome: Outcome = Outcome.INCOMPLETE
    reason: str = "not finished"
    finished_at: datetime | None = None
    format: int = RECORD_FORMAT

    # --- derived figures -----------------------------------------------------------------------
    def stage_points(self, stage: Stage, quantity: Quantity | None = None) -> list[PointResult]:
        return [
            p
            for p in self.points
            if p.stage is stage and (quantity is None or p.quantity is quantity)
        ]

    def stage_verdict(self, stage: Stage) -> Verdict | None:
        return worst(p.verdict for p in self.stage_points(stage))

    def max_error(self, stage: Stage, quantity: Quantity) -> float | None:
        errors = [abs(p.error) for p in self.stage_points(stage, quantity)]
        return max(errors) if errors else None

    @property
    def marginal(self) -> bool:
        final = Stage.AS_FOUND if self.procedure == "verify" else Stage.AS_LEFT
        return any(p.verdict is Verdict.MARGINAL for p in self.stage_points(final))

    def quantities(self) -> tuple[Quantity, ...]:
        """What this procedure calibrates or verifies."""
        if self.procedure in ("all", "verify"):
            return (Quantity.DEPTH, Quantity.RATE)
        return (Quantity(self.procedure),)

    # --- JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        for inst in data["instruments"]:
            inst["cal_due"] = inst["cal_due"].isoformat()
        for point in data["points"]:
            point["readings"] = list(point["readings"])
        data["summary"] = self.summary()
        return _plain(data)  # type: ignore[no-any-return]

    def summary(self) -> dict[str, Any]:
        """The figures a dashboard or the CLI's JSON line shows first."""
        found, left = self.stage_verdict(Stage.AS_FOUND), self.stage_verdict(Stage.AS_LEFT)
        return {
            "outcome": self.outcome.value,
            "reason": self.reason,
            "as_found": found.value if found else None,
            "as_left": left.value if left else None,
            "marginal": self.marginal,
            "as_found_max_error_mm": self.max_error(Stage.AS_FOUND, Quantity.DEPTH),
            "as_left_max_error_mm": self.max_error(Stage.AS_LEFT, Quantity.DEPTH),
            "as_found_max_error_pct": self.max_error(Stage.AS_FOUND, Quantity.RATE),
            "as_left_max_error_pct": self.max_error(Stage.AS_LEFT, Quantity.RATE),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationRecord:
        def bank(raw: dict[str, Any] | None) -> BankSnapshot | None:
            if raw is None:
                return None
            return BankSnapshot(**{**raw, "values": CalValues(**raw["values"])})

        return cls(
            record_id=data["record_id"],
            procedure=data["procedure"],
            pen=PenInfo(**data["pen"]),
            technician=data["technician"],
            station=data["station"],
            software_version=data["software_version"],
            started_at=datetime.fromisoformat(data["started_at"]),
            interval_days=data["interval_days"],
            ambient_c=data["ambient_c"],
            ambient_source=data["ambient_source"],
            instruments=[
                InstrumentRef(**{**i, "cal_due": date.fromisoformat(i["cal_due"])})
                for i in data["instruments"]
            ],
            points=[
                PointResult(
                    **{
                        **p,
                        "quantity": Quantity(p["quantity"]),
                        "stage": Stage(p["stage"]),
                        "readings": tuple(p["readings"]),
                        "verdict": Verdict(p["verdict"]),
                    }
                )
                for p in data["points"]
            ],
            fits=[
                FitResult(
                    **{
                        **f,
                        "quantity": Quantity(f["quantity"]),
                        "before": CalValues(**f["before"]),
                        "after": CalValues(**f["after"]),
                    }
                )
                for f in data["fits"]
            ],
            cal_before=bank(data["cal_before"]),
            cal_after=bank(data["cal_after"]),
            committed=data["committed"],
            phases=[PhaseLog(**p) for p in data["phases"]],
            notes=list(data["notes"]),
            outcome=Outcome(data["outcome"]),
            reason=data["reason"],
            finished_at=(
                datetime.fromisoformat(data["finished_at"]) if data["finished_at"] else None
            ),
            format=data.get("format", RECORD_FORMAT),
        )


def _plain(value: Any) -> Any:
    """Enums to their values, recursively, so ``json.dumps`` needs no hooks."""
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
