"""Hazard 9 across host sessions: the pen's reply cache never takes a different command for a
duplicate, and never stands in for a Stop or an EmergencyStop.

Each reproduction below was answered from the old cache (keyed on ``cmd_id`` alone): a second
host numbering its commands from 1 got the first host's replies, and its Run, Stop and
EmergencyStop were acknowledged without being executed.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from test_firmware_harness import Host

from micropen.protocol import limits as L
from micropen.protocol.messages import (
    Ack,
    ClearFault,
    EmergencyStop,
    ErrorCode,
    EventCode,
    FaultCode,
    GetStatus,
    Nak,
    PenState,
    Run,
    RunMode,
    SetDepth,
    SetRate,
    Status,
    Stop,
)
from micropen.protocol.schema import Message
from micropen.sim.clock import VirtualClock
from micropen.sim.pen import SimConfig, SimulatedPen

CHEEKS = int(L.Area.CHEEKS)


def _pen_and_hosts(n: int = 2, seed: int = 1) -> tuple[SimulatedPen, list[Host]]:
    clock = VirtualClock()
    pen = SimulatedPen(SimConfig(seed=seed), now=0.0)
    hosts = [Host(pen, clock=clock, session=0xA000 + i, link_seed=i + 1) for i in range(n)]
    return pen, hosts


def _run_id(pen: SimulatedPen) -> int:
    return 0 if pen.run is None else pen.run.run_id


# ------------------------------------------------------------------ reproductions
def test_a_second_host_numbering_from_1_gets_its_run_executed() -> None:
    pen, (a, b) = _pen_and_hosts()
    a.ready()
    a.start(CHEEKS, RunMode.STROKES, strokes=40)
    a.wait_report()
    a.run_for(0.1)  # needles home
    status_id = a.next_id()
    assert isinstance(a.request(GetStatus(status_id)), Status)
    b.connect()
    b.hello()
    reply = b.request(Run(status_id, CHEEKS, RunMode.STROKES, 40, 0))  # the same number
    assert isinstance(reply, Ack) and reply.value == 2, reply
    assert _run_id(pen) == 2


def _second_host_over_a_run() -> tuple[SimulatedPen, Host, int]:
    """Host A runs for 10 s; host B takes the link. Returns A's Run id, which B reuses."""
    pen, (a, b) = _pen_and_hosts()
    a.ready()
    run_cmd = a.next_id()
    assert isinstance(a.request(Run(run_cmd, CHEEKS, RunMode.DURATION, 0, 10_000)), Ack)
    a.run_for(0.2)
    b.connect()
    b.hello()
    assert pen.state is PenState.RUNNING
    return pen, b, run_cmd


def test_a_second_hosts_stop_with_a_colliding_id_stops_the_run() -> None:
    pen, b, run_cmd = _second_host_over_a_run()
    assert isinstance(b.request(Stop(run_cmd)), Ack)
    assert pen.state is not PenState.RUNNING
    b.run_for(0.1)
    assert pen.state is PenState.IDLE


def test_a_second_hosts_emergency_stop_with_a_colliding_id_latches() -> None:
    pen, b, run_cmd = _second_host_over_a_run()
    assert isinstance(b.request(EmergencyStop(run_cmd)), Ack)
    assert pen.state is PenState.FAULT and pen.fault is FaultCode.EMERGENCY_STOP


def test_a_stop_resent_by_the_same_session_is_executed_again() -> None:
    pen, (a,) = _pen_and_hosts(1)
    a.ready()
    a.start(CHEEKS, RunMode.DURATION, duration_ms=10_000)
    a.run_for(0.1)
    stop = Stop(a.next_id())
    assert a.request(stop) == Ack(stop.cmd_id, 1)
    a.run_for(0.2)
    a.start(CHEEKS, RunMode.DURATION, duration_ms=10_000)
    a.run_for(0.1)
    assert pen.state is PenState.RUNNING
    assert a.request(stop) == Ack(stop.cmd_id, 2)  # not the cached Ack(…, 1)
    assert pen.state is not PenState.RUNNING


