"""The behaviour chapters of docs/protocol.md: how a pen connects, its states, which command it
obeys when and in what order it checks, what every answer carries, the watchdog, the timing a
pen must meet and the treatment areas — drawn from the tables the simulated firmware runs on
(``behaviour.py``, ``answers.py``, ``timing.py``, ``limits.py``), so a firmware built from the
document behaves as the simulator does."""

from __future__ import annotations

from collections.abc import Iterable

from . import answers, behaviour, limits, timing
from .docgen_md import table as _table
from .messages import ErrorCode, EventCode, PenState
from .schema import REGISTRY, Kind

__all__ = ["answers_section", "behaviour_section"]


def _mm(um: int) -> str:
    return f"{um / 1000:.2f}"


def behaviour_section() -> list[str]:
    return [
        "## Pen behaviour",
        "",
        "What a pen does with the messages, beyond their bytes. The simulated firmware "
        "(`sim/firmware.py`) runs on exactly these tables (`protocol/behaviour.py`, "
        "`protocol/answers.py`, `protocol/timing.py`, `protocol/limits.py`); a firmware that "
        "follows them answers as the simulator does, and the HIL suite (`micropen hil`) checks "
        "it.",
        "",
        *_connecting(),
        *_states(),
        *_admission(),
        *_check_order(),
        *_out_of_range(),
        *_watchdog(),
        *_timing(),
        *_areas(),
    ]


def _connecting() -> list[str]:
    return [
        "### Connecting",
        "",
        "1. The host sends SYN in a fresh epoch; the pen answers SYNACK (see Link rules and "
        "Link authentication). The pen is in `LISTEN` until its first SYN; it never opens a "
        "link itself.",
        "2. The host sends `Hello` (protocol version, schema hash). The pen answers `Identity`, "
        "or `Nak(SCHEMA_MISMATCH)` naming both versions or both hashes. **Before a `Hello` on "
        "the current epoch the pen obeys only "
        + ", ".join(f"`{c.__name__}`" for c in _ordered(behaviour.NO_HANDSHAKE_NEEDED))
        + "**; anything else is `Nak(NOT_CONNECTED)` (and `Event SECURITY_DENIED`). A new "
        "epoch needs a new `Hello`.",
        "3. The host sends `OpenSession` with its session number (see Sessions): the pen's "
        "reply cache and its held records belong to that session from now on.",
        "4. The host sets the watchdog (`SetWatchdog`) and telemetry (`SetTelemetry`) it "
        "wants, reads `GetStatus`, and heartbeats: every authenticated frame it sends feeds "
        "the watchdog; `Heartbeat` exists for an otherwise idle link.",
        "",
    ]


def _ordered(classes: Iterable[type]) -> list[type]:
    return sorted(classes, key=lambda c: getattr(c, "ID", 0))


def _states() -> list[str]:
    lines = [
        "### States",
        "",
        "Drawn from `behaviour.TRANSITIONS` (`BOOTLOADER` is the bootloader's while it swaps "
        "images; the link is silent then).",
        "",
        "```mermaid",
        behaviour.state_diagram(),
        "```",
        "",
    ]
    rows = [
        (src.name, trig.value, dst.name)
        for (src, trig), dst in behaviour.TRANSITIONS.items()
        if trig is not behaviour.Trigger.RESET
    ]
    lines += _table(("state", "trigger", "next state"), rows)
    lines += [
        f"A reset ({behaviour.Trigger.RESET.value}) leads from any state to `BOOT`; RAM is lost "
        "(reply cache, held records, run, service mode, watchdog and telemetry settings), the "
        "non-volatile memory (calibration, counters, cartridges seen, pairings, firmware) is "
        "kept, and `Status.boot_id` changes.",
        "",
    ]
    return lines


def _admission() -> list[str]:
    return [
        "### Which command is obeyed when",
        "",
        "Drawn from `behaviour.ALLOWED_STATES`, `NO_HANDSHAKE_NEEDED` and "
        "`NO_PAIRING_NEEDED`. A command refused by its state is `Nak(FAULT_ACTIVE, value = the "
        "fault)` in `FAULT` and `Nak(BAD_STATE, value = the state)` otherwise; *before Hello* "
        "and *unpaired* name the answer on an epoch without a `Hello`, or not authenticated "
        "by a paired host. Commands never answered from the reply cache: "
        + ", ".join(f"`{c.__name__}`" for c in _ordered(behaviour.NEVER_CACHED))
        + ". The simulator commands (ids 0xE0–0xFF) exist only on a simulator; a pen answers "
        "`Nak(UNKNOWN_COMMAND)`. There is no column for `BOOT` or `BOOTLOADER`: neither is ever "
        "observable in `Status` — `BOOT` ends before the link opens, and in `BOOTLOADER` the "
        "link is silent and every byte that arrives is discarded (no command is read, none "
        "answered).",
        "",
        behaviour.allowed_states_markdown(),
        "",
    ]


