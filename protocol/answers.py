"""What every answer carries: each Nak code's ``value`` and ``limit``, each command's
``Ack.value``, each event's ``value`` — and the order in which a pen checks a command.

This is the part of the protocol a byte layout cannot say. It is declared here, as data, so the
reference (``docs/protocol.md``) prints it and tests hold the simulated firmware to it
(``tests/sim/test_answers_contract.py``): a firmware team implementing the pen from the document
answers exactly as the simulator does.

``Nak.value`` and ``Nak.limit``, and ``Event.value``, are i32 on the wire. A u32 quantity (a
cartridge id, a schema hash, a host id, a stroke count) travels as its 32-bit pattern: read it
back as unsigned.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import device as D
from . import limits as L
from .messages import (
    Ack,
    CalCommit,
    CalWrite,
    ClearFault,
    EmergencyStop,
    ErrorCode,
    EventCode,
    FaultCode,
    FwConfirm,
    OpenSession,
    PairConfirm,
    Run,
    SetDepth,
    SetRate,
    SetServiceMode,
    SetTelemetry,
    SetWatchdog,
    SimMountCartridge,
    SimSet,
    Stop,
    Unpair,
)
from .schema import REGISTRY, Message

__all__ = [
    "ACK_VALUE",
    "ADMISSION_ORDER",
    "COMMAND_CHECKS",
    "EVENT_RUN_ID",
    "EVENT_VALUE",
    "FAULT_VALUE",
    "NAK_MEANING",
    "RECORD_ORDER",
    "Check",
    "NakMeaning",
    "Stage",
]

E = ErrorCode
NONE = "0"


@dataclass(frozen=True, slots=True)
class NakMeaning:
    """When the pen answers this code, and what ``value`` and ``limit`` carry."""

    when: str
    value: str
    limit: str = NONE


NAK_MEANING: dict[ErrorCode, NakMeaning] = {
    E.MALFORMED: NakMeaning(
        "the message has the wrong length for its id, a string that is not NUL-padded "
        "printable ASCII, an enum value that is no member, a field out of range that declares "
        "no typed code, or `cmd_id` 0; a SimSet value outside its parameter's range",
        "the message id (SimSet: the value)",
        "0 (SimSet: the bound broken)",
    ),
    E.UNKNOWN_COMMAND: NakMeaning(
        "no such message id, a message the pen never receives (a reply or notification), a "
        "command this pen does not implement, or a simulator parameter it does not have",
        "the message id (for SimSet/SimGet: the parameter)",
    ),
    E.BAD_STATE: NakMeaning(
        "the command is not accepted in the pen's state (the admission table)",
        "the pen's state (PenState)",
        "0; for SetServiceMode: the state it needs (IDLE)",
    ),
    E.DEPTH_OUT_OF_RANGE: NakMeaning(
        f"a depth that is neither 0 nor within {L.DEPTH_MIN_UM}–{L.DEPTH_MAX_UM} µm; 0 µm "
        "while a run goes; a Run while the set depth is 0",
        "the depth (µm)",
        "the bound broken (µm)",
    ),
    E.DEPTH_ABOVE_AREA_MAX: NakMeaning(
        "deeper than the run's treatment area allows (with the override: its override maximum)",
        "the depth (µm)",
        "the area's maximum (µm)",
    ),
    E.SOFT_CAP_NEEDS_OVERRIDE: NakMeaning(
        "deeper than the soft cap without `soft_cap_override` = 1",
        "the depth (µm)",
        "the soft cap (µm)",
    ),
    E.RATE_OUT_OF_RANGE: NakMeaning(
        f"a rate outside {L.RATE_MIN_SPS}–{L.RATE_MAX_SPS} strokes/s",
        "the rate (strokes/s)",
        "the bound broken",
    ),
    E.RATE_NOT_ALLOWED_FOR_AREA: NakMeaning(
        "the set rate is not one of the area's speed levels",
        "the rate (strokes/s)",
        "the area's fastest level (strokes/s)",
    ),
    E.STROKES_OUT_OF_RANGE: NakMeaning(
        f"a STROKES run bound outside {L.STROKES_MIN}–{L.STROKES_MAX:,}",
        "the strokes",
        "the bound broken",
    ),
    E.DURATION_OUT_OF_RANGE: NakMeaning(
        f"a DURATION run bound outside {L.RUN_DURATION_MIN_MS}–{L.RUN_DURATION_MAX_MS:,} ms",
        "the duration (ms)",
        "the bound broken (ms)",
    ),
    E.UNKNOWN_AREA: NakMeaning(
        "no treatment area has this id", "the area id", "the bound broken (1 or the last id)"
    ),
    E.NO_CARTRIDGE: NakMeaning("a Run with no cartridge mounted", NONE),
    E.CARTRIDGE_USED: NakMeaning(
        "the mounted cartridge ran before (in an earlier mounting), or was retired",
        "the cartridge id (u32)",
    ),
    E.CARTRIDGE_EXPIRED: NakMeaning(
        "the mounted cartridge is past its expiry (or its shelf life)",
        "today (days since 1970-01-01)",
        "its expiry day",
    ),
    E.CARTRIDGE_UNKNOWN: NakMeaning(
        "the mounted cartridge has no lot, was made in the future, or expires before it was made",
        "the cartridge id (no lot); the manufacturing day (future); the expiry day",
        "0; today; the manufacturing day",
    ),
    E.CARTRIDGE_EXHAUSTED: NakMeaning(
        "the cartridge reached its stroke or time life",
        "its strokes used",
        f"the stroke life ({L.CARTRIDGE_LIFE_STROKES:,})",
    ),
    E.BATTERY_LOW: NakMeaning(
        f"a Run below {L.BATTERY_START_MIN_MV} mV", "the battery (mV)", f"{L.BATTERY_START_MIN_MV}"
    ),
    E.OVER_TEMPERATURE: NakMeaning(
        f"a Run above {L.TEMP_LIMIT_DC / 10:g} °C", "the temperature (0.1 °C)", f"{L.TEMP_LIMIT_DC}"
    ),
    E.FAULT_ACTIVE: NakMeaning(
        "a fault is latched and the command is not accepted in FAULT; ClearFault while the "
        "fault's cause still stands",
        "the fault (FaultCode) — for ClearFault, the one that still stands",
    ),
    E.UNCALIBRATED: NakMeaning("a Run while no valid calibration is active", NONE),
    E.CALIBRATION_CRC_MISMATCH: NakMeaning(
        "CalWrite whose `crc` is not calibration_crc() of its fields; CalCommit whose `crc` "
        "is not the staged record's (or nothing is staged)",
        "the crc given",
        "the crc expected (0: nothing staged)",
    ),
    E.CALIBRATION_DOWNGRADE: NakMeaning(
        "CalCommit of a record whose counter is not above every counter ever committed",
        "the staged counter",
        "the highest counter ever committed (0 on a blank pen)",
    ),
    E.CALIBRATION_OUT_OF_RANGE: NakMeaning(
        f"a CalWrite gain beyond ±{L.CAL_GAIN_PPM_LIMIT:,} ppm or offset beyond "
        f"±{L.CAL_OFFSET_UM_LIMIT} µm",
        "the value",
        "the bound broken",
    ),
    E.SCHEMA_MISMATCH: NakMeaning(
        "Hello with another protocol version, or another schema hash",
        "the version asked (or the host's schema hash)",
        "the pen's version (or its schema hash)",
    ),
    E.NOT_AUTHORIZED: NakMeaning(
        "a command that needs a paired host on an epoch no paired host authenticated",
        "the message id",
    ),
    E.WATCHDOG_OUT_OF_RANGE: NakMeaning(
        f"a watchdog timeout outside {L.HEARTBEAT_MIN_MS}–{L.HEARTBEAT_MAX_MS} ms",
        "the timeout (ms)",
        "the bound broken",
    ),
    E.TELEMETRY_OUT_OF_RANGE: NakMeaning(
        f"a telemetry rate above {L.TELEMETRY_MAX_HZ} Hz", "the rate (Hz)", f"{L.TELEMETRY_MAX_HZ}"
    ),
    E.NOT_CONNECTED: NakMeaning(
        "any command but Hello, Stop and EmergencyStop before a Hello on this link epoch",
        "the message id",
    ),
    E.IMAGE_TOO_LARGE: NakMeaning(
        "FwBegin of an image larger than the update slot", "the image bytes", "the slot's bytes"
    ),
    E.IMAGE_DOWNGRADE: NakMeaning(
        "FwBegin of an image whose security counter is below the pen's",
        "the image's counter",
        "the pen's counter",
    ),
    E.IMAGE_REJECTED: NakMeaning(
        "FwFinish re-sent after the verification it started failed (FwTestBoot never answers "
        "it: after a rejection it is IMAGE_NOT_VERIFIED, value 5 = REJECTED)",
        "the ImageFault (docs/firmware.md)",
    ),
    E.NO_UPLOAD: NakMeaning(
        "FwChunk or FwFinish without an FwBegin on this boot", "the upload phase (FwPhase)"
    ),
    E.IMAGE_NOT_VERIFIED: NakMeaning(
        "FwTestBoot before FwFinish verified the image", "the upload phase (FwPhase)"
    ),
    E.CHUNK_OUT_OF_RANGE: NakMeaning(
        "an FwChunk that ends past the announced size", "offset + length", "the image size"
    ),
    E.UPLOAD_INCOMPLETE: NakMeaning(
        "FwFinish before every byte arrived", "the next offset wanted", "the image size"
    ),
    E.PAIRING_CLOSED: NakMeaning(
        "PairRequest or PairConfirm while the pen is not in pairing mode (button not pressed, "
        "or the window is over)",
        NONE,
    ),
    E.PAIRING_FAILED: NakMeaning(
        "PairConfirm that matches no request, or whose proof is wrong", NONE
    ),
    E.PAIRINGS_FULL: NakMeaning(
        "PairConfirm while the pen holds the most pairings it can",
        "pairings held",
        "the most a pen holds",
    ),
    E.IMAGE_ON_TRIAL: NakMeaning(
        "FwBegin while the running image is on trial (confirm it or reboot first)", NONE
    ),
    E.PAIRING_BUSY: NakMeaning(
        "PairRequest while another request is pending (value 1), or from a host id the pen "
        "is paired with already (value 0: revoke it first)",
        "1 another request pending; 0 already paired",
    ),
    E.PAIRING_NOT_ACCEPTED: NakMeaning(
        "PairConfirm before the pen's button accepted the code (ask again)", NONE
    ),
    E.SERVICE_MODE_REQUIRED: NakMeaning(
        "a Run in the bench-fixture area outside service mode", "the area id"
    ),
    E.SERVICE_MODE_ACTIVE: NakMeaning(
        "a Run in a treatment area while in service mode", "the area id"
    ),
}


ACK_VALUE: dict[type[Message], str] = {
    Run: "the run id (1 for the first run of this boot, +1 for each)",
    Stop: "the id of the run it stopped; 0 when none was going",
    EmergencyStop: "the id of the current or last run of this boot (0: none)",
    ClearFault: "the fault it cleared (FaultCode); 0 when none was latched",
    OpenSession: "1: the pen still holds this session's replies (re-send unanswered commands); "
    "0: it does not (or the host is not paired)",
    CalCommit: "the calibration counter now active",
    FwConfirm: "the pen's security counter from now on",
    PairConfirm: "the pen's id (pen_id)",
    Unpair: "how many pairings the pen holds now",
    SetServiceMode: "1 in service mode; 0 out of it",
    SimSet: "the parameter set (SimParam)",
    SimMountCartridge: "the bay's state afterwards (CartridgeState)",
}
ACK_VALUE_DEFAULT = "0"  # SetDepth, SetRate, SetWatchdog, SetTelemetry, CalWrite, …


EV = EventCode
EVENT_VALUE: dict[EventCode, str] = {
    EV.BOOTED: "why it booted: 0 power-on, 1 reset, 2 brown-out, 3 firmware update",
    EV.RUN_STARTED: "the run's target: strokes, or milliseconds for a duration run",
    EV.STOPPED: "the run's outcome (RunOutcome)",
    EV.EMERGENCY_STOP: "strokes the cam had completed in the run when it was stopped",
    EV.FAULT_RAISED: "the fault (FaultCode)",
    EV.FAULT_CLEARED: "the fault cleared (FaultCode)",
    EV.CARTRIDGE_MOUNTED: "the cartridge id (u32)",
    EV.CARTRIDGE_REMOVED: "the cartridge id (u32)",
    EV.CARTRIDGE_LOCKED: "the cartridge id (u32), locked at its first run",
    EV.CARTRIDGE_RETIRED: "the cartridge id (u32): it will never run again (raised when a run "
    "ends with it worn out, and on fluid ingress; a cartridge removed while running is retired "
    "without this event: FaultReport and Event CARTRIDGE_REMOVED say it)",
    EV.WATCHDOG_EXPIRED: "how long the host had been silent (ms)",
    EV.TEMPERATURE_WARNING: f"the temperature (0.1 °C), on reaching {L.TEMP_WARN_DC / 10:g} °C",
    EV.CALIBRATION_COMMITTED: "the calibration counter now active",
    EV.SOFT_CAP_OVERRIDE: "the depth set beyond the soft cap (µm)",
    EV.SIM_PARAMETER_CHANGED: "the simulator parameter (SimParam)",
    EV.SECURITY_DENIED: "the message id refused: NOT_CONNECTED, NOT_AUTHORIZED, PairRequest "
    "refused PAIRING_CLOSED or PAIRING_BUSY, PairConfirm refused PAIRING_FAILED (not the other "
    "PairConfirm refusals)",
    EV.RETRACTED: "how long the needles took to reach home (ms)",
    EV.IMAGE_REJECTED: "the ImageFault the image failed",
    EV.FIRMWARE_TEST_BOOT: "the security counter of the image now on trial",
    EV.FIRMWARE_CONFIRMED: "the pen's security counter from now on",
    EV.FIRMWARE_REVERTED: "the counter of the image that was not confirmed",
    EV.PAIRED: "the host id paired (u32)",
    EV.UNPAIRED: "the host id revoked (u32)",
    EV.UNPAIRED_CONNECT: "0",
    EV.AUTH_FAILURES: "frames that failed authentication or were replays in the window, "
    f"counted when the count first reached {D.AUTH_BURST} or more",
    EV.UNPROVEN_CONNECT: "the host id the link claimed (u32)",
    EV.SERVICE_MODE_ENTERED: "0",
    EV.SERVICE_MODE_LEFT: "why (ServiceExit)",
}


# Event.run_id: RUN = the current or last run of this boot (0 before the first run); ZERO = 0.
RUN = "the current or last run"
ZERO = "0"
EVENT_RUN_ID: dict[EventCode, str] = {
    EV.BOOTED: ZERO,
    EV.RUN_STARTED: RUN,
    EV.STOPPED: RUN,
    EV.EMERGENCY_STOP: RUN,
    EV.FAULT_RAISED: RUN,
    EV.FAULT_CLEARED: RUN,
    EV.CARTRIDGE_MOUNTED: ZERO,
    EV.CARTRIDGE_REMOVED: ZERO,
    EV.CARTRIDGE_LOCKED: RUN,
    EV.CARTRIDGE_RETIRED: "worn out at the end of a run: that run; fluid ingress: 0",
    EV.WATCHDOG_EXPIRED: RUN,
    EV.TEMPERATURE_WARNING: ZERO,
    EV.CALIBRATION_COMMITTED: ZERO,
    EV.SOFT_CAP_OVERRIDE: RUN,
    EV.SIM_PARAMETER_CHANGED: RUN,
    EV.SECURITY_DENIED: "NOT_AUTHORIZED: the current or last run; NOT_CONNECTED and pairing "
    "refusals: 0",
    EV.RETRACTED: RUN,
    EV.IMAGE_REJECTED: ZERO,
    EV.FIRMWARE_TEST_BOOT: ZERO,
    EV.FIRMWARE_CONFIRMED: ZERO,
    EV.FIRMWARE_REVERTED: ZERO,
    EV.PAIRED: ZERO,
    EV.UNPAIRED: ZERO,
    EV.UNPAIRED_CONNECT: RUN,
    EV.AUTH_FAILURES: RUN,
    EV.UNPROVEN_CONNECT: RUN,
    EV.SERVICE_MODE_ENTERED: RUN,
    EV.SERVICE_MODE_LEFT: RUN,
}

F = FaultCode
# FaultReport.value per fault (FaultReport.run_id: the current or last run of this boot).
FAULT_VALUE: dict[FaultCode, str] = {
    F.STALL: "the measured motor current (mA)",
    F.OVER_TEMPERATURE: "the measured temperature (0.1 °C)",
    F.BATTERY_LOW: "the measured battery voltage (mV)",
    F.DEPTH_ERROR: "the measured depth (µm)",
    F.FLUID_INGRESS: "1",
    F.WATCHDOG: "how long the host had been silent (ms)",
    F.CALIBRATION_CORRUPT: "0",
    F.RETRACT_SLOW: "ms since the stop, needles not home",
    F.EMERGENCY_STOP: "strokes completed in the run (0 when none was going)",
    F.CARTRIDGE_REMOVED: "the cartridge id (u32 bit pattern)",
    F.BROWNOUT: "0",
    F.RATE_ERROR: "the measured stroke rate (0.01 strokes/s)",
}


# What the pen sends, in order, for each trigger: the reply first (a command's reply always
# goes before any record it causes), then its records. "[…]" marks an item sent only when it
# applies; "…" a later moment.
RECORD_ORDER: dict[str, tuple[str, ...]] = {
    "Run accepted": ("Ack(run id)", "[Event CARTRIDGE_LOCKED]", "Event RUN_STARTED"),
    "run ends (Stop, target, cartridge limit)": (
        "[Ack (Stop)]", "RunReport", "[Event CARTRIDGE_RETIRED]", "Event STOPPED",
        "… Event RETRACTED",
    ),
    "fault during a run (EmergencyStop: its Ack first)": (
        "[Ack (EmergencyStop)]", "RunReport", "[Event CARTRIDGE_RETIRED]", "FaultReport",
        "[Event SERVICE_MODE_LEFT]", "Event FAULT_RAISED (EmergencyStop: Event EMERGENCY_STOP)",
        "… Event RETRACTED",
    ),
    "watchdog": (
        "Event WATCHDOG_EXPIRED", "RunReport", "[Event CARTRIDGE_RETIRED]", "FaultReport",
        "[Event SERVICE_MODE_LEFT]", "Event FAULT_RAISED", "… Event RETRACTED",
    ),
    "cartridge removed while running": (
        "RunReport", "FaultReport", "[Event SERVICE_MODE_LEFT]", "Event FAULT_RAISED",
        "Event CARTRIDGE_REMOVED", "… Event RETRACTED",
    ),
    "fluid ingress": (
        "[Event CARTRIDGE_RETIRED]", "[RunReport]", "FaultReport", "[Event SERVICE_MODE_LEFT]",
        "Event FAULT_RAISED", "… Event RETRACTED",
    ),
    "boot": (
        "Event BOOTED", "[the bootloader's events: FIRMWARE_TEST_BOOT, FIRMWARE_REVERTED, …]",
        "[FaultReport and Event FAULT_RAISED: BROWNOUT, FLUID_INGRESS]",
        "[FaultReport CALIBRATION_CORRUPT]", "[… Event RETRACTED: needles were out]",
    ),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Check:
    """One check a pen makes before obeying a command, and its refusal."""

    error: ErrorCode
    condition: str


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage every command passes before its own checks, and the answer when it fails."""

    answer: str
    condition: str


