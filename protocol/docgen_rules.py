"""The rules chapters of docs/protocol.md: what a pen holds at boot, its safety monitors and
faults, the order of its replies and records, cartridges, calibration, capabilities, service
mode and the rules a host must follow. Numbers are read from ``limits.py``, ``device.py`` and
``timing.py``, tables from ``answers.py``, so the text cannot drift from what the simulated
firmware (which runs on the same constants) does."""

from __future__ import annotations

from . import answers, device, limits, timing
from .docgen_md import table as _table
from .messages import Capability, FaultCode, RunOutcome

__all__ = ["rules_section"]

L, D = limits, device


def _dc(tenths: int) -> str:
    return f"{tenths / 10:g} °C"


def rules_section() -> list[str]:
    return [
        "## Pen rules",
        "",
        "What a pen keeps, watches and reports beyond single commands. The simulated firmware "
        "runs on the same constants (`protocol/limits.py`, `protocol/device.py`).",
        "",
        *_defaults(),
        *_faults(),
        *_order(),
        *_cartridges(),
        *_calibration(),
        *_capabilities(),
        *_service_mode(),
        *_host_rules(),
    ]


def _defaults() -> list[str]:
    return [
        "### Settings at boot",
        "",
        "Every boot starts from these (RAM; nothing below survives a reset): depth 0 µm (a "
        f"`Run` is refused until `SetDepth`), rate {L.RATE_DEFAULT_SPS} strokes/s, "
        f"`soft_cap_override` 0, watchdog {L.HEARTBEAT_DEFAULT_MS} ms, telemetry "
        f"{L.TELEMETRY_DEFAULT_HZ} Hz, no run (run ids start again at 1), service mode off. "
        "The treatment area table's default depth is a suggestion for the host's user "
        "interface, not a pen setting. A run cut short by a reset is never reported: no "
        "`RunReport` comes for it, the new boot numbers its runs from 1, and its strokes "
        "appear only in `Status.lifetime_strokes` and the cartridge's `strokes_used`. Records "
        "not acknowledged before a reset are lost (they are RAM).",
        "",
    ]


_MONITORS: dict[FaultCode, tuple[str, str, str]] = {
    # fault: (raised when, watched in, ClearFault accepts when)
    FaultCode.STALL: (
        f"measured motor current > {L.STALL_CURRENT_MA} mA for more than {L.STALL_MAX_MS} ms",
        "RUNNING",
        "the motor is no longer stalled",
    ),
    FaultCode.OVER_TEMPERATURE: (
        f"measured temperature ≥ {_dc(L.TEMP_FAULT_DC)}",
        "any state",
        f"temperature < {_dc(L.TEMP_LIMIT_DC)}",
    ),
    FaultCode.BATTERY_LOW: (
        f"measured battery < {L.BATTERY_STOP_MV} mV",
        "RUNNING",
        f"battery ≥ {L.BATTERY_STOP_MV} mV",
    ),
    FaultCode.FLUID_INGRESS: (
        "the ingress sensor trips (the cartridge is retired); at boot, a wet pen",
        "any state",
        "the sensor is dry",
    ),
    FaultCode.DEPTH_ERROR: (
        f"the actuator is in position and |measured depth − set depth| > {L.DEPTH_FAULT_TOL_UM} µm",
        "RUNNING",
        f"the depth error is ≤ {L.DEPTH_FAULT_TOL_UM} µm",
    ),
    FaultCode.WATCHDOG: (
        "no authenticated frame for the watchdog time (Heartbeat and watchdog)",
        "RUNNING",
        "—",
    ),
    FaultCode.CALIBRATION_CORRUPT: (
        "the stored calibration's CRC fails (never latched: see below)",
        "not RUNNING",
        "(not latched)",
    ),
    FaultCode.CARTRIDGE_REMOVED: (
        "the cartridge is taken off (it is retired)",
        "RUNNING",
        "—",
    ),
    FaultCode.EMERGENCY_STOP: (
        "`EmergencyStop` (not again while `EMERGENCY_STOP` is latched)",
        "any state",
        "—",
    ),
    FaultCode.BROWNOUT: ("the pen booted after a brown-out reset", "BOOT", "—"),
    FaultCode.RATE_ERROR: (
        f"measured stroke rate off the set rate by more than {L.RATE_ACCEPT_TOL_PCT:g} % for "
        f"{L.RATE_DRIFT_HOLD_MS} ms or more, once {L.RATE_DRIFT_SETTLE_MS} ms have passed "
        "since the rate was set (run start or `SetRate`); never in a "
        f"`{L.Area.BENCH_FIXTURE.name}` run",
        "RUNNING",
        "—",
    ),
    FaultCode.RETRACT_SLOW: (
        f"needles not home {L.RETRACT_MAX_MS} ms after a stop (end of a run, a fault, boot)",
        "any state",
        "the needles are home",
    ),
}


