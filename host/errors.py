"""The host's errors. One root, a small tree, and messages that say what to do.

::

    MicropenError (micropen.protocol.errors)
    └── HostError
        ├── InvalidInput (also LocalProtocolError)  bad value from the user; CLI exit code 2
        │   ├── SafetyLimitError                     outside the pen's or the area's envelope
        │   └── PenURLError                          unknown scheme or option
        ├── TransportError                           cannot open the port, or lost it
        │   └── ConnectionLost                       a pending command could not be resolved
        ├── PenTimeout (also TimeoutError)           no answer in time
        ├── PenRefused                               the pen answered with a Nak
        ├── SchemaMismatch                           the two ends disagree about the protocol
        ├── DifferentPen                             another unit answered after a reconnect
        ├── OutcomeUnknown                           a command may or may not have executed
        ├── PenNotReady                              the pen's own status forbids a run now
        │   └── CartridgeRefused (cartridge_guard)    the fleet registry refused the cartridge
        ├── RateDrift                                the host stopped a run: stroke rate off
        ├── RunEndedElsewhere                        another host session received the report
        └── PenRebooted                              the pen restarted under a pending command
"""

from __future__ import annotations

from collections.abc import Callable

from micropen.protocol.errors import LocalProtocolError, MicropenError
from micropen.protocol.messages import ErrorCode, FaultCode, Nak

__all__ = [
    "ConnectionLost",
    "DifferentPen",
    "HostError",
    "InvalidInput",
    "OutcomeUnknown",
    "PenNotReady",
    "PenRebooted",
    "PenRefused",
    "PenTimeout",
    "PenURLError",
    "RateDrift",
    "RunEndedElsewhere",
    "SafetyLimitError",
    "SchemaMismatch",
    "TransportError",
]


class HostError(MicropenError):
    """Root of the host's errors."""


class InvalidInput(HostError, LocalProtocolError):
    """A value from the user is not acceptable; nothing was sent to the pen."""


class SafetyLimitError(InvalidInput):
    """The value is outside the pen's envelope or the treatment area's profile."""


class PenURLError(InvalidInput):
    """The pen URL names an unknown scheme or option."""


class TransportError(HostError):
    """The port could not be opened, or was lost."""


class ConnectionLost(TransportError):
    """The link dropped and a pending command's fate could not be established."""


class PenTimeout(HostError, TimeoutError):
    """The pen did not answer in time."""


class PenRefused(HostError):
    """The pen refused a command (it answered with a Nak); nothing happened on the pen."""

    def __init__(self, command: str, nak: Nak) -> None:
        self.command = command
        self.code: ErrorCode = nak.error
        self.value = nak.value
        self.limit = nak.limit
        detail = f" (value {nak.value}, limit {nak.limit})" if nak.value or nak.limit else ""
        hint = _HINTS.get(nak.error)
        if hint is not None:
            detail = ": " + hint(nak)
        super().__init__(f"the pen refused {command}: {nak.error.name}{detail}")


def _fault_name(value: int) -> str:
    try:
        return str(FaultCode(value)).replace("_", " ")  # a Word enum: its lower-case name
    except ValueError:
        return f"code {value}"


# what a technician does about the refusals a front end meets most (the rest name the value)
_HINTS: dict[ErrorCode, Callable[[Nak], str]] = {
    ErrorCode.NOT_AUTHORIZED: lambda nak: (
        "this host is not paired with the pen; press the pen's pairing button, then run "
        "micropen pair --pen URL"
    ),
    ErrorCode.FAULT_ACTIVE: lambda nak: (
        f"the pen has a latched {_fault_name(nak.value)} fault; check its cause (micropen "
        "status, micropen log show), remove it, then clear it with micropen clear-fault"
    ),
    ErrorCode.SERVICE_MODE_REQUIRED: lambda nak: (
        "the bench fixture runs only in service mode, which micropen calibrate enters; "
        "choose a treatment area"
    ),
    ErrorCode.SERVICE_MODE_ACTIVE: lambda nak: (
        "the pen is in service mode (bench fixture only); it ends with the calibration that "
        "entered it, or reconnect"
    ),
}


class SchemaMismatch(HostError):
    """The pen speaks another protocol version or schema than this host."""

    def __init__(self, host_version: int, host_hash: int, pen_version: int, pen_hash: int) -> None:
        self.host_version, self.host_hash = host_version, host_hash
        self.pen_version, self.pen_hash = pen_version, pen_hash
        pen = f"v{pen_version}" if pen_version >= 0 else "another version"
        super().__init__(
            f"protocol mismatch: host speaks v{host_version} (schema {host_hash:08x}), pen speaks "
            f"{pen} (schema {pen_hash:08x}); update the host or the pen firmware so both match"
        )


class PenRebooted(HostError):
    """The pen restarted while a command was pending; it was not re-sent."""


class DifferentPen(HostError):
    """After a reconnect another unit answered on the same port: this session refuses to drive
    it (its records, settings and runs belong to the first unit)."""


class OutcomeUnknown(HostError):
    """The link dropped before the pen answered, and the pen can no longer say whether it ran
    the command (it no longer holds this session's replies): resolve it from the pen's state."""


class PenNotReady(HostError):
    """The pen reports a state in which it must not start a run (latched fault, battery,
    temperature, cartridge, calibration); the message says what to do."""


class RateDrift(HostError):
    """The host saw the stroke rate drift beyond ±5 % in the pen's telemetry and stopped the
    run (hazard 6); ``report`` is the pen's report of the stopped run."""

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class RunEndedElsewhere(HostError):
    """A run of ours ended while another host had the link, and that host received its report
    (and logged it); ``strokes`` is the pen's own count from its status, when it has one."""

    def __init__(self, message: str, run_id: int, strokes: int | None) -> None:
        super().__init__(message)
        self.run_id, self.strokes = run_id, strokes
