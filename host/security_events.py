"""What the pen's security events mean, in words: for the treatment log and for the operator.

Why in one place: the recorder stores the detail beside the raw value, and the connection
warns the operator as soon as an event arrives; both say the same thing, and the protocol's
integers (an ImageFault, a message id, a host id) become names a technician can act on."""

from __future__ import annotations

from micropen.protocol.image import ImageFault
from micropen.protocol.messages import Event, EventCode
from micropen.protocol.schema import REGISTRY

__all__ = ["ALARMING", "SECURITY_CODES", "describe"]

SECURITY_CODES = frozenset(
    {
        EventCode.SECURITY_DENIED,
        EventCode.IMAGE_REJECTED,
        EventCode.UNPAIRED_CONNECT,
        EventCode.AUTH_FAILURES,
        EventCode.UNPROVEN_CONNECT,
        EventCode.PAIRED,
        EventCode.UNPAIRED,
        EventCode.FIRMWARE_TEST_BOOT,
        EventCode.FIRMWARE_CONFIRMED,
        EventCode.FIRMWARE_REVERTED,
    }
)
# events that mean someone else tried something: the operator is warned at once
ALARMING = frozenset(
    {
        EventCode.SECURITY_DENIED,
        EventCode.UNPAIRED_CONNECT,
        EventCode.UNPROVEN_CONNECT,
        EventCode.AUTH_FAILURES,
    }
)


def describe(event: Event) -> str:
    """One line for a security event ("" for any other event)."""
    value, code = event.value, event.code
    if code is EventCode.SECURITY_DENIED:
        cls = REGISTRY.get(value)
        name = cls.__name__ if cls is not None else f"message 0x{value:02X}"
        return (
            f"the pen refused {name}: sent by a party not allowed to (not paired), or a "
            "pairing request outside the pen's pairing window"
        )
    if code is EventCode.IMAGE_REJECTED:
        fault = ImageFault(value).name if value in set(ImageFault) else str(value)
        return f"the pen refused a firmware image: {fault}"
    if code is EventCode.UNPAIRED_CONNECT:
        return "an unpaired party opened the pen's link while this host was connected"
    if code is EventCode.UNPROVEN_CONNECT:
        return (
            f"a connection claimed paired host {value & 0xFFFF_FFFF:08x} but never proved it "
            "(a forged or replayed connection request)"
        )
    if code is EventCode.AUTH_FAILURES:
        return f"{value} frames failed authentication within a second (forged or replayed)"
    if code in (EventCode.PAIRED, EventCode.UNPAIRED):
        verb = "paired with" if code is EventCode.PAIRED else "forgot"
        return f"the pen {verb} host {value & 0xFFFF_FFFF:08x}"
    if code is EventCode.FIRMWARE_TEST_BOOT:
        return f"the pen booted a new image on trial (security counter {value})"
    if code is EventCode.FIRMWARE_CONFIRMED:
        return f"the pen confirmed its image (security counter now {value})"
    if code is EventCode.FIRMWARE_REVERTED:
        return f"the pen reverted an unconfirmed image (security counter {value})"
    return ""
