"""The station file: who issues certificates, where, for whom, and the lab's equipment register.

A TOML file at ``paths.station_file()`` (``$MICROPEN_HOME/station.toml``, else the per-user
config folder). Every key is optional; a missing file is not an error — the certificate then
says in place of the laboratory that none is configured, and where the file belongs. A
malformed file, an unknown key or a value of the wrong type *is* an error (InvalidInput naming
the file, the section and the key; no square brackets in messages, which the terminal would
take for markup): a typo must not silently drop the lab's name from a certificate.
``micropen cal station`` shows where the file is and what it holds; ``--template`` prints
:data:`TEMPLATE`, a commented example.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from micropen.host import paths
from micropen.host.errors import InvalidInput

from .decision import DecisionRule
from .record import Issuer
from .records import DEFAULT_PREFIX
from .traceability import ReferenceCalibration

__all__ = ["DEFAULT_PREFIX", "TEMPLATE", "RegisteredInstrument", "Station", "load_station"]

STATION_FILE_MAX = 256 * 1024
_TEXT_MAX = 200

_KEYS: dict[str, dict[str, type]] = {
    "lab": {"name": str, "address": str, "accreditation": str, "contact": str},
    "station": {"name": str, "location": str, "certificate_prefix": str},
    "signatory": {"name": str, "role": str},
    "owner": {"name": str, "address": str},
    "decision_rule": {"rule": str, "guard_band": float},
}
_INSTRUMENT_KEYS: dict[str, type] = {
    "serial": str,
    "model": str,
    "certificate": str,
    "calibrated_on": date,
    "calibrated_by": str,
    "uncertainty": float,
    "uncertainty_relative": float,
    "coverage_factor": float,
    "resolution": float,
}
_INSTRUMENT_REQUIRED = ("serial", "certificate", "calibrated_on", "calibrated_by", "resolution")

TEMPLATE = """\
# micropen station file: the issuing laboratory and its equipment register.
# Every key is optional; `micropen cal station` shows what micropen reads from here.

[lab]
name = "Example Calibration Laboratory"
address = "1 Bench Street, 12345 Town, Country"
accreditation = "ISO/IEC 17025, accreditation body XY, D-K-00000-01-00"  # omit if none
contact = "calibration@example.com"

[station]
name = "bench 2"                          # the default for --station
location = "Room 1.07, bench 2"           # where calibrations are done and ambient measured
certificate_prefix = "EX-B2"              # certificate numbers: EX-B2-2025-00001, ...

[signatory]                               # who authorises certificates (a signing key's
name = "Dr. A. Reviewer"                  # certificate names its own signatory instead)
role = "Head of calibration laboratory"

[owner]                                   # the default for --owner: the equipment's owner
name = "Example Clinic"
address = "2 Clinic Road, 12345 Town, Country"

[decision_rule]                           # ILAC-G8:09/2019; see docs/calibration.md
rule = "non-binary"                       # simple | guard-band | non-binary
guard_band = 1.0                          # w = guard_band x U

# The equipment register: one block per reference instrument, by serial number, copied from
# the instrument's own calibration certificate. U = uncertainty + uncertainty_relative x reading
# (in the instrument's units: mm for a depth gauge, strokes/s for a tachometer) at coverage
# factor coverage_factor.
[[instrument]]
serial = "A123"
model = "543-790"
certificate = "DKD-K-12345-2025-0042"
calibrated_on = 2025-03-01
calibrated_by = "Example Metrology GmbH (DAkkS D-K-12345-01-00)"
uncertainty = 0.002                       # mm
coverage_factor = 2.0
resolution = 0.001                        # mm

[[instrument]]
serial = "T9"
model = "461920"
certificate = "CAL-2025-7781"
calibrated_on = 2025-02-11
calibrated_by = "Example Metrology GmbH"
uncertainty = 0.01                        # strokes/s
uncertainty_relative = 0.0002             # 0.02 % of reading
coverage_factor = 2.0
resolution = 0.01                         # strokes/s
"""


@dataclass(frozen=True)
class RegisteredInstrument:
    """One entry of the equipment register: an instrument's own calibration, by serial."""

    serial: str
    model: str  # "" : any model with this serial
    calibration: ReferenceCalibration

    def lookup(self, model: str) -> ReferenceCalibration:
        """The calibration, for an instrument of this serial reporting ``model``."""
        if self.model and model and self.model.strip().lower() != model.strip().lower():
            raise InvalidInput(
                f"the equipment register has s/n {self.serial} as model {self.model}, but the "
                f"instrument says it is a {model}; correct the station file's instrument entry "
                "entry or use the registered instrument"
            )
        return self.calibration