def test_a_reused_id_for_another_command_gets_that_commands_reply() -> None:
    _, (a,) = _pen_and_hosts(1)
    a.ready()
    reused = a.next_id()
    assert isinstance(a.request(SetDepth(reused, 600, 0)), Ack)
    reply = a.request(GetStatus(reused))
    assert isinstance(reply, Status) and reply.depth_set_um == 600


def test_no_cached_reply_before_hello_on_a_new_epoch() -> None:
    _, (a,) = _pen_and_hosts(1)
    a.ready()
    depth = SetDepth(a.next_id(), 600, 0)
    assert isinstance(a.request(depth), Ack)
    a.connect()  # a new link epoch, no Hello yet
    reply = a.request(depth)
    assert isinstance(reply, Nak) and reply.error is ErrorCode.NOT_CONNECTED


def test_open_session_reports_whether_the_pens_cache_was_kept() -> None:
    pen, hosts = _pen_and_hosts(6)
    first = hosts[0]
    first.ready()
    first.connect()
    first.hello()
    assert first.resumed is True  # same boot, same session
    for other in hosts[1:5]:  # four more sessions: the pen keeps four
        other.connect()
        other.hello()
        assert other.resumed is False
    first.connect()
    first.hello()
    assert first.resumed is False  # evicted: its unanswered commands must not be re-sent
    pen.power_cycle(first.now)
    first.connect()
    first.hello()
    assert first.resumed is False  # a reboot forgets every session


def test_a_resumed_session_is_answered_from_its_cache_not_executed_twice() -> None:
    pen, (a, b) = _pen_and_hosts()
    a.ready()
    run = Run(a.next_id(), CHEEKS, RunMode.STROKES, 30, 0)
    first = a.request(run)
    a.wait_report()
    b.connect()  # another host comes and goes
    b.hello()
    b.cmd(GetStatus)
    a.connect()
    a.hello()
    assert a.resumed is True
    assert a.request(run) == first
    assert _run_id(pen) == 1


# ------------------------------------------------------------------ state machine
_KINDS = ("status", "depth", "rate", "run", "stop", "estop", "clear")