_FAULT_COLUMNS = (
    "code", "fault", "raised when", "watched in", "FaultReport.value", "ClearFault accepts when",
)  # fmt: skip


def _faults() -> list[str]:
    period = D.CONTROL_TICK_MS * D.IDLE_TICK_EVERY
    rows = [
        (int(code), f"`{code.name}`", *_MONITORS[code][:2], answers.FAULT_VALUE[code],
         _MONITORS[code][2])
        for code in FaultCode
        if code is not FaultCode.NONE
    ]  # fmt: skip
    return [
        "### Faults and their reports",
        "",
        f"The pen reads its sensors and runs its monitors every {D.CONTROL_TICK_MS} ms while "
        f"anything moves (a run, a retraction) and every {period} ms at rest. A fault stops "
        f"the motor, sends the needles home (within {timing.RETRACT_MAX_MS} ms), ends the run "
        "(its report says `FAULT`, `EMERGENCY_STOP` or `WATCHDOG`), ends service mode, latches "
        "`FAULT` and sends `FaultReport` (value below, `run_id` the current or last run) and "
        "`Event FAULT_RAISED` (for an emergency stop `Event EMERGENCY_STOP`).",
        "",
        *_table(_FAULT_COLUMNS, rows),
        "* **Latching.** A fault raised while in `FAULT` replaces the latched one "
        "(`Status.fault` shows the latest), with its own report.",
        "* **Clearing.** `ClearFault` in `FAULT` checks, in this order, the latched fault's "
        f"condition (last column), then `{FaultCode.FLUID_INGRESS.name}`'s and "
        f"`{FaultCode.STALL.name}`'s whatever was latched (an emergency stop must not hide a "
        "wet or jammed pen); the first that still stands is answered "
        "`Nak(FAULT_ACTIVE, value = that fault)`. A fault with no condition of its own (—) "
        "clears once those two pass. Cleared: `Ack(value = the fault)`, `Event FAULT_CLEARED`, "
        "state `IDLE`. Outside `FAULT`, `ClearFault` answers `Ack(0)`.",
        f"* **`{FaultCode.CALIBRATION_CORRUPT.name}`** is reported, not latched: one "
        f"`FaultReport({FaultCode.CALIBRATION_CORRUPT.name}, 0)` per boot (at boot, or at rest "
        "when the record goes bad), re-armed by each `CalCommit`; the pen stays `IDLE` (no "
        "`FAULT` state, no `FAULT_RAISED`), `Status.fault` = "
        f"`{FaultCode.CALIBRATION_CORRUPT.name}` and `Status.calibrated` = 0, runs are refused "
        "`UNCALIBRATED`, and `ClearFault` answers `Ack(0)`. A valid `CalCommit` ends it.",
        f"* **Temperature warning.** `Event TEMPERATURE_WARNING` once on reaching "
        f"{_dc(L.TEMP_WARN_DC)}; re-armed when the temperature falls below "
        f"{_dc(D.TEMP_REARM_DC)}.",
        "",
    ]


def _order() -> list[str]:
    rows = [(trigger, ", ".join(items)) for trigger, items in answers.RECORD_ORDER.items()]
    return [
        "### Order of replies and records",
        "",
        "A command's reply is sent before any record it causes. The host sends `Stop` and "
        "`EmergencyStop` as urgent frames; the pen sends its `Ack` to `EmergencyStop` urgent, "
        "and every other reply and every record as ordinary DATA. What the pen sends for each "
        "trigger, in order (`[…]` only when it applies; `…` later):",
        "",
        *_table(("trigger", "messages, in order"), rows),
        "`RunReport.depth_um` and `rate_sps` are those set when the run started; a `SetDepth` "
        "or `SetRate` during the run changes the needles but not the report. "
        f"`RunReport.outcome` `{RunOutcome.CARTRIDGE_LIMIT.name}`: see Cartridges.",
        "",
    ]


