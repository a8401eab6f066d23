"""A pen's identity and status as people and scripts read them: names and units, never raw
protocol integers (``temperature_dc: 249`` is 24.9 °C; ``run_area: 2`` is the forehead).

``status_document`` is the ``--json`` form: the status fields with enums as lower-case words,
capabilities as a list of names, the treatment area by name, plus the same values in units
(``depth_set_mm``, ``temperature_c``, ``battery_v``) and the calibration state and due date
from this bench's records. ``status_rows`` is the terminal form of the same document.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from micropen.host.calibration.due import DueStatus
from micropen.protocol import limits as L
from micropen.protocol.messages import Capability, Identity, Status, Telemetry
from micropen.protocol.schema import Message

__all__ = [
    "area_name",
    "areas_help",
    "fields_as_words",
    "state_words",
    "status_document",
    "status_rows",
    "telemetry_document",
    "word",
]

_HIDDEN = {"cmd_id", "firmware_major", "firmware_minor", "firmware_patch"}


def word(value: IntEnum) -> str:
    return value.name.lower()


def fields_as_words(message: Message) -> dict[str, Any]:
    """A message's fields by name, enums as lower-case words (``to_dict`` keeps wire names)."""
    return {
        f.name: word(v) if isinstance(v, IntEnum) else v
        for f, v in zip(message.FIELDS, message, strict=True)
    }


def state_words(doc: dict[str, Any]) -> str:
    """'idle', or 'in a latched emergency stop fault (…)': never 'is fault'."""
    if doc["state"] != "fault":
        return str(doc["state"])
    fault = str(doc["fault"]).replace("_", " ")
    return f"in a latched {fault} fault (micropen clear-fault once its cause is gone)"


def area_name(area: int) -> str | None:
    try:
        return L.AREAS[L.Area(area)].name
    except ValueError:
        return None


def capability_names(bits: int) -> list[str]:
    return [word(c) for c in Capability if c & bits]


def status_document(
    identity: Identity, status: Status, due: DueStatus | None = None
) -> dict[str, Any]:
    doc = {**fields_as_words(identity), **fields_as_words(status)}
    for hidden in _HIDDEN:
        doc.pop(hidden, None)
    doc.update(
        firmware_version=(
            f"{identity.firmware_major}.{identity.firmware_minor}.{identity.firmware_patch}"
        ),
        capabilities=capability_names(identity.capabilities),
        run_area=area_name(status.run_area),
        soft_cap_override=bool(status.soft_cap_override),
        calibrated=bool(status.calibrated),
        service_mode=bool(status.service_mode),
        depth_set_mm=status.depth_set_um / 1000,
        temperature_c=status.temperature_dc / 10,
        battery_v=status.battery_mv / 1000,
        calibration=_calibration(status, due),
    )
    return doc


def _calibration(status: Status, due: DueStatus | None) -> dict[str, Any]:
    return {
        "stored_on_pen": bool(status.calibrated),
        "state": None if due is None else due.state.value,
        "due": None if due is None or due.due is None else due.due.isoformat(),
        "last_calibrated": (
            None if due is None or due.last_calibrated is None else due.last_calibrated.isoformat()
        ),
    }


def areas_help() -> str:
    """The treatment areas with their limits, for ``micropen run --help``."""
    lines = []
    for profile in L.AREAS.values():
        if profile.area is L.Area.BENCH_FIXTURE:
            continue
        rates = profile.allowed_rates()
        plain = min(profile.max_um, L.DEPTH_SOFT_CAP_UM)  # deeper needs the override always
        deeper = (
            f", to {profile.override_max_um / 1000:.2f} mm with --override-soft-cap"
            if profile.override_max_um > plain
            else ""
        )
        lines.append(
            f"{profile.name}: {profile.label}; default {profile.default_um / 1000:.2f} mm, "
            f"max {plain / 1000:.2f} mm{deeper}; {rates[0]}–{rates[-1]} strokes/s "
            f"({', '.join(map(str, rates))})"
        )
    return "Treatment areas (--area):\n\n" + "\n\n".join(lines)


def telemetry_document(sample: Telemetry) -> dict[str, Any]:
    """One telemetry sample for a JSON line: the wire fields, enums as words, and units."""
    doc = fields_as_words(sample)
    doc.update(
        depth_mm=sample.depth_um / 1000,
        rate_sps=sample.rate_csps / 100,
        temperature_c=sample.temperature_dc / 10,
        battery_v=sample.battery_mv / 1000,
    )
    return doc


def status_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Label and value (with its unit) for the terminal, most important first."""
    rows = [
        ("pen", f"{doc['serial']} ({doc['model']}), firmware {doc['firmware_version']}, "
                f"hardware rev {doc['hardware_revision']}"),
        ("state", state_words(doc) + (", service mode" if doc["service_mode"] else "")),
        ("depth set", f"{doc['depth_set_mm']:.2f} mm"
                      + (" (soft-cap override on)" if doc["soft_cap_override"] else "")),
        ("rate set", f"{doc['rate_set_sps']} strokes/s"),
        ("last run", _last_run(doc)),
        ("cartridge", _cartridge(doc)),
        ("battery", f"{doc['battery_v']:.2f} V"),
        ("temperature", f"{doc['temperature_c']:.1f} °C"),
        ("calibration", _calibration_text(doc)),
        ("envelope", f"{doc['depth_min_um'] / 1000:.2f}–{doc['depth_max_um'] / 1000:.2f} mm "
                     f"(soft cap {doc['soft_cap_um'] / 1000:.2f} mm), "
                     f"{doc['rate_min_sps']}–{doc['rate_max_sps']} strokes/s, "
                     f"{doc['needle_count']} needles"),
        ("watchdog", f"{doc['watchdog_ms']} ms"),
        ("telemetry", f"{doc['telemetry_hz']} Hz" if doc["telemetry_hz"] else "off"),
        ("lifetime", f"{doc['lifetime_strokes']:,} strokes"),
        ("capabilities", ", ".join(c.replace("_", " ") for c in doc["capabilities"]) or "none"),
        ("url", doc["url"] + (" (SIMULATOR)" if doc["simulated"] else "")),
        ("boot", f"id {doc['boot_id']:08x}, up {doc['uptime_ms'] / 1000:,.1f} s"),
    ]  # fmt: skip
    return rows


def _last_run(doc: dict[str, Any]) -> str:
    if not doc["run_id"]:
        return "none since power on"
    unit = "strokes" if doc["run_mode"] == "strokes" else "ms"
    return (
        f"run {doc['run_id']} on {doc['run_area'] or 'an unknown area'}: "
        f"{doc['run_strokes']:,} strokes delivered (target {doc['run_target']:,} {unit}), "
        f"{doc['run_outcome'].replace('_', ' ')}"
    )


def _cartridge(doc: dict[str, Any]) -> str:
    if not doc["cartridge_id"]:
        return f"none ({doc['cartridge_state']})"
    return (
        f"{doc['cartridge_id']} ({doc['cartridge_state']}, "
        f"{doc['cartridge_strokes']:,} strokes used)"
    )


def _calibration_text(doc: dict[str, Any]) -> str:
    cal = doc["calibration"]
    stored = "stored on the pen" if cal["stored_on_pen"] else "NOT calibrated"
    if cal["state"] is None:
        return stored
    if cal["state"] == "never":
        return f"{stored}; no calibration of it on record at this bench"
    due = f", next due {cal['due']}" if cal["due"] else ""
    return f"{stored}; at this bench: {cal['state'].replace('_', ' ')}{due}"