# Every message the pen receives passes these stages, in this order, before a command's own
# checks (COMMAND_CHECKS). A Nak for bytes that are not a valid message (stages 1–2) carries
# bytes 1–4 of the message as cmd_id when it has at least 5 bytes, else 0.
ADMISSION_ORDER: tuple[Stage, ...] = (
    Stage("`UNKNOWN_COMMAND` (value = the id)", "the id byte names a message the schema "
          "defines (any kind)"),
    Stage("`MALFORMED` (value = the id)", "the body has the declared length for that id — "
          "checked for every id, a reply's or notification's too"),
    Stage("the field's typed code (value, bound); else `MALFORMED` (value = the id)",
          "fields in declared order, `cmd_id` first: the first field that is out of its "
          "range (typed code when the field declares one; `cmd_id` 0 is `MALFORMED`), an enum "
          "value that is no member, or a string that is not NUL-padded printable ASCII is "
          "answered (`Run` area 12 with mode 5 is `UNKNOWN_AREA`)"),
    Stage("`UNKNOWN_COMMAND` (value = the id); a host notification is never answered",
          "the message is a command (a well-formed reply or notification sent to the pen is "
          "refused; a `Heartbeat` only feeds the watchdog)"),
    Stage("the cached reply", "a re-sent command of this session (same bytes, same cmd_id) is "
          "answered from the reply cache, not executed again"),
    Stage("`UNKNOWN_COMMAND` (value = the id)", "this pen implements the command (a "
          "production pen has no simulator commands)"),
    Stage("`NOT_CONNECTED`", "a Hello on this link epoch (not needed: Hello, Stop, "
          "EmergencyStop)"),
    Stage("`NOT_AUTHORIZED`", "a paired host authenticated this epoch (unless the admission "
          "table obeys the command unpaired)"),
    Stage("`FAULT_ACTIVE` in FAULT, else `BAD_STATE`", "the pen's state admits the command "
          "(admission table)"),
)  # fmt: skip

