"""The calibration record: everything a certificate and an auditor need, as plain data.

One record per attempt, complete or not. It round-trips through JSON exactly
(:meth:`CalibrationRecord.to_dict` / :meth:`CalibrationRecord.from_dict`), which is also how
the SQLite store keeps the full record beside its indexed columns.

Format 2 (this one) adds what a certificate needs beyond the results: the certificate number,
the issuer (laboratory, location, signatory) and the equipment's owner as they were when the
calibration ran, the method and its revision, the decision rule, each point's uncertainty
budget, each reference instrument's own calibration, and which parts were simulated. A
format-1 record still reads: it has no uncertainty, so its verdicts are those of the simple
acceptance rule it was judged by (its "marginal" points were passes under that rule).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from .decision import DecisionRule, RuleKind
from .fit import CalValues
from .measurements import Quantity, Stage, Verdict, worst
from .traceability import ReferenceCalibration, is_simulated_instrument
from .uncertainty import PointUncertainty

__all__ = [
    "RECORD_FORMAT",
    "BankSnapshot",
    "CalibrationRecord",
    "FitResult",
    "InstrumentRef",
    "Issuer",
    "Outcome",
    "PenInfo",
    "PhaseLog",
    "PointResult",
]

RECORD_FORMAT = 2


class Outcome(StrEnum):
    """The overall statement: the worst verdict of the final stage, or incomplete."""

    PASS = "pass"
    CONDITIONAL_PASS = "conditional_pass"
    CONDITIONAL_FAIL = "conditional_fail"
    FAIL = "fail"
    INCOMPLETE = "incomplete"  # it stopped early; ``reason`` says why

    @property
    def passed(self) -> bool:
        """Renews the due date: the measured values are within their limits."""
        return self in (Outcome.PASS, Outcome.CONDITIONAL_PASS)

    @property
    def conditional(self) -> bool:
        return self in (Outcome.CONDITIONAL_PASS, Outcome.CONDITIONAL_FAIL)

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")

    @classmethod
    def of(cls, verdict: Verdict) -> Outcome:
        return cls(verdict.value)


@dataclass(frozen=True)
class PenInfo:
    serial: str
    model: str
    firmware: str
    protocol_version: int
    url: str


@dataclass(frozen=True)
class Issuer:
    """Who issues the certificate, as the station file said when the calibration ran.

    Kept in the record so that exporting the certificate again reproduces it, whatever the
    station file says later. An empty ``lab`` means no station file named one: the certificate
    then says so in place of the laboratory (and names ``station_file``)."""

    lab: str = ""
    address: str = ""
    accreditation: str = ""  # "" : not stated (the certificate then claims none)
    contact: str = ""
    location: str = ""  # where the calibration was performed and the ambient measured
    signatory: str = ""  # who authorises the certificate
    signatory_role: str = ""
    station_file: str = ""

    @property
    def configured(self) -> bool:
        return bool(self.lab.strip())


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
    calibration: ReferenceCalibration | None = None  # from its own certificate
    simulated: bool = False


@dataclass(frozen=True)
class PointResult:
    quantity: Quantity
    stage: Stage
    set_value: float  # mm or strokes/s
    readings: tuple[float, ...]
    mean: float
    error: float  # mm for depth, % of the set rate for rate; as reported (see decision.py)
    tolerance: float
    limit_name: str
    verdict: Verdict
    uncertainty: PointUncertainty | None = None  # None only in format-1 records

    @property
    def units(self) -> str:
        return self.quantity.set_units

    @property
    def error_units(self) -> str:
        return self.quantity.error_units

    @property
    def expanded(self) -> float | None:
        return self.uncertainty.expanded if self.uncertainty else None


@dataclass(frozen=True)
class FitResult:
    """The fitted line, measured against set, in the quantity's units (mm, strokes/s): the
    slope is dimensionless, the intercept and the largest residual are in those units."""

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
    ambient_location: str = ""  # where the ambient temperature was measured
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
    certificate_number: str = ""  # given by the store when the record begins
    issuer: Issuer = field(default_factory=Issuer)
    owner: str = ""  # the equipment's owner (the customer), name and address
    method: str = ""
    method_revision: str = ""
    decision_rule: DecisionRule = field(default_factory=DecisionRule)
    simulated_parts: list[str] = field(default_factory=list)  # e.g. "pen SIM-000003"
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

    def max_expanded(self, stage: Stage, quantity: Quantity) -> float | None:
        values = [p.expanded for p in self.stage_points(stage, quantity) if p.expanded]
        return max(values) if values else None

    @property
    def final_stage(self) -> Stage:
        """The stage the outcome is stated on: as-left, or as-found for a verify."""
        return Stage.AS_FOUND if self.procedure == "verify" else Stage.AS_LEFT

    @property
    def conditional(self) -> bool:
        return any(p.verdict.conditional for p in self.stage_points(self.final_stage))

    @property
    def simulation(self) -> bool:
        return bool(self.simulated_parts)

    @property
    def issued_on(self) -> date:
        """The date of issue: the certificate is issued when the calibration ends."""
        return (self.finished_at or self.started_at).date()

    @property
    def certificate_id(self) -> str:
        """The certificate number; a format-1 record had none, so one is derived from its id
        (stable, and never equal to the id itself)."""
        return self.certificate_number or f"LEGACY-{self.record_id[:12].upper()}"

    def next_due(self) -> date | None:
        """Finish date plus the interval, for an outcome that renews the due date."""
        if not self.outcome.passed or self.finished_at is None:
            return None
        return (self.finished_at + timedelta(days=self.interval_days)).date()

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
        for inst, ref in zip(data["instruments"], self.instruments, strict=True):
            inst["cal_due"] = ref.cal_due.isoformat()
            inst["calibration"] = ref.calibration.to_dict() if ref.calibration else None
        for point in data["points"]:
            point["readings"] = list(point["readings"])
        data["decision_rule"] = self.decision_rule.to_dict()
        data["simulation"] = self.simulation
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
            "conditional": self.conditional,
            "as_found_max_error_mm": self.max_error(Stage.AS_FOUND, Quantity.DEPTH),
            "as_left_max_error_mm": self.max_error(Stage.AS_LEFT, Quantity.DEPTH),
            "as_found_max_error_pct": self.max_error(Stage.AS_FOUND, Quantity.RATE),
            "as_left_max_error_pct": self.max_error(Stage.AS_LEFT, Quantity.RATE),
            "as_left_max_expanded_uncertainty_mm": self.max_expanded(Stage.AS_LEFT, Quantity.DEPTH),
            "as_left_max_expanded_uncertainty_pct": self.max_expanded(Stage.AS_LEFT, Quantity.RATE),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationRecord:
        data = _upgrade(data)

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
            ambient_location=data["ambient_location"],
            instruments=[_instrument(i) for i in data["instruments"]],
            points=[_point(p) for p in data["points"]],
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
            certificate_number=data["certificate_number"],
            issuer=Issuer(**data["issuer"]),
            owner=data["owner"],
            method=data["method"],
            method_revision=data["method_revision"],
            decision_rule=DecisionRule.from_dict(data["decision_rule"]),
            simulated_parts=list(data["simulated_parts"]),
            format=RECORD_FORMAT,
        )


def _instrument(raw: dict[str, Any]) -> InstrumentRef:
    calibration = raw.get("calibration")
    return InstrumentRef(
        **{
            **raw,
            "cal_due": date.fromisoformat(raw["cal_due"]),
            "calibration": ReferenceCalibration.from_dict(calibration) if calibration else None,
        }
    )


def _point(raw: dict[str, Any]) -> PointResult:
    budget = raw.get("uncertainty")
    return PointResult(
        **{
            **raw,
            "quantity": Quantity(raw["quantity"]),
            "stage": Stage(raw["stage"]),
            "readings": tuple(raw["readings"]),
            "verdict": Verdict(raw["verdict"]),
            "uncertainty": PointUncertainty.from_dict(budget) if budget else None,
        }
    )


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A format-1 record as format 2: no uncertainty, judged by simple acceptance (where a
    "marginal" point passed), no certificate number, issuer, owner or method recorded."""
    if data.get("format", 1) >= RECORD_FORMAT:
        return data
    points = [
        {**p, "verdict": "pass" if p["verdict"] == "marginal" else p["verdict"]}
        for p in data["points"]
    ]
    return {
        **data,
        "points": points,
        "ambient_location": "",
        "certificate_number": "",
        "issuer": {},
        "owner": "",
        "method": f"micropen calibration procedure '{data['procedure']}'",
        "method_revision": "1",
        "decision_rule": DecisionRule(RuleKind.SIMPLE, 0.0).to_dict(),
        "simulated_parts": _legacy_simulated(data),
    }


def _legacy_simulated(data: dict[str, Any]) -> list[str]:
    """Format 1 did not say what was simulated; the pen URL and instrument kinds do."""
    parts = [f"pen {data['pen']['serial']}"] if data["pen"]["url"].startswith("sim:") else []
    parts += [
        f"{i['role']} instrument {i['model']} s/n {i['serial']}"
        for i in data["instruments"]
        if i["kind"] == "sim-bench" or is_simulated_instrument(i["manufacturer"])
    ]
    return parts


def _plain(value: Any) -> Any:
    """Enums to their values, recursively, so ``json.dumps`` needs no hooks."""
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
