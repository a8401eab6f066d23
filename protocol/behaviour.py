"""How a pen behaves, as tables: its state machine and which command it obeys when.

These tables are part of the protocol, not of one firmware: the simulator runs on them, the
protocol reference (``docs/protocol.md``) and the C kit (``micropen protocol gen-c``) are drawn
from them, so a firmware built from the document behaves as the simulator does.
"""

from __future__ import annotations

from enum import Enum

from .messages import (
    CalCommit,
    CalRead,
    CalWrite,
    ClearFault,
    EmergencyStop,
    FwBegin,
    FwChunk,
    FwConfirm,
    FwFinish,
    FwGetSlot,
    FwTestBoot,
    GetCartridge,
    GetPairing,
    GetStatus,
    Hello,
    OpenSession,
    PairConfirm,
    PairRequest,
    PenState,
    Run,
    SetDepth,
    SetRate,
    SetServiceMode,
    SetTelemetry,
    SetTelemetryBatch,
    SetWatchdog,
    SimGet,
    SimMountCartridge,
    SimSet,
    Stop,
    Unpair,
)
from .schema import Message

__all__ = [
    "ALLOWED_STATES",
    "NEVER_CACHED",
    "NO_HANDSHAKE_NEEDED",
    "NO_PAIRING_NEEDED",
    "OBSERVABLE_STATES",
    "TRANSITIONS",
    "Trigger",
    "allowed_states_markdown",
    "state_diagram",
]


class Trigger(Enum):
    """What moves the firmware from one state to another."""

    SELF_TEST_PASSED = "self-test passed"
    RUN = "Run accepted"
    STOP = "run ended: Stop, target reached, cartridge limit"
    RETRACTED = "needles home"
    FAULT = "fault, emergency stop, watchdog"
    CLEAR = "ClearFault, cause gone"
    RESET = "power cycle, brown-out"


S, T = PenState, Trigger
TRANSITIONS: dict[tuple[PenState, Trigger], PenState] = {
    (S.BOOT, T.SELF_TEST_PASSED): S.IDLE,
    (S.BOOT, T.FAULT): S.FAULT,
    (S.IDLE, T.RUN): S.RUNNING,
    (S.RUNNING, T.STOP): S.STOPPING,
    (S.STOPPING, T.RETRACTED): S.IDLE,
    (S.IDLE, T.FAULT): S.FAULT,
    (S.RUNNING, T.FAULT): S.FAULT,
    (S.STOPPING, T.FAULT): S.FAULT,
    (S.FAULT, T.FAULT): S.FAULT,
    (S.FAULT, T.CLEAR): S.IDLE,
    **{(state, T.RESET): S.BOOT for state in PenState},
}  # BOOTLOADER is the bootloader's, swapping images before this firmware starts

_ANY = frozenset(PenState)
_WORKING = frozenset({S.IDLE, S.RUNNING, S.STOPPING, S.FAULT})
_AT_REST = frozenset({S.IDLE, S.FAULT})
ALLOWED_STATES: dict[type[Message], frozenset[PenState]] = {
    Hello: _ANY,
    GetStatus: _ANY,
    Stop: _ANY,
    EmergencyStop: _ANY,
    ClearFault: _ANY,
    OpenSession: _ANY,
    SetDepth: _WORKING,
    SetRate: _WORKING,
    Run: frozenset({S.IDLE}),
    SetWatchdog: _WORKING,
    SetTelemetry: _WORKING,
    SetTelemetryBatch: _WORKING,
    GetCartridge: _WORKING,
    CalRead: _WORKING,
    CalWrite: _AT_REST,
    CalCommit: _AT_REST,
    SimSet: _WORKING,
    SimGet: _WORKING,
    SimMountCartridge: _WORKING,
    # firmware update: never while needles move
    FwBegin: _AT_REST,
    FwChunk: _AT_REST,
    FwFinish: _AT_REST,
    FwTestBoot: _AT_REST,
    FwConfirm: _AT_REST,
    FwGetSlot: _ANY,
    # pairing: asking needs the button pressed (pairing mode); listing and revoking a paired host
    PairRequest: _AT_REST,
    PairConfirm: _AT_REST,
    GetPairing: _ANY,
    Unpair: _ANY,
    # entering needs IDLE (checked by the handler); leaving is always allowed
    SetServiceMode: _ANY,
}
# Deny by default, part two: on a link epoch not authenticated by a paired host only these are
# obeyed (read identity and status, stop, ask to pair); the rest get NOT_AUTHORIZED.
NO_PAIRING_NEEDED = frozenset(
    {Hello, OpenSession, GetStatus, GetCartridge, CalRead, FwGetSlot, SimGet, Stop,
     EmergencyStop, PairRequest, PairConfirm}
)  # fmt: skip
# Deny by default: before a Hello on the current link epoch only these are obeyed (stopping
# is always safe, whoever asks).
NO_HANDSHAKE_NEEDED = frozenset({Hello, Stop, EmergencyStop})
# Never answered from the reply cache: the handshake, and the stops, which are idempotent and
# must act every time they arrive (a cached "Ack" standing in for a Stop would leave the needles
# running).
NEVER_CACHED = frozenset({Hello, OpenSession, Stop, EmergencyStop})
del S, T


def state_diagram() -> str:
    """Mermaid source of the state machine, drawn from :data:`TRANSITIONS`."""
    lines = ["stateDiagram-v2", "    [*] --> BOOT"]
    resets = [s for (s, trig) in TRANSITIONS if trig is Trigger.RESET]
    for (state, trig), target in TRANSITIONS.items():
        if trig is not Trigger.RESET:
            lines.append(f"    {state.name} --> {target.name}: {trig.value}")
    lines.append(f"    note right of BOOT: {Trigger.RESET.value} from any state → BOOT")
    lines.append("    note left of BOOTLOADER: the bootloader swapping images (link silent)")
    assert len(resets) == len(PenState)
    return "\n".join(lines)


# States a host can find the firmware in: BOOT ends before the link opens, and in BOOTLOADER
# the bootloader swaps images with the link silent (bytes that arrive are discarded), so neither
# is ever observable in Status nor answers a command.
OBSERVABLE_STATES = tuple(s for s in PenState if s not in (PenState.BOOT, PenState.BOOTLOADER))


def allowed_states_markdown() -> str:
    """The command/state table of docs/simulator.md and docs/protocol.md, drawn from
    :data:`ALLOWED_STATES` (columns: the states a host can observe)."""
    states = list(OBSERVABLE_STATES)
    rows = [
        "| command | " + " | ".join(s.name for s in states) + " | before Hello | unpaired |",
        "|---|" + "---|" * (len(states) + 2),
    ]
    for cls, allowed in ALLOWED_STATES.items():
        cells = ["yes" if s in allowed else "—" for s in states]
        early = "yes" if cls in NO_HANDSHAKE_NEEDED else "NOT_CONNECTED"
        unpaired = "yes" if cls in NO_PAIRING_NEEDED else "NOT_AUTHORIZED"
        rows.append(f"| `{cls.__name__}` | " + " | ".join(cells) + f" | {early} | {unpaired} |")
    return "\n".join(rows)
