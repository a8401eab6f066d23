"""The simulated pen's telemetry over the link: datagrams, never ahead of a reply.

The link is tested on its own elsewhere; here it carries the real firmware's traffic (1 kHz
telemetry during commands) through the simulator's own faulty line (``SimSet`` of the link
fault parameters), in virtual time: a host Link and a SimulatedPen exchanging bytes every
half millisecond.
"""

from __future__ import annotations

import random

from _link_harness import parse

from micropen.protocol.events import MessageReceived
from micropen.protocol.link import Flag, Link, Role
from micropen.protocol.messages import (
    PROTOCOL_VERSION,
    Ack,
    GetStatus,
    Hello,
    OpenSession,
    SetTelemetry,
    SimParam,
    SimSet,
    Status,
    Telemetry,
)
from micropen.protocol.schema import Message, schema_hash
from micropen.sim.pen import SimConfig, SimulatedPen

STEP_S = 0.0005
REPLY_BOUND_S = 0.3


class VirtualHost:
    def __init__(self, seed: int) -> None:
        self.now = 0.0
        self.pen = SimulatedPen(SimConfig(seed=seed, boot_seed=seed), now=0.0)
        key = random.Random(seed).randbytes(32)  # paired by the bench: an authenticated link
        pen_id = self.pen.add_pairing(0x7E57, key, "test host", 0.0)
        lookup = {pen_id: (pen_id, key)}.get
        self.link = Link(Role.HOST, ack_delay=0.004, rng=random.Random(seed), pairing=lookup)
        self.replies: dict[int, tuple[float, Message]] = {}
        self.telemetry: list[int] = []
        self.pen_frames: list[bytes] = []  # what the pen wrote, when recording
        self.recording = False
        self._cmd = 0

    def step(self) -> None:
        self.now += STEP_S
        self.pen.receive_data(self.link.data_to_send(self.now), self.now)
        data = self.pen.data_to_send(self.now)
        if self.recording:
            self.pen_frames.append(data)
        self.link.receive_data(data, self.now)
        for event in self.link.events():
            if isinstance(event, MessageReceived):
                message = event.message
                if isinstance(message, Telemetry):
                    self.telemetry.append(message.t_ms)
                elif hasattr(message, "cmd_id"):
                    self.replies[message[0]] = (self.now, message)

    def send(self, message: Message) -> None:
        self.link.send(message, self.now)

    def request(self, build: type[Message], *args: object) -> Message:
        self._cmd += 1
        cmd_id = self._cmd
        self.send(build(cmd_id, *args))
        for _ in range(20_000):
            if cmd_id in self.replies:
                return self.replies.pop(cmd_id)[1]
            self.step()
        raise AssertionError(f"no reply to {build.__name__}")

    def start(self, telemetry_hz: int) -> None:
        self.link.connect(self.now, 0x7E57)
        while not self.link.connected:
            self.step()
        self.request(Hello, PROTOCOL_VERSION, schema_hash())
        assert isinstance(self.request(OpenSession, 7), Ack)
        assert isinstance(self.request(SetTelemetry, telemetry_hz), Ack)


def test_the_pen_sends_telemetry_as_datagrams() -> None:
    host = VirtualHost(seed=11)
    host.start(telemetry_hz=1000)
    host.recording = True
    for _ in range(200):  # 0.1 s
        host.step()
    frames = [f for chunk in host.pen_frames for f in parse(chunk)]
    samples = [f for f in frames if f.payload[:1] == bytes([Telemetry.ID])]
    assert len(samples) >= 95
    assert all(f.flags & Flag.DATAGRAM and not f.flags & Flag.DATA for f in samples)
    stats = host.pen.firmware.link.statistics()
    assert stats.retransmits == 0 and stats.datagrams_sent >= 95
    assert host.link.statistics().datagrams_received == stats.datagrams_sent
    assert host.pen.firmware.telemetry_skipped == 0


def test_replies_never_wait_behind_telemetry_on_a_faulty_line() -> None:
    """10 % of frames lost and 5 % duplicated, each way, inside the simulator, while the pen
    streams 1 kHz telemetry: 2000 GetStatus, 16 in flight, each answered within REPLY_BOUND_S.
    Samples lost on the line stay lost (datagrams); those that arrive come once, in order."""
    host = VirtualHost(seed=12)
    host.start(telemetry_hz=1000)
    for param, value in ((SimParam.LINK_DROP_PPM, 100_000), (SimParam.LINK_DUPLICATE_PPM, 50_000)):
        assert isinstance(host.request(SimSet, param, value), Ack)
    first = host._cmd + 1
    sent_at: dict[int, float] = {}
    commands = 2000
    for _ in range(200_000):
        waiting = [c for c in sent_at if c not in host.replies]
        while len(waiting) < 16 and len(sent_at) < commands:
            host._cmd += 1
            host.send(GetStatus(host._cmd))
            sent_at[host._cmd] = host.now
            waiting.append(host._cmd)
        if len(host.replies) >= commands:
            break
        host.step()
    assert sorted(host.replies) == list(range(first, first + commands))
    latencies = {c: host.replies[c][0] - sent_at[c] for c in sent_at}
    worst = max(latencies.values())
    assert worst <= REPLY_BOUND_S, f"a reply took {worst:.3f} s"
    assert all(isinstance(host.replies[c][1], Status) for c in sent_at)
    assert host.telemetry == sorted(set(host.telemetry)), "a sample came twice or late"
    pen_link = host.pen.firmware.link.statistics()
    assert pen_link.datagrams_sent > 0 and pen_link.fast_retransmits > 0