def _cartridges() -> list[str]:
    return [
        "### Cartridges",
        "",
        "* **Today.** The pen keeps the UTC day from its own real-time clock; no command sets "
        "the clock. A cartridge is judged against that day when it is mounted and at boot.",
        "* **Expiry** is the earlier of its printed expiry day and its manufacturing day + "
        f"{L.CARTRIDGE_SHELF_LIFE_DAYS} days (shelf life).",
        f"* **Worn out** at {L.CARTRIDGE_LIFE_STROKES:,} strokes or {L.CARTRIDGE_LIFE_MS:,} ms "
        "of needling, whichever comes first; `Nak(CARTRIDGE_EXHAUSTED)` carries the strokes "
        f"used and {L.CARTRIDGE_LIFE_STROKES:,} in both cases.",
        "* **A run is bounded** by the cartridge's remaining strokes and remaining time as "
        "well as by its own target: it ends with outcome "
        f"`{RunOutcome.CARTRIDGE_LIMIT.name}` at exactly the remaining strokes or ms (a target "
        f"that fits ends `{RunOutcome.COMPLETED.name}`), and `Event CARTRIDGE_RETIRED` "
        "follows its report.",
        "* **Retired** (never runs again, also after re-mounting): worn out at the end of a "
        "run and on fluid ingress (`Event CARTRIDGE_RETIRED`), or taken off while running "
        "(no such event: `FaultReport` and `Event CARTRIDGE_REMOVED` say it).",
        "",
    ]


def _calibration() -> list[str]:
    return [
        "### Calibration",
        "",
        "* **Correction.** The active record maps what the host commands to what the "
        "actuator and motor are driven to: actuator depth = commanded · (1 + "
        "`depth_gain_ppm`/10^6) + `depth_offset_um`; motor rate = commanded · (1 + "
        "`rate_gain_ppm`/10^6). `Status` and `Telemetry` report measured values through the "
        "inverse, in commanded terms.",
        "* **Downgrade guard.** `CALIBRATION_DOWNGRADE`'s limit is a separate non-volatile "
        "*highest counter ever committed* (0 on a blank pen), not the active record's field, "
        "so a corrupted record cannot lower it. The factory record has counter "
        f"{D.CAL_FACTORY_COUNTER}.",
        "* **Banks.** An erased bank reads (`CalRead`) as all zeros with `valid` = 0.",
        "",
    ]


def _capabilities() -> list[str]:
    production = D.PRODUCTION_CAPABILITIES
    never = [c for c in Capability if not c & production]
    return [
        "### Capabilities",
        "",
        f"A production pen announces `Identity.capabilities` = 0x{int(production):02X} ("
        + " \\| ".join(f"`{c.name}`" for c in Capability if c & production)
        + "), never "
        + ", ".join(f"`{c.name}`" for c in never)
        + " (a simulator's). Our host treats "
        f"`{Capability.SIMULATOR.name}` as *simulated*, and refuses to calibrate a pen "
        f"without `{Capability.CALIBRATION_STORAGE.name}`.",
        "",
    ]


def _service_mode() -> list[str]:
    return [
        "### Service mode",
        "",
        "Service mode belongs to the host session that entered it (`SetServiceMode(1)` in "
        "`IDLE`; a host without a session holds it by its link epoch). `Status.service_mode` "
        "is 1 only for the holder. `SetServiceMode(1)` by the holder answers `Ack(1)` in any "
        "state. It ends (`Event SERVICE_MODE_LEFT`, value = ServiceExit) when any paired "
        "host sends `SetServiceMode(0)` (`ASKED`), when `OpenSession` names another session "
        "— even an unpaired host's (`SESSION_ENDED`) —, when a new epoch opens and it was "
        "entered without a session (`SESSION_ENDED`), on a fault (`FAULT`) or the watchdog "
        "(`WATCHDOG`), and silently at every reset (it is RAM); a bench-fixture run still "
        "going stops with it. A paired host that has not opened a session may enter it "
        "while another holds it (at rest): the holder's service mode ends first "
        "(`SESSION_ENDED`), then the new one's begins.",
        "",
    ]


def _host_rules() -> list[str]:
    return [
        "### Rules for hosts",
        "",
        "* **A stop does not cancel what is still on its way.** The pen obeys commands in "
        "delivery order, and an urgent `Stop` is delivered ahead of frames still missing "
        "before it; a `Run` delivered after it starts. `Stop`'s `Ack.value` 0 means no run "
        "was going when the Stop was obeyed. So a host that sent a `Stop` while a `Run` was "
        "unanswered, and then gets that `Run` accepted, sends `Stop` again (ours does).",
        "* **Re-send after a reconnect** only what `OpenSession` allows (value 1); replies "
        "lost with the old epoch come from the reply cache, records come again after "
        "`OpenSession`.",
        "",
    ]
