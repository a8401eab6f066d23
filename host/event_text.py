"""What an event's ``value`` means, in words and units, for people reading a log.

The wire carries one signed 32-bit ``value`` per event; its meaning depends on the code (a run
outcome, a cartridge id, milliseconds, ...). Shown raw, ``STOPPED 2`` or a negative cartridge
id means nothing to a technician; here each code names its value and formats it as printed on
the device (cartridge ids unsigned, as on the cartridge's label).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

from micropen.protocol.image import ImageFault
from micropen.protocol.messages import (
    EventCode,
    FaultCode,
    RunOutcome,
    ServiceExit,
    SimParam,
)
from micropen.protocol.schema import REGISTRY

__all__ = ["event_text", "unsigned"]

_BOOT_REASONS = ("power on", "reset", "brownout", "firmware update")


def unsigned(value: int) -> int:
    """A u32 the wire carried in a signed field (cartridge and host ids)."""
    return value & 0xFFFF_FFFF


def _word(enum: type[IntEnum]) -> Callable[[int], str]:
    def name(value: int) -> str:
        try:
            return enum(value).name.lower().replace("_", " ")
        except ValueError:
            return f"unknown {enum.__name__} {value}"

    return name


def _boot(value: int) -> str:
    return _BOOT_REASONS[value] if 0 <= value < len(_BOOT_REASONS) else f"reason {value}"


def _message(value: int) -> str:
    cls = REGISTRY.get(value)
    return cls.__name__ if cls is not None else f"message 0x{value:02x}"


# code → (label of the value, how to show it); None: the value carries nothing
_VALUES: dict[EventCode, tuple[str, Callable[[int], str]] | None] = {
    EventCode.BOOTED: ("why", _boot),
    EventCode.RUN_STARTED: ("target", lambda v: f"{v:,} (strokes, or ms if timed)"),
    EventCode.STOPPED: ("outcome", _word(RunOutcome)),
    EventCode.EMERGENCY_STOP: ("strokes of the run", lambda v: f"{v:,}"),
    EventCode.FAULT_RAISED: ("fault", _word(FaultCode)),
    EventCode.FAULT_CLEARED: ("fault", _word(FaultCode)),
    EventCode.CARTRIDGE_MOUNTED: ("cartridge", lambda v: str(unsigned(v))),
    EventCode.CARTRIDGE_REMOVED: ("cartridge", lambda v: str(unsigned(v))),
    EventCode.CARTRIDGE_LOCKED: ("cartridge", lambda v: str(unsigned(v))),
    EventCode.CARTRIDGE_RETIRED: ("cartridge", lambda v: str(unsigned(v))),
    EventCode.WATCHDOG_EXPIRED: ("silent for", lambda v: f"{v} ms"),
    EventCode.TEMPERATURE_WARNING: ("temperature", lambda v: f"{v / 10:.1f} °C"),
    EventCode.CALIBRATION_COMMITTED: ("counter", str),
    EventCode.SOFT_CAP_OVERRIDE: ("depth", lambda v: f"{v / 1000:.2f} mm"),
    EventCode.SIM_PARAMETER_CHANGED: ("parameter", _word(SimParam)),
    EventCode.SECURITY_DENIED: ("command", _message),
    EventCode.RETRACTED: ("needles home in", lambda v: f"{v} ms"),
    EventCode.IMAGE_REJECTED: ("check failed", _word(ImageFault)),
    EventCode.FIRMWARE_TEST_BOOT: ("security counter", str),
    EventCode.FIRMWARE_CONFIRMED: ("security counter", str),
    EventCode.FIRMWARE_REVERTED: ("security counter", str),
    EventCode.PAIRED: ("host", lambda v: f"{unsigned(v):08x}"),
    EventCode.UNPAIRED: ("host", lambda v: f"{unsigned(v):08x}"),
    EventCode.UNPAIRED_CONNECT: None,
    EventCode.AUTH_FAILURES: ("frames refused", str),
    EventCode.UNPROVEN_CONNECT: ("claimed host", lambda v: f"{unsigned(v):08x}"),
    EventCode.SERVICE_MODE_ENTERED: None,
    EventCode.SERVICE_MODE_LEFT: ("why", _word(ServiceExit)),
}


def event_text(code: str | EventCode, value: int | None) -> str:
    """``"outcome: stopped"``, ``"cartridge: 3028293447"``; "" when the value means nothing."""
    try:
        event = code if isinstance(code, EventCode) else EventCode[code]
    except KeyError:
        return "" if value is None else f"value: {value}"
    meaning = _VALUES.get(event)
    if meaning is None or value is None:
        return ""
    label, show = meaning
    return f"{label}: {show(value)}"
