"""Small tools for driving two Links through the public API in virtual time."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from micropen.protocol.events import LinkEvent, MessageReceived
from micropen.protocol.framing import HEADER, FrameDecoder
from micropen.protocol.link import Flag, Link, Role
from micropen.protocol.schema import Message

__all__ = ["Pair", "RiggedEpochs", "WireFrame", "parse", "split_frames"]


@dataclass(frozen=True)
class WireFrame:
    flags: Flag
    epoch: int
    seq: int
    ack: int
    payload: bytes


def parse(data: bytes) -> list[WireFrame]:
    """The frames in a chunk of written bytes, decoded for assertions."""
    out = []
    for raw in FrameDecoder().feed(data):
        flags, epoch, seq, ack = HEADER.unpack_from(raw)
        out.append(WireFrame(Flag(flags), epoch, seq, ack, raw[HEADER.size : -4]))
    return out


def split_frames(data: bytes) -> list[bytes]:
    """One write split into its frames, each still delimited, so a channel can lose some."""
    return [b"\0" + piece + b"\0" for piece in data.split(b"\0") if piece]


class RiggedEpochs(random.Random):
    """A Random whose ``choice`` (what Link.connect draws an epoch with) returns the given
    epochs in turn, then behaves normally."""

    def __init__(self, epochs: Iterable[int] = (), seed: int = 0) -> None:
        super().__init__(seed)
        self._epochs = deque(epochs)

    def choice(self, seq: Sequence[Any]) -> Any:
        if self._epochs and self._epochs[0] in seq:
            return self._epochs.popleft()
        return super().choice(seq)


@dataclass
class Pair:
    """A host and a pen joined by a perfect wire; the test moves bytes and time explicitly."""

    host: Link = field(default_factory=lambda: Link(Role.HOST, rng=random.Random(1)))
    pen: Link = field(default_factory=lambda: Link(Role.PEN))
    now: float = 0.0
    host_events: list[LinkEvent] = field(default_factory=list)
    pen_events: list[LinkEvent] = field(default_factory=list)

    def host_to_pen(self, deliver: bool = True) -> bytes:
        data = self.host.data_to_send(self.now)
        if deliver:
            self.pen.receive_data(data, self.now)
            self.pen_events += self.pen.events()
        return data

    def pen_to_host(self, deliver: bool = True) -> bytes:
        data = self.pen.data_to_send(self.now)
        if deliver:
            self.host.receive_data(data, self.now)
            self.host_events += self.host.events()
        return data

    def settle(self, rounds: int = 50) -> None:
        """Exchange bytes until neither side has anything to write (time does not move)."""
        for _ in range(rounds):
            if not (self.host_to_pen() + self.pen_to_host()):
                return
        raise AssertionError(f"links still talking after {rounds} rounds")

    def connect(self) -> None:
        self.host.connect(self.now)
        self.settle()
        assert self.host.connected and self.pen.connected

    def delivered_to_pen(self) -> list[Message]:
        return [e.message for e in self.pen_events if isinstance(e, MessageReceived)]

    def delivered_to_host(self) -> list[Message]:
        return [e.message for e in self.host_events if isinstance(e, MessageReceived)]
