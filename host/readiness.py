"""Can the pen start a run now? The host's own answer, from the status the pen reports.

The firmware refuses a run on a latched fault, a low battery, a hot handpiece, a cartridge that
is missing, used, expired or worn out, or missing calibration. The host checks the same things
again before it sends ``Run`` (IEC 62304: every control in both layers), and says what to do in
one line instead of relaying a refusal code. It also times the needles' retraction from the
pen's own ``RETRACTED`` events: an actuator that took longer than 50 ms is not trusted with
another run in this session, whatever the pen's fault state says.
"""

from __future__ import annotations

from micropen.protocol import limits as L
from micropen.protocol.messages import CartridgeState, FaultCode, PenState, Status

from .errors import PenNotReady

__all__ = ["check_can_run", "check_retraction"]

_CARTRIDGE_FIX = {
    CartridgeState.ABSENT: "no cartridge is mounted; mount a new sterile cartridge",
    CartridgeState.EXHAUSTED: "the cartridge is worn out (strokes or time used up); replace it",
    CartridgeState.REFUSED: (
        "the cartridge was refused (used before, expired or unknown); replace it with a new "
        "sterile one"
    ),
    CartridgeState.RETIRED: (
        "the cartridge was retired (fluid ingress or removed mid-run); replace it and check the "
        "handpiece"
    ),
}


def check_can_run(status: Status) -> None:
    """Raise PenNotReady naming the first reason the pen must not start a run."""
    if status.state is PenState.FAULT:
        raise PenNotReady(
            f"the pen has a latched fault ({status.fault.name.lower()}); remove its cause, "
            "then clear it (micropen clear-fault, or clear_fault()) before the next run"
        )
    if status.state is not PenState.IDLE:
        raise PenNotReady(f"the pen is {status.state.name.lower()}; wait until it is idle")
    if not status.calibrated or status.fault is FaultCode.CALIBRATION_CORRUPT:
        raise PenNotReady(
            "the pen has no valid calibration; calibrate it (micropen calibrate all) first"
        )
    if status.battery_mv < L.BATTERY_START_MIN_MV:
        raise PenNotReady(
            f"battery {status.battery_mv / 1000:.3f} V is below the "
            f"{L.BATTERY_START_MIN_MV / 1000:.2f} V needed to start a run; charge the pen"
        )
    if status.temperature_dc > L.TEMP_LIMIT_DC:
        raise PenNotReady(
            f"handpiece {status.temperature_dc / 10:.1f} °C is above the "
            f"{L.TEMP_LIMIT_DC / 10:.1f} °C limit; let it cool before the next run"
        )
    fix = _CARTRIDGE_FIX.get(status.cartridge_state)
    if fix is not None:
        raise PenNotReady(fix)


def check_retraction(slowest_ms: int | None) -> None:
    """Raise PenNotReady when a retraction seen in this session broke the 50 ms limit."""
    if slowest_ms is not None and slowest_ms > L.RETRACT_MAX_MS:
        raise PenNotReady(
            f"the needles took {slowest_ms} ms to retract after a stop (limit "
            f"{L.RETRACT_MAX_MS} ms); the actuator is worn or obstructed — have the pen "
            "serviced before treating with it"
        )