@dataclass(frozen=True)
class Station:
    """What the station file says (empty strings where it says nothing)."""

    path: Path
    found: bool
    lab: Mapping[str, str] = field(default_factory=dict)
    station: Mapping[str, str] = field(default_factory=dict)
    signatory: Mapping[str, str] = field(default_factory=dict)
    owner: Mapping[str, str] = field(default_factory=dict)
    decision_rule: DecisionRule = field(default_factory=DecisionRule)
    register: Mapping[str, RegisteredInstrument] = field(default_factory=dict)

    @property
    def configured(self) -> bool:
        return bool(self.lab.get("name"))

    @property
    def certificate_prefix(self) -> str:
        return self.station.get("certificate_prefix") or DEFAULT_PREFIX

    def issuer(self, signatory: str = "", role: str = "") -> Issuer:
        """The record's snapshot; a signatory given here (a signing key's) wins."""
        return Issuer(
            lab=self.lab.get("name", ""),
            address=self.lab.get("address", ""),
            accreditation=self.lab.get("accreditation", ""),
            contact=self.lab.get("contact", ""),
            location=self.station.get("location", ""),
            signatory=signatory or self.signatory.get("name", ""),
            signatory_role=role if signatory else self.signatory.get("role", ""),
            station_file=str(self.path),
        )

    def owner_text(self) -> str:
        return ", ".join(v for v in (self.owner.get("name"), self.owner.get("address")) if v)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "found": self.found,
            "configured": self.configured,
            "lab": dict(self.lab),
            "station": dict(self.station),
            "signatory": dict(self.signatory),
            "owner": dict(self.owner),
            "decision_rule": self.decision_rule.to_dict(),
            "certificate_prefix": self.certificate_prefix,
            "instruments": [
                {"serial": r.serial, "model": r.model, **r.calibration.to_dict()}
                for r in self.register.values()
            ],
        }


def load_station(path: Path | None = None) -> Station:
    """Read the station file (``paths.station_file()`` by default); a missing file is empty."""
    path = path if path is not None else paths.station_file()
    try:
        with path.open("rb") as handle:
            raw = handle.read(STATION_FILE_MAX + 1)
    except FileNotFoundError:
        return Station(path, found=False)
    except OSError as exc:
        raise InvalidInput(
            f"cannot read the station file {path} ({exc.strerror}); fix its permissions or "
            "move it aside"
        ) from None
    if len(raw) > STATION_FILE_MAX:
        raise InvalidInput(f"station file {path} is over {STATION_FILE_MAX // 1024} KiB")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            f"station file {path} is not valid TOML ({exc}); fix it (micropen cal station "
            "--template shows an example)"
        ) from None
    return _parse(path, data)


def _parse(path: Path, data: dict[str, Any]) -> Station:
    unknown = set(data) - set(_KEYS) - {"instrument"}
    if unknown:
        raise InvalidInput(
            f"station file {path}: unknown section(s) {', '.join(sorted(unknown))}; valid: "
            f"{', '.join([*_KEYS, 'instrument'])}"
        )
    tables = {name: _table(path, name, data.get(name, {}), keys) for name, keys in _KEYS.items()}
    rule_table = tables["decision_rule"]
    try:
        rule = DecisionRule.parse(
            str(rule_table.get("rule", "non-binary")),
            float(rule_table["guard_band"]) if "guard_band" in rule_table else None,
        )
    except InvalidInput as exc:
        raise InvalidInput(f"station file {path}: section decision_rule: {exc}") from None
    register = _register(path, data.get("instrument", []))
    return Station(
        path,
        True,
        lab=tables["lab"],
        station=tables["station"],
        signatory=tables["signatory"],
        owner=tables["owner"],
        decision_rule=rule,
        register=register,
    )


def _table(path: Path, name: str, raw: Any, keys: dict[str, type]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidInput(f"station file {path}: {name} must be a table")
    unknown = set(raw) - set(keys)
    if unknown:
        raise InvalidInput(
            f"station file {path}: unknown key(s) {', '.join(sorted(unknown))} in {name}; "
            f"valid: {', '.join(keys)}"
        )
    return {key: _typed(path, f"{name}.{key}", value, keys[key]) for key, value in raw.items()}


def _typed(path: Path, key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is date and isinstance(value, datetime):
        return value.date()
    if kind is date and isinstance(value, date):
        return value
    if kind is str and isinstance(value, str):
        if len(value) > _TEXT_MAX or not value.isprintable():
            raise InvalidInput(
                f"station file {path}: {key} must be printable text of at most {_TEXT_MAX} "
                "characters (one line)"
            )
        return value.strip()
    wanted = {str: "text", float: "a number", date: "a date (YYYY-MM-DD, unquoted)"}[kind]
    raise InvalidInput(f"station file {path}: {key} = {value!r} must be {wanted}")


def _register(path: Path, raw: Any) -> dict[str, RegisteredInstrument]:
    if not isinstance(raw, list):
        raise InvalidInput(
            f"station file {path}: instrument entries are an array of tables (double brackets)"
        )
    register: dict[str, RegisteredInstrument] = {}
    for number, entry in enumerate(raw, start=1):
        where = f"instrument entry #{number}"
        table = _table(path, where, entry, _INSTRUMENT_KEYS)
        missing = [k for k in _INSTRUMENT_REQUIRED if k not in table]
        if missing:
            raise InvalidInput(
                f"station file {path}: {where} lacks {', '.join(missing)} (copy them from the "
                "instrument's calibration certificate)"
            )
        calibration = ReferenceCalibration(
            certificate=table["certificate"],
            calibrated_on=table["calibrated_on"],
            calibrated_by=table["calibrated_by"],
            expanded=table.get("uncertainty", 0.0),
            coverage_factor=table.get("coverage_factor", 2.0),
            resolution=table["resolution"],
            expanded_relative=table.get("uncertainty_relative", 0.0),
        )
        calibration.check(f"station file {path}: {where} (s/n {table['serial']})")
        if table["serial"] in register:
            raise InvalidInput(
                f"station file {path}: serial {table['serial']!r} is registered twice"
            )
        register[table["serial"]] = RegisteredInstrument(
            table["serial"], table.get("model", ""), calibration
        )
    return register