def _check_order() -> list[str]:
    lines = [
        "### Order of checks",
        "",
        "When several things are wrong with a message, the pen answers the first that fails, "
        "in this order (so every pen gives the same answer to the same bytes). A `Nak` for "
        "bytes that are not a valid message (steps 1–3) carries bytes 1–4 of the message as "
        "`cmd_id` when it has at least 5 bytes (even for a `Heartbeat`: its counter), else 0:",
        "",
    ]
    lines += _table(
        ("step", "check", "answer when it fails"),
        ((n, s.condition, s.answer) for n, s in enumerate(answers.ADMISSION_ORDER, 1)),
    )
    lines += ["Then the command's own checks, in this order:", ""]
    rows = []
    for cls, checks in answers.COMMAND_CHECKS.items():
        for n, check in enumerate(checks, 1):
            rows.append((f"`{cls.__name__}`" if n == 1 else "", n, check.condition,
                         f"`{check.error.name}`"))  # fmt: skip
    lines += _table(("command", "step", "check", "answer when it fails"), rows)
    lines += [
        "`Run` checks the depth and rate *set before it* (`SetDepth`, `SetRate`) against the "
        "area it names; while a run goes, `SetDepth` and `SetRate` are checked against that "
        "run's area.",
        "",
    ]
    return lines


def _out_of_range() -> list[str]:
    rows = []
    for msg_id in sorted(REGISTRY):
        cls = REGISTRY[msg_id]
        if cls.KIND not in (Kind.COMMAND, Kind.SIM_COMMAND):
            continue
        for f in cls.FIELDS:
            if f.refuse is not None:
                rows.append((f"`{cls.__name__}.{f.name}`", f"{f.lo}–{f.hi}", f"`{f.refuse.name}`"))
    lines = [
        "### Fields out of range",
        "",
        "A command whose field is outside its declared range is refused *for what it asked*, "
        "with the field's typed code, `value` = the field's value and `limit` = the bound it "
        "broke (the lower one when below, the upper one when above) — never `MALFORMED`, "
        "which is kept for bytes that are not a message (wrong length, a string that is not "
        "NUL-padded printable ASCII, an enum value that is no member, `cmd_id` 0). Fields "
        "checked this way:",
        "",
    ]
    lines += _table(("field", "range", "answer"), rows)
    return lines


def _watchdog() -> list[str]:
    return [
        "### Heartbeat and watchdog",
        "",
        f"* **Default** {limits.HEARTBEAT_DEFAULT_MS} ms, settable with `SetWatchdog` from "
        f"{limits.HEARTBEAT_MIN_MS} to {limits.HEARTBEAT_MAX_MS} ms "
        f"(`{ErrorCode.WATCHDOG_OUT_OF_RANGE.name}` outside); RAM: a reboot restores the "
        "default.",
        "* **Armed** when a run starts (counted from the host's last authenticated frame), "
        "**disarmed** when the run "
        "ends. At rest nothing moves, so nothing needs a watchdog.",
        "* **Fed** only by *authenticated* frames: a frame of a paired host's epoch whose tag "
        "checks, or a paired host's valid resume SYN (see Link authentication). Nothing on an "
        "unauthenticated epoch feeds it — not a SYN, not an unpaired link's heartbeats. A "
        "`Heartbeat` is such a frame with nothing else to say; the host sends one every "
        f"watchdog / {timing.HEARTBEATS_PER_WATCHDOG}.",
        "* **Changed during a run:** `SetWatchdog` applies at once, counted from the host's "
        "last authenticated frame (a shorter time may fire at once).",
        f"* **Fires** when no such frame came for the watchdog time: `Event "
        f"{EventCode.WATCHDOG_EXPIRED.name}` (value = ms of silence), the motor stops and the "
        f"needles retract (within {timing.RETRACT_MAX_MS} ms), the pen latches `FAULT` "
        f"`WATCHDOG`, the run's report says `WATCHDOG`, and service mode ends. `ClearFault` "
        "clears it.",
        "",
    ]


