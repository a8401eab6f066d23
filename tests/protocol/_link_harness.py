"""Small tools for driving two Links through the public API in virtual time."""

from __future__ import annotations

import heapq
import random
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from micropen.protocol.events import LinkEvent, MessageReceived
from micropen.protocol.framing import HEADER, FrameDecoder
from micropen.protocol.link import Flag, Link, Role
from micropen.protocol.messages import Ack, GetStatus, Telemetry
from micropen.protocol.schema import Message

SACK = struct.Struct("<I")  # the bitmap after the header (spelled out: see docs/protocol.md)

__all__ = [
    "Exchange",
    "LossyLine",
    "Pair",
    "RiggedEpochs",
    "WireFrame",
    "parse",
    "run_commands",
    "split_frames",
]


@dataclass(frozen=True)
class WireFrame:
    flags: Flag
    epoch: int
    seq: int
    ack: int
    payload: bytes
    sack: int | None = None  # the SACK bitmap, when the frame carries one

    @property
    def sacked(self) -> list[int]:
        """The sequence numbers the bitmap names."""
        bits = self.sack or 0
        return [(self.ack + 1 + i) % (1 << 16) for i in range(32) if bits >> i & 1]


def parse(data: bytes) -> list[WireFrame]:
    """The frames in a chunk of written bytes, decoded for assertions (a SACK bitmap is taken
    off the payload into ``sack``; SYN and SYNACK carry the flag but no bitmap)."""
    out = []
    for raw in FrameDecoder().feed(data):
        flags, epoch, seq, ack = HEADER.unpack_from(raw)
        start, sack = HEADER.size, None
        if flags & Flag.SACK and not flags & (Flag.SYN | Flag.SYNACK):
            (sack,) = SACK.unpack_from(raw, start)
            start += SACK.size
        out.append(WireFrame(Flag(flags), epoch, seq, ack, raw[start:-4], sack))
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


# ------------------------------------------------------------------------------ a lossy line
@dataclass
class LossyLine:
    """Both directions of a line in virtual time: each frame is lost, duplicated or held back
    (reordered) with the given probabilities, drawn from ``rng``; otherwise it arrives
    ``delay`` seconds after it was written, in order."""

    rng: random.Random
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.001
    reorder_delay: float = 0.004
    _queue: list[tuple[float, int, bool, bytes]] = field(default_factory=list)
    _count: int = 0

    def carry(self, data: bytes, now: float, *, to_pen: bool) -> None:
        rng = self.rng
        for frame in split_frames(data):
            if rng.random() < self.loss:
                continue
            at = now + self.delay
            if self.reorder and rng.random() < self.reorder:
                at += self.reorder_delay * rng.random()
            self._push(at, to_pen, frame)
            if self.duplicate and rng.random() < self.duplicate:
                self._push(at + self.delay * rng.random(), to_pen, frame)

    def _push(self, at: float, to_pen: bool, frame: bytes) -> None:
        self._count += 1
        heapq.heappush(self._queue, (at, self._count, to_pen, frame))

    def next_arrival(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def arrivals(self, now: float) -> list[tuple[bool, bytes]]:
        """Frames due by ``now``, in arrival order: (to_pen, frame)."""
        out = []
        while self._queue and self._queue[0][0] <= now:
            _, _, to_pen, frame = heapq.heappop(self._queue)
            out.append((to_pen, frame))
        return out


@dataclass
class Exchange:
    """What :func:`run_commands` saw."""

    latencies: dict[int, float]  # cmd_id -> send → reply (virtual seconds)
    delivered_commands: list[int]  # cmd_ids in the order the pen received them
    replies: list[int]  # cmd_ids in the order the host received their replies
    telemetry: list[int]  # t_ms of the samples the host received, in order
    telemetry_sent: int
    host_events: list[LinkEvent]
    end: float  # virtual time when the last reply arrived (or the limit)


def run_commands(
    host: Link,
    pen: Link,
    line: LossyLine,
    commands: int,
    *,
    in_flight: int = 16,
    telemetry_period: float | None = None,
    limit: float = 600.0,
) -> Exchange:
    """A host keeping ``in_flight`` commands outstanding, a pen answering each with an Ack
    (and, with ``telemetry_period``, streaming Telemetry datagrams), over ``line``, in virtual
    time, until every command is answered or ``limit`` seconds have passed."""
    now = 0.0
    host.connect(now)
    sent_at: dict[int, float] = {}
    latencies: dict[int, float] = {}
    delivered: list[int] = []
    replies: list[int] = []
    telemetry: list[int] = []
    host_events: list[LinkEvent] = []
    next_cmd, samples, stuck = 1, 0, 0
    next_sample = 0.0 if telemetry_period else float("inf")
    while len(latencies) < commands and now < limit:
        while host.connected and len(sent_at) - len(latencies) < in_flight and next_cmd <= commands:
            host.send(GetStatus(cmd_id=next_cmd), now)
            sent_at[next_cmd] = now
            next_cmd += 1
        if telemetry_period and now >= next_sample:
            if pen.connected:
                sample = Telemetry(int(now * 1000), 1, 500, 9000, samples, 300, 250, 3900, 7, 0)
                pen.send(sample, now, reliable=False)  # type: ignore[call-arg]
                samples += 1
            next_sample += telemetry_period
        line.carry(host.data_to_send(now), now, to_pen=True)
        line.carry(pen.data_to_send(now), now, to_pen=False)
        due = (line.next_arrival(), host.next_deadline(), pen.next_deadline(), next_sample)
        wake = min(t for t in due if t is not None)
        stuck = stuck + 1 if wake <= now else 0
        assert stuck < 1000, f"the links keep asking to be woken at {wake} (now {now})"
        now = max(now, wake)
        for to_pen, frame in line.arrivals(now):
            if to_pen:
                pen.receive_data(frame, now)
                for event in pen.events():
                    if isinstance(event, MessageReceived):
                        cmd_id = event.message[0]
                        delivered.append(cmd_id)
                        pen.send(Ack(cmd_id=cmd_id, value=0), now)
            else:
                host.receive_data(frame, now)
                for event in host.events():
                    host_events.append(event)
                    if not isinstance(event, MessageReceived):
                        continue
                    message = event.message
                    if isinstance(message, Telemetry):
                        telemetry.append(message.t_ms)
                    elif message[0] not in latencies:
                        replies.append(message[0])
                        latencies[message[0]] = now - sent_at[message[0]]
    return Exchange(latencies, delivered, replies, telemetry, samples, host_events, now)