class SessionsSharingOnePen(RuleBasedStateMachine):
    """Three host sessions take turns on one pen over new link epochs. Each numbers its
    commands from 1, so ids collide across sessions all the time; hosts re-send earlier
    commands, reuse ids for other commands, and the pen reboots.

    Model: the pen's reply cache holds, per boot, the four most recently opened sessions.
    A command is answered from the cache exactly when the same session re-sends the same
    command under the same id while its cache is held; everything else is executed, and
    Stop and EmergencyStop always are."""

    @initialize()
    def setup(self) -> None:
        self.pen, self.hosts = _pen_and_hosts(3, seed=5)
        self.current: Host | None = None
        self.lru: list[int] = []  # sessions the pen holds, oldest first
        self.answered: dict[int, dict[int, tuple[Message, Message]]] = {}
        self.runs = 0  # Runs the pen must have started this boot

    # -------------------------------------------------------------- the model
    def _open(self, session: int) -> bool:
        held = session in self.lru
        if held:
            self.lru.remove(session)
        else:
            self.answered[session] = {}
        self.lru.append(session)
        while len(self.lru) > 4:
            self.answered.pop(self.lru.pop(0), None)
        return held

    def _send(self, host: Host, command: Message) -> Message:
        assert host.session is not None
        before = _run_id(self.pen)
        cache = self.answered[host.session]
        previous = cache.get(command[0])
        duplicate = (
            previous is not None
            and previous[0] == command
            and not isinstance(command, Stop | EmergencyStop)
        )
        reply = host.request(command)
        assert reply[0] == command[0]
        assert isinstance(reply, type(command).REPLY | Nak), (command, reply)
        if duplicate:
            assert previous is not None
            assert reply == previous[1], (command, reply, previous)
            assert _run_id(self.pen) == before, "a duplicate Run was executed again"
            return reply
        if isinstance(command, Run) and isinstance(reply, Ack):
            self.runs += 1
            assert reply.value == self.runs
        if isinstance(command, Stop):
            assert self.pen.state is not PenState.RUNNING
        if isinstance(command, EmergencyStop):
            assert self.pen.state is PenState.FAULT
            assert self.pen.fault is FaultCode.EMERGENCY_STOP
        if not isinstance(command, Stop | EmergencyStop):
            cache[command[0]] = (command, reply)
        return reply

    def _build(self, kind: str, cmd_id: int) -> Message:
        builders = {
            "status": lambda: GetStatus(cmd_id),
            "depth": lambda: SetDepth(cmd_id, 800, 0),
            "rate": lambda: SetRate(cmd_id, 110),
            "run": lambda: Run(cmd_id, CHEEKS, RunMode.STROKES, 20, 0),
            "stop": lambda: Stop(cmd_id),
            "estop": lambda: EmergencyStop(cmd_id),
            "clear": lambda: ClearFault(cmd_id),
        }
        return builders[kind]()

    # -------------------------------------------------------------- rules
    @rule(i=st.integers(0, 2))
    def attach(self, i: int) -> None:
        host = self.hosts[i]
        assert host.session is not None
        host.connect()
        host.hello()
        assert host.resumed is self._open(host.session)
        self.current = host

    @precondition(lambda self: self.current is not None)
    @rule(kind=st.sampled_from(_KINDS))
    def new_command(self, kind: str) -> None:
        assert self.current is not None
        self._send(self.current, self._build(kind, self.current.next_id()))

    @precondition(lambda self: self.current is not None)
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        host = self.current
        assert host is not None and host.session is not None
        entries = sorted(self.answered[host.session].items())
        if entries:
            _, (command, _) = data.draw(st.sampled_from(entries))
            self._send(host, command)

    @precondition(lambda self: self.current is not None)
    @rule(data=st.data(), kind=st.sampled_from(_KINDS))
    def reuse_id(self, data: st.DataObject, kind: str) -> None:
        host = self.current
        assert host is not None and host.session is not None
        ids = sorted(self.answered[host.session]) or [1]
        self._send(host, self._build(kind, data.draw(st.sampled_from(ids))))

    @precondition(lambda self: self.current is not None)
    @rule(seconds=st.sampled_from((0.02, 0.1, 0.3)))
    def let_time_pass(self, seconds: float) -> None:
        assert self.current is not None
        self.current.run_for(seconds)

    @rule()
    def reboot(self) -> None:
        self.pen.power_cycle(self.hosts[0].now)
        self.lru.clear()
        self.answered.clear()
        self.runs = 0
        self.current = None

    @invariant()
    def run_ids_match_the_runs_executed(self) -> None:
        if hasattr(self, "pen"):
            assert _run_id(self.pen) == self.runs


TestSessionsSharingOnePen = SessionsSharingOnePen.TestCase
TestSessionsSharingOnePen.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None
)


ENDING = {EventCode.WATCHDOG_EXPIRED, EventCode.RETRACTED}


def test_held_events_keep_the_pen_time_they_happened_at() -> None:
    """Events held for a host session (or taken back from a host that never acknowledged
    them) are handed over with the pen time they happened at, not the time they were handed
    over: that time is what a treatment log recognises a re-sent event by."""
    _, (first, second) = _pen_and_hosts()
    first.ready(depth_um=500, rate_sps=90)
    first.start(int(L.Area.FOREHEAD), RunMode.DURATION, duration_ms=20_000)
    first.run_for(0.3)
    first.silent = True  # the first host dies: the watchdog stops the run
    first.run_for(1.0)
    happened = {e.code: e.t_ms for e in first.events() if e.code in ENDING}
    assert set(happened) == ENDING  # seen by the dead host, never acknowledged by it
    second.run_for(1.5)  # later, another host session opens
    second.connect()
    second.hello()
    second.run_for(0.1)
    handed = {e.code: e.t_ms for e in second.events() if e.code in happened}
    assert handed == happened
    assert all(t_ms < 1500 for t_ms in handed.values())