def _timing() -> list[str]:
    pen = [
        ("emergency stop acknowledged (`Ack`: motor off, needles on their way)",
         f"≤ {timing.ESTOP_ACK_MAX_MS} ms median, ≤ {2 * timing.ESTOP_ACK_MAX_MS} ms worst, "
         "at the host"),
        ("needles home after a stop, e-stop, fault or watchdog",
         f"≤ {timing.RETRACT_MAX_MS} ms (`Event RETRACTED` says how long)"),
        ("watchdog fires after the host's last frame",
         f"the watchdog time ± {timing.WATCHDOG_MARGIN_MS} ms"),
        ("the stop's event after the state change (pen clock)",
         f"≤ {timing.STATE_REPORT_MAX_MS} ms"),
        ("stall (over-current) detected", f"after {limits.STALL_MAX_MS} ms"),
        ("a command answered", "at once: slow work (flash) is answered with `busy_ms` and "
         f"asked again; the host gives up after {timing.HOST_COMMAND_TIMEOUT_S:g} s"),
        ("telemetry samples", "at the set rate, time-stamped with the pen's uptime"),
    ]  # fmt: skip
    host = [
        ("SYN to `Identity`", f"{timing.HOST_HANDSHAKE_TIMEOUT_S:g} s, then it reconnects"),
        ("a command's answer",
         f"{timing.HOST_COMMAND_TIMEOUT_S:g} s, then the outcome is unknown (resolved from "
         "`GetStatus` after a reconnect)"),
        ("an urgent `Stop`'s answer",
         f"{timing.HOST_STOP_TIMEOUT_S:g} s; the pen's watchdog is the backstop"),
        ("silence from the pen (acks count)",
         f"{timing.HOST_LIVENESS_TIMEOUT_S:g} s ends the epoch; the host reconnects"),
        ("holding an ack to ride on its next command",
         f"{timing.HOST_ACK_DELAY_S * 1000:g} ms (the `Link` default is 0, which is what the "
         "pen uses: it acknowledges at once)"),
        ("heartbeat interval", f"watchdog / {timing.HEARTBEATS_PER_WATCHDOG}"),
    ]  # fmt: skip
    return [
        "### Timing",
        "",
        "What a pen must meet (the HIL suite measures each: `hil_tests/test_stop.py`, "
        "`test_watchdog.py`, `test_hazards.py`):",
        "",
        *_table(("requirement", "limit"), pen),
        "What the host assumes (`protocol/timing.py`; the host's own timeouts):",
        "",
        *_table(("host waits for", "how long"), host),
    ]


def _areas() -> list[str]:
    levels = ", ".join(f"{n} = {r}/s" for n, r in enumerate(limits.RATE_LEVELS_SPS, 1))
    rows = []
    for profile in limits.AREAS.values():
        lo, hi = profile.levels
        rates = ", ".join(str(r) for r in profile.allowed_rates())
        override = _mm(profile.override_max_um) if profile.override_max_um > profile.max_um else "—"
        rows.append((int(profile.area), f"`{profile.area.name}`", profile.label,
                     _mm(profile.default_um), _mm(profile.max_um), override,
                     f"{lo}–{hi} ({rates})"))  # fmt: skip
    return [
        "### Treatment areas",
        "",
        f"`Run.area` names one of these (`limits.AREAS`). Depths in mm; speed levels {levels}. "
        f"Above the soft cap ({_mm(limits.DEPTH_SOFT_CAP_UM)} mm) a depth needs "
        "`soft_cap_override` = 1 and, in an area with an override maximum, may go up to it. "
        f"`{limits.Area.BENCH_FIXTURE.name}` is not a treatment area: it runs only in service "
        "mode (`SetServiceMode`), and nothing else runs in service mode.",
        "",
        *_table(
            ("id", "area", "meaning", "default", "maximum", "with override", "speed levels"),
            rows,
        ),
    ]


def answers_section() -> list[str]:
    lines = [
        "## Answers",
        "",
        "`Nak.value`, `Nak.limit` and `Event.value` are i32 on the wire; a u32 quantity (a "
        "cartridge id, a host id, a schema hash) travels as its 32-bit pattern — read it back "
        "as unsigned. `Event.t_ms` is the pen's uptime when it happened; `Event.run_id` is, "
        "per event (column *run_id*), either the current or last run of this boot (0 before "
        "the first run, even at rest long after it ended) or always 0. `FaultReport.run_id` "
        "is the current or last run of this boot.",
        "",
        "### Nak codes",
        "",
    ]
    lines += _table(
        ("code", "name", "when", "value", "limit"),
        (
            (int(code), f"`{code.name}`", m.when, m.value, m.limit)
            for code, m in answers.NAK_MEANING.items()
        ),
    )
    acks = answers.commands_answered_by_ack()
    default = answers.ACK_VALUE_DEFAULT
    lines += ["### Ack values", "", f"`Ack.value` per command ({default} for any not listed):", ""]
    lines += _table(
        ("command", "Ack.value"),
        ((f"`{c.__name__}`", answers.ACK_VALUE[c]) for c in acks if c in answers.ACK_VALUE),
    )
    lines += ["### Events", ""]
    lines += _table(
        ("code", "name", "value", "run_id"),
        (
            (int(code), f"`{code.name}`", text, answers.EVENT_RUN_ID[code])
            for code, text in answers.EVENT_VALUE.items()
        ),
    )
    lines += [
        f"A pen in `{PenState.FAULT.name}` reports the fault in `Status.fault`; otherwise "
        "`Status.fault` is `NONE`, or `CALIBRATION_CORRUPT` while the stored calibration is "
        "damaged (runs are then refused `UNCALIBRATED`; see "
        "[Faults](#faults-and-their-reports)).",
        "",
    ]
    return lines