COMMAND_CHECKS: dict[type[Message], tuple[Check, ...]] = {
    SetDepth: (
        Check(E.DEPTH_OUT_OF_RANGE, f"0, or {L.DEPTH_MIN_UM} ≤ depth ≤ {L.DEPTH_MAX_UM} µm"),
        Check(
            E.SOFT_CAP_NEEDS_OVERRIDE,
            f"depth ≤ {L.DEPTH_SOFT_CAP_UM} µm (the soft cap), or soft_cap_override = 1",
        ),
        Check(E.DEPTH_OUT_OF_RANGE, "while running: not 0"),
        Check(E.DEPTH_ABOVE_AREA_MAX, "while running: within the run's area maximum"),
    ),
    SetRate: (
        Check(E.RATE_OUT_OF_RANGE, f"{L.RATE_MIN_SPS} ≤ rate ≤ {L.RATE_MAX_SPS} strokes/s"),
        Check(E.RATE_NOT_ALLOWED_FOR_AREA, "while running: one of the run's area's levels"),
    ),
    Run: (
        Check(E.UNKNOWN_AREA, "the area exists"),
        Check(E.SERVICE_MODE_REQUIRED, "bench fixture only in service mode"),
        Check(E.SERVICE_MODE_ACTIVE, "a treatment area only outside service mode"),
        Check(
            E.STROKES_OUT_OF_RANGE,
            f"STROKES mode: {L.STROKES_MIN} ≤ strokes ≤ {L.STROKES_MAX:,}",
        ),
        Check(
            E.DURATION_OUT_OF_RANGE,
            f"DURATION mode: {L.RUN_DURATION_MIN_MS} ≤ duration ≤ {L.RUN_DURATION_MAX_MS:,} ms",
        ),
        Check(E.UNCALIBRATED, "a valid calibration is active"),
        Check(E.DEPTH_OUT_OF_RANGE, "the set depth is not 0"),
        Check(E.SOFT_CAP_NEEDS_OVERRIDE, "the set depth is within the soft cap, or overridden"),
        Check(E.DEPTH_ABOVE_AREA_MAX, "the set depth is within the area's maximum"),
        Check(E.RATE_NOT_ALLOWED_FOR_AREA, "the set rate is one of the area's levels"),
        Check(E.NO_CARTRIDGE, "a cartridge is mounted"),
        Check(E.CARTRIDGE_UNKNOWN, "it has a lot and plausible dates"),
        Check(E.CARTRIDGE_USED, "it never ran in an earlier mounting and was not retired"),
        Check(E.CARTRIDGE_EXPIRED, "it is within its expiry"),
        Check(E.CARTRIDGE_EXHAUSTED, "it has strokes and time left"),
        Check(E.BATTERY_LOW, f"battery ≥ {L.BATTERY_START_MIN_MV} mV"),
        Check(E.OVER_TEMPERATURE, f"temperature ≤ {L.TEMP_LIMIT_DC / 10:g} °C"),
    ),
    SetWatchdog: (
        Check(E.WATCHDOG_OUT_OF_RANGE, f"{L.HEARTBEAT_MIN_MS} ≤ timeout ≤ {L.HEARTBEAT_MAX_MS} ms"),
    ),
    SetTelemetry: (Check(E.TELEMETRY_OUT_OF_RANGE, f"rate ≤ {L.TELEMETRY_MAX_HZ} Hz"),),
    CalWrite: (
        Check(E.CALIBRATION_OUT_OF_RANGE, "gains and offset within their limits"),
        Check(E.CALIBRATION_CRC_MISMATCH, "crc = calibration_crc() of the fields"),
    ),
    CalCommit: (
        Check(E.CALIBRATION_CRC_MISMATCH, "a record is staged and crc names it"),
        Check(E.CALIBRATION_DOWNGRADE, "its counter is above every counter ever committed"),
    ),
    ClearFault: (Check(E.FAULT_ACTIVE, "the latched fault's cause is gone"),),
    SetServiceMode: (Check(E.BAD_STATE, "entering: the pen is IDLE"),),
}
del E, EV, F


def commands_answered_by_ack() -> list[type[Message]]:
    """Every command whose declared reply is Ack (their Ack.value is in ACK_VALUE or 0)."""
    return [cls for cls in REGISTRY.values() if cls.REPLY is Ack]
