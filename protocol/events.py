"""What the link hands its owner: small frozen events, one per thing that happened."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RemoteProtocolError
from .schema import Message

__all__ = ["BadMessage", "Connected", "LinkEvent", "LinkLost", "MessageReceived", "PeerReset"]


@dataclass(frozen=True, slots=True)
class Connected:
    """The link is established in a new epoch (a fresh numbering of frames). ``peer`` is the
    authenticated peer's id (host id at the pen, pen id at the host), None when the epoch is
    not authenticated."""

    epoch: int
    peer: int | None = None


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A message arrived; the link delivers each one exactly once per epoch, in order
    (an urgent one, such as an emergency stop, on arrival). A datagram (sent with
    ``reliable=False``, such as telemetry) is delivered on arrival, at most once and never
    after a later datagram; it may be lost and is never sent again."""

    message: Message


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A frame passed its CRC but its message is invalid. The frame was acknowledged (it will
    not come again); the owner should answer with a Nak."""

    error: RemoteProtocolError
    payload: bytes


@dataclass(frozen=True, slots=True)
class LinkLost:
    """The peer went silent or stopped acknowledging; the link is closed."""

    reason: str


@dataclass(frozen=True, slots=True)
class PeerReset:
    """The peer no longer knows this epoch (it restarted, or another host connected)."""

    reason: str


LinkEvent = Connected | MessageReceived | BadMessage | LinkLost | PeerReset
