"""The simulated firmware answers as docs/protocol.md says ("Order of checks", "Answers").

The tables in protocol/answers.py are what a firmware team implements from; these tests hold
the simulator to them, so the document cannot describe a pen that does not exist. Numbers are
the spec's, stated literally.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from test_firmware_harness import Host

from micropen.protocol import answers
from micropen.protocol.messages import (
    Ack,
    CalCommit,
    CalWrite,
    ErrorCode,
    EventCode,
    Nak,
    Run,
    RunMode,
    SetDepth,
    SetRate,
    SimMountCartridge,
    SimParam,
    SimSet,
    calibration_crc,
)
from micropen.protocol.schema import REGISTRY

E = ErrorCode
TODAY = 20_000  # days since 1970-01-01, pinned
FOREHEAD, BENCH_FIXTURE = 2, 9


def test_every_nak_code_and_event_is_explained() -> None:
    assert set(answers.NAK_MEANING) == set(ErrorCode)
    assert set(answers.EVENT_VALUE) == set(EventCode)
    for cls in answers.ACK_VALUE:
        assert cls.REPLY is Ack, f"{cls.__name__} is not answered by Ack"
    for cls in answers.COMMAND_CHECKS:
        assert cls in REGISTRY.values()


class _Walk:
    """A Run asked again and again while its problems are fixed one at a time."""

    def __init__(self) -> None:
        self.host = Host(seed=3, today_day=TODAY)
        self.area, self.strokes = BENCH_FIXTURE, 0
        self.answers: list[Nak] = []

    def ask(self) -> Ack | Nak:
        reply = self.host.cmd(Run, self.area, RunMode.STROKES, self.strokes, 0)
        assert isinstance(reply, Ack | Nak), reply
        if isinstance(reply, Nak):
            self.answers.append(reply)
        return reply

    def mount(self, cartridge_id: int, lot: str, made: int, expiry: int) -> None:
        self.host.ack(SimMountCartridge, cartridge_id, lot, made, expiry)


def _staged_walk() -> tuple[_Walk, dict[ErrorCode, Callable[[], None]]]:
    """Every problem a Run can have at once, and how to fix each."""
    walk = _Walk()
    host = walk.host
    host.connect()
    host.hello()
    host.ack(SetDepth, 0, 0)  # no depth set
    host.ack(SetRate, 150)  # faster than the forehead allows
    host.ack(SimSet, SimParam.CALIBRATION_CORRUPT, 1)
    walk.mount(0, "", 0, 0)  # no cartridge
    host.ack(SimSet, SimParam.BATTERY_MV, 3300)
    host.ack(SimSet, SimParam.AMBIENT_DC, 425)  # 42.5 °C: above the 41 °C start limit
    host.run_for(400.0, step=0.1)  # the handpiece warms (time constant 120 s)

    def recalibrate() -> None:
        record = (1, 0, 0, 0, 1_767_225_600, 1_000)
        host.ack(CalWrite, *record, calibration_crc(*record))
        host.ack(CalCommit, calibration_crc(*record))

    def cool() -> None:
        host.ack(SimSet, SimParam.AMBIENT_DC, 200)
        host.run_for(30.0, step=0.1)

    fixes: dict[ErrorCode, Callable[[], None]] = {
        E.SERVICE_MODE_REQUIRED: lambda: setattr(walk, "area", FOREHEAD),
        E.STROKES_OUT_OF_RANGE: lambda: setattr(walk, "strokes", 10),
        E.UNCALIBRATED: recalibrate,
        E.DEPTH_OUT_OF_RANGE: lambda: host.ack(SetDepth, 1000, 0) and None,
        E.DEPTH_ABOVE_AREA_MAX: lambda: host.ack(SetDepth, 500, 0) and None,
        E.RATE_NOT_ALLOWED_FOR_AREA: lambda: host.ack(SetRate, 90) and None,
        E.NO_CARTRIDGE: lambda: walk.mount(0xC0FFEE, "", TODAY - 10, TODAY - 20),
        E.CARTRIDGE_UNKNOWN: lambda: walk.mount(0xC0FFEF, "LOT-1", TODAY - 800, TODAY - 1),
        E.CARTRIDGE_EXPIRED: lambda: walk.mount(0xC0FFF0, "LOT-1", TODAY - 10, TODAY + 300),
        E.BATTERY_LOW: lambda: host.ack(SimSet, SimParam.BATTERY_MV, 3700) and None,
        E.OVER_TEMPERATURE: cool,
    }
    return walk, fixes


@pytest.fixture(scope="module")
def walk_answers() -> list[Nak]:
    """The staged Run asked again and again, one problem fixed after each refusal (bounded:
    one more ask than there are problems); the refusals in the order they came."""
    walk, fixes = _staged_walk()
    for _ in range(len(fixes) + 1):
        reply = walk.ask()
        if isinstance(reply, Ack):
            return walk.answers
        assert reply.error in fixes, f"unexpected refusal {reply}"
        fixes.pop(reply.error)()
    raise AssertionError(f"still refused after every fix: {walk.answers[-1]}")


def test_a_run_with_every_problem_is_refused_in_the_documented_order(
    walk_answers: list[Nak],
) -> None:
    seen = [nak.error for nak in walk_answers]
    documented = [check.error for check in answers.COMMAND_CHECKS[Run]]
    positions = [documented.index(code) for code in seen]
    assert positions == sorted(positions), f"refused in the order {seen}"
    assert len(seen) == 11, seen  # every staged problem was reported, one at a time


def test_the_walks_refusals_carry_the_documented_value_and_limit(
    walk_answers: list[Nak],
) -> None:
    by_code = {nak.error: (nak.value, nak.limit) for nak in walk_answers}
    assert by_code[E.SERVICE_MODE_REQUIRED] == (9, 0)  # the area
    assert by_code[E.STROKES_OUT_OF_RANGE] == (0, 1)  # the strokes, the bound broken
    assert by_code[E.UNCALIBRATED] == (0, 0)
    assert by_code[E.DEPTH_OUT_OF_RANGE] == (0, 200)  # no depth set; the minimum
    assert by_code[E.DEPTH_ABOVE_AREA_MAX] == (1000, 750)  # the forehead's maximum
    assert by_code[E.RATE_NOT_ALLOWED_FOR_AREA] == (150, 90)  # the forehead's fastest level
    assert by_code[E.NO_CARTRIDGE] == (0, 0)
    assert by_code[E.CARTRIDGE_UNKNOWN] == (0xC0FFEE, 0)  # no lot: the cartridge id
    assert by_code[E.CARTRIDGE_EXPIRED][0] == TODAY
    value, limit = by_code[E.BATTERY_LOW]
    assert value < 3400 and limit == 3400
    value, limit = by_code[E.OVER_TEMPERATURE]
    assert 410 < value < 430 and limit == 410


@pytest.mark.parametrize(
    ("cls", "args"),
    [(SetDepth, (500, 0)), (SetRate, (90,)), (CalWrite, (1, 0, 0, 0, 0, 9))],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_commands_not_in_the_ack_table_answer_0(cls: type, args: tuple[int, ...]) -> None:
    assert cls not in answers.ACK_VALUE
    host = Host(seed=4)
    host.connect()
    host.hello()
    if cls is CalWrite:
        args = (*args, calibration_crc(*args))
    assert host.ack(cls, *args).value == 0


def test_a_flood_of_refused_commands_cannot_crowd_out_a_run_report() -> None:
    """Held records (docs/protocol.md, "Records"): an unpaired party that takes the link
    during a run and sends thousands of refused commands fills the pen's held records with
    SECURITY_DENIED events; the run's report and the watchdog's fault report must still reach
    the paired host when it comes back (found by the document review: they were dropped)."""
    host = Host(seed=1)
    host.ready()
    run_id = host.start(4, RunMode.DURATION, 0, 60_000)
    host.run_for(0.1)
    intruder = Host(host.pen, clock=host.clock, paired=False, link_seed=9)
    host.silent = True
    intruder.connect()
    for n in range(4_200):
        intruder.send(SetDepth(n + 1, 500, 0))
        if n % 10 == 0:
            intruder.pump(0.001)
    intruder.run_for(2.0)  # the paired host is silent: the watchdog (500 ms) stops the run
    host.silent = False
    host.connect()
    host.hello()
    host.run_for(3.0, 0.005)
    assert [(r.run_id, r.outcome.name) for r in host.reports()] == [(run_id, "WATCHDOG")]
    assert [f.fault.name for f in host.faults()] == ["WATCHDOG"]
    denied = host.events(EventCode.SECURITY_DENIED)
    assert 0 < len(denied) <= 64  # the security events held are bounded; the rest counted


def test_telemetry_waits_for_the_handshake_and_the_session_of_each_epoch() -> None:
    """Found by the document review: after a reconnect, samples came before Hello — before
    the schema check that says whether the host can read them at all."""
    from micropen.protocol.messages import SetTelemetry, Telemetry

    host = Host(seed=6)
    host.ready()
    host.ack(SetTelemetry, 100)
    host.run_for(0.2)
    assert host.of(Telemetry), "telemetry flows in a session"
    host.connect()  # a new epoch, no Hello yet
    host.inbox.clear()
    host.run_for(0.3)
    assert not host.of(Telemetry), "samples before Hello"
    host.hello()
    host.run_for(0.2)
    assert host.of(Telemetry), "telemetry resumes once the session is named again"
