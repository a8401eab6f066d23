"""A host-side Link talking to a SimulatedPen through bytes only, in virtual time.

Imported by the other simulator tests (``from test_firmware_harness import Host``); the tests
at the bottom check the harness itself.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any, TypeVar

from micropen.protocol.events import LinkEvent, MessageReceived, PeerReset
from micropen.protocol.link import Link, Role
from micropen.protocol.messages import (
    PROTOCOL_VERSION,
    Ack,
    EmergencyStop,
    ErrorCode,
    Event,
    EventCode,
    FaultReport,
    GetStatus,
    Heartbeat,
    Hello,
    Identity,
    Nak,
    OpenSession,
    PenState,
    Run,
    RunMode,
    RunReport,
    SetDepth,
    SetRate,
    Status,
    Telemetry,
)
from micropen.protocol.schema import Kind, Message, schema_hash
from micropen.sim.clock import VirtualClock
from micropen.sim.pen import SimConfig, SimulatedPen

M = TypeVar("M", bound=Message)
STEP_S = 0.001
HEARTBEAT_S = 0.1


class Raw:
    """A payload the host link frames as is: lets a test put invalid content in a valid frame."""

    KIND = Kind.COMMAND

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def encode(self) -> bytes:
        return self.payload


class Host:
    """The smallest honest host: a Link, a virtual clock and a pump, no safety checks of its
    own — so every refusal a test sees comes from the simulated firmware."""

    def __init__(
        self,
        pen: SimulatedPen | None = None,
        *,
        clock: VirtualClock | None = None,
        session: int | None = 0x5E55_1000,
        link_seed: int = 7,
        paired: bool = True,
        **config: Any,
    ) -> None:
        self.clock = clock if clock is not None else VirtualClock()
        self.pen = pen if pen is not None else SimulatedPen(SimConfig(**config), now=0.0)
        # paired: the bench pairs this host with the pen (a local act) and authenticates every
        # link epoch; unpaired, it is any process that opened the port
        self.host_id: int | None = None
        lookup = None
        if paired:
            self.host_id = 0x7E57_0000 + link_seed
            key = hashlib.sha256(f"harness-{link_seed}".encode()).digest()
            pen_id = self.pen.add_pairing(self.host_id, key, "test host", self.clock.now())
            lookup = {pen_id: (pen_id, key)}.get
        self.link = Link(Role.HOST, rng=random.Random(link_seed), pairing=lookup)
        self.session = session  # named after each Hello (None: no session, no reply cache)
        self.resumed: bool | None = None
        self.inbox: list[Message] = []
        self.link_events: list[LinkEvent] = []
        self.replies: dict[int, Message] = {}
        self.heartbeats = True
        self.silent = False  # when True the host writes nothing at all
        self._cmd_id = 0
        self._reports_taken = 0
        self._hb = 0
        self._next_hb = 0.0

    @property
    def now(self) -> float:
        return self.clock.now()

    # ------------------------------------------------------------------ time and bytes
    def pump(self, dt: float = STEP_S) -> None:
        self.clock.advance(dt)
        now = self.clock.now()
        self.link.receive_data(self.pen.data_to_send(now), now)
        for event in self.link.events():
            self.link_events.append(event)
            if isinstance(event, MessageReceived):
                message = event.message
                self.inbox.append(message)
                if message.KIND is Kind.REPLY:
                    self.replies[message[0]] = message
        if self.silent:
            self.link.data_to_send(now)  # keep the link's timers honest, write nothing
            return
        if self.heartbeats and self.link.connected and now >= self._next_hb:
            self._hb += 1
            self.link.send(Heartbeat(self._hb), now)
            self._next_hb = now + HEARTBEAT_S
        self.pen.receive_data(self.link.data_to_send(now), now)

    def run_for(self, seconds: float, step: float = 0.01) -> None:
        end = self.clock.now() + seconds
        while self.clock.now() + step <= end + 1e-12:
            self.pump(step)
        if end > self.clock.now():
            self.pump(end - self.clock.now())

    def wait_for(self, predicate: Callable[[], bool], timeout: float, step: float = STEP_S) -> None:
        end = self.clock.now() + timeout
        while not predicate():
            assert self.clock.now() < end, f"condition not met within {timeout} s"
            self.pump(step)

    # ------------------------------------------------------------------ commands
    def next_id(self) -> int:
        self._cmd_id += 1
        return self._cmd_id

    def connect(self) -> None:
        self.link.connect(self.clock.now(), self.host_id)
        self.wait_for(lambda: self.link.connected, 1.0)

    def send(self, message: Message | Raw, *, urgent: bool = False) -> None:
        self.link.send(message, self.clock.now(), urgent=urgent)  # type: ignore[arg-type]

    def request(self, message: Message | Raw, timeout: float = 1.0) -> Message:
        cmd_id = int.from_bytes(message.encode()[1:5], "little")
        self.replies.pop(cmd_id, None)
        self.send(message, urgent=isinstance(message, EmergencyStop))
        self.wait_for(lambda: cmd_id in self.replies, timeout)
        return self.replies.pop(cmd_id)

    def cmd(self, cls: type[Message], *args: Any) -> Message:
        return self.request(cls(self.next_id(), *args))

    def ack(self, cls: type[Message], *args: Any) -> Ack:
        reply = self.cmd(cls, *args)
        assert isinstance(reply, Ack), f"{cls.__name__}{args} refused: {reply}"
        return reply

    def nak(self, cls: type[Message], *args: Any) -> Nak:
        reply = self.cmd(cls, *args)
        assert isinstance(reply, Nak), f"{cls.__name__}{args} was accepted: {reply}"
        return reply

    def hello(self) -> Identity:
        """Hello, then OpenSession when this host has a session."""
        reply = self.cmd(Hello, PROTOCOL_VERSION, schema_hash())
        assert isinstance(reply, Identity), reply
        if self.session is not None:
            self.resumed = bool(self.ack(OpenSession, self.session).value)
        return reply

    def status(self) -> Status:
        reply = self.cmd(GetStatus)
        assert isinstance(reply, Status), reply
        return reply

    def ready(self, depth_um: int = 1000, rate_sps: int = 110) -> Identity:
        """Connected, handshaken, depth and rate set."""
        self.connect()
        identity = self.hello()
        self.ack(SetDepth, depth_um, int(depth_um > 1500))
        self.ack(SetRate, rate_sps)
        return identity

    def start(self, area: int, mode: RunMode, strokes: int = 0, duration_ms: int = 0) -> int:
        return self.ack(Run, area, mode, strokes, duration_ms).value

    # ------------------------------------------------------------------ what arrived
    def of(self, cls: type[M]) -> list[M]:
        return [m for m in self.inbox if isinstance(m, cls)]

    def events(self, code: EventCode | None = None) -> list[Event]:
        return [e for e in self.of(Event) if code is None or e.code is code]

    def faults(self) -> list[FaultReport]:
        return self.of(FaultReport)

    def reports(self) -> list[RunReport]:
        return self.of(RunReport)

    def telemetry(self) -> list[Telemetry]:
        return self.of(Telemetry)

    def wait_report(self, timeout: float = 5.0, step: float = 0.01) -> RunReport:
        """The next run report this test has not looked at yet (waiting for it if need be)."""
        self.wait_for(lambda: len(self.reports()) > self._reports_taken, timeout, step)
        self._reports_taken += 1
        return self.reports()[self._reports_taken - 1]

    def peer_reset(self) -> bool:
        return any(isinstance(e, PeerReset) for e in self.link_events)


# ---------------------------------------------------------------------- the harness itself
def test_harness_connects_and_handshakes() -> None:
    host = Host(seed=1)
    identity = host.ready()
    assert identity.serial == "SIM-000001"
    assert host.pen.state is PenState.IDLE


def test_harness_sees_pen_refusals_not_its_own() -> None:
    host = Host(seed=1)
    host.ready()
    reply = host.cmd(SetDepth, 100, 0)
    assert isinstance(reply, Nak) and reply.error is ErrorCode.DEPTH_OUT_OF_RANGE
