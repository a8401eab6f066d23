"""Service mode, the firmware's own control: the bench fixture (the whole 0.20–2.50 mm envelope,
every speed level 1–6) only in service mode, never a treatment area while in it; service mode
ends with its host session, at the watchdog, at a fault and at a reboot.

Numbers from the spec, stated literally: 2.50 mm is the pen's maximum depth, 1.50 mm the
soft cap, 150 strokes/s speed level 6; area 9 is the bench fixture, 4 the cheeks.
"""

from __future__ import annotations

from test_firmware_harness import Host

from micropen.protocol.messages import (
    EmergencyStop,
    ErrorCode,
    EventCode,
    FaultCode,
    PenState,
    Run,
    RunMode,
    RunOutcome,
    ServiceExit,
    SetRate,
    SetServiceMode,
)

BENCH_FIXTURE = 9
CHEEKS = 4


def _fixture_ready(host: Host) -> None:
    host.ready(depth_um=2500, rate_sps=150)  # 2.50 mm with the override, speed level 6
    host.ack(SetServiceMode, 1)


def test_the_fixture_is_refused_outside_service_mode() -> None:
    host = Host(seed=1)
    host.ready(depth_um=1000, rate_sps=110)
    reply = host.nak(Run, BENCH_FIXTURE, RunMode.STROKES, 10, 0)
    assert (reply.error, reply.value, reply.limit) == (ErrorCode.SERVICE_MODE_REQUIRED, 9, 0)
    assert host.pen.firmware.state is PenState.IDLE
    assert host.status().service_mode == 0


def test_in_service_mode_the_fixture_reaches_the_whole_envelope() -> None:
    host = Host(seed=1)
    _fixture_ready(host)
    assert host.status().service_mode == 1
    assert host.events(EventCode.SERVICE_MODE_ENTERED)
    host.start(BENCH_FIXTURE, RunMode.STROKES, strokes=20)
    assert host.wait_report().outcome is RunOutcome.COMPLETED


def test_in_service_mode_a_treatment_area_is_refused() -> None:
    host = Host(seed=1)
    host.ready(depth_um=1000, rate_sps=110)
    host.ack(SetServiceMode, 1)
    reply = host.nak(Run, CHEEKS, RunMode.STROKES, 10, 0)
    assert (reply.error, reply.value) == (ErrorCode.SERVICE_MODE_ACTIVE, 4)
    host.ack(SetServiceMode, 0)
    assert host.status().service_mode == 0
    host.start(CHEEKS, RunMode.STROKES, strokes=10)  # out of service mode: treatment again


def test_service_mode_is_entered_only_at_rest() -> None:
    host = Host(seed=1)
    host.ready(depth_um=1000, rate_sps=110)
    host.start(CHEEKS, RunMode.DURATION, duration_ms=5_000)
    reply = host.nak(SetServiceMode, 1)
    assert (reply.error, reply.value) == (ErrorCode.BAD_STATE, int(PenState.RUNNING))
    assert host.status().service_mode == 0


def test_leaving_stops_a_fixture_run_at_once() -> None:
    host = Host(seed=1)
    _fixture_ready(host)
    host.start(BENCH_FIXTURE, RunMode.DURATION, duration_ms=60_000)
    host.run_for(0.2)
    host.ack(SetServiceMode, 0)
    assert host.wait_report().outcome is RunOutcome.STOPPED
    (left,) = host.events(EventCode.SERVICE_MODE_LEFT)
    assert left.value == ServiceExit.ASKED


def test_another_host_session_ends_service_mode_and_its_fixture_run() -> None:
    first = Host(seed=1)
    _fixture_ready(first)
    first.start(BENCH_FIXTURE, RunMode.DURATION, duration_ms=60_000)
    first.run_for(0.2)
    second = Host(first.pen, clock=first.clock, link_seed=8, session=0x5E55_2000)
    second.connect()
    second.hello()  # a new session takes the pen
    firmware = first.pen.firmware
    assert firmware.service.held is False
    assert firmware.run is not None and firmware.run.outcome is RunOutcome.STOPPED
    assert second.status().service_mode == 0
    second.wait_for(lambda: firmware.state is PenState.IDLE, 1.0)  # needles home
    assert second.nak(Run, BENCH_FIXTURE, RunMode.STROKES, 10, 0).error is (
        ErrorCode.SERVICE_MODE_REQUIRED
    )


def test_the_same_session_reconnecting_keeps_service_mode() -> None:
    host = Host(seed=1)
    _fixture_ready(host)
    host.connect()  # a new link epoch (cable pulled and back), same host session
    host.hello()
    assert host.resumed is True
    assert host.status().service_mode == 1


def test_the_watchdog_ends_service_mode() -> None:
    host = Host(seed=1)
    _fixture_ready(host)
    host.start(BENCH_FIXTURE, RunMode.DURATION, duration_ms=60_000)
    host.heartbeats = False
    host.silent = True
    host.run_for(1.0)  # default watchdog 500 ms
    firmware = host.pen.firmware
    assert firmware.state is PenState.FAULT and firmware.fault is FaultCode.WATCHDOG
    assert firmware.service.held is False


def test_a_fault_ends_service_mode() -> None:
    host = Host(seed=1)
    _fixture_ready(host)
    host.ack(EmergencyStop)
    status = host.status()
    assert status.state is PenState.FAULT
    assert status.service_mode == 0
    (left,) = host.events(EventCode.SERVICE_MODE_LEFT)
    assert left.value == ServiceExit.FAULT


def test_a_reboot_leaves_service_mode() -> None:
    host = Host(seed=1)
    _fixture_ready(host)
    host.pen.power_cycle(host.now)
    host.connect()
    host.hello()
    host.ack(SetRate, 150)
    assert host.status().service_mode == 0
    assert host.nak(Run, BENCH_FIXTURE, RunMode.STROKES, 10, 0).error is (
        ErrorCode.SERVICE_MODE_REQUIRED
    )


def test_an_unpaired_host_cannot_enter_service_mode() -> None:
    host = Host(seed=1, paired=False)
    host.connect()
    host.hello()
    assert host.nak(SetServiceMode, 1).error is ErrorCode.NOT_AUTHORIZED


def test_a_host_that_names_no_session_does_not_inherit_service_mode() -> None:
    """Found by the mutation run: the firmware once asked the last session ever named, so a
    second paired host that sent Hello without OpenSession was in the first one's service mode."""
    first = Host(seed=1)
    _fixture_ready(first)
    second = Host(first.pen, clock=first.clock, link_seed=8, session=None)
    second.connect()
    second.hello()
    assert second.status().service_mode == 0
    second.ack(SetRate, 150)
    assert second.nak(Run, BENCH_FIXTURE, RunMode.STROKES, 10, 0).error is (
        ErrorCode.SERVICE_MODE_REQUIRED
    )


def test_a_host_that_takes_service_mode_over_ends_the_holders_with_an_event() -> None:
    """Found by the protocol document's review: a paired host with no session could enter
    service mode while another session held it, and the holder was replaced silently."""
    first = Host(seed=1)
    _fixture_ready(first)
    second = Host(first.pen, clock=first.clock, link_seed=8, session=None)
    second.connect()
    second.hello()
    second.ack(SetServiceMode, 1)
    # the records wait for a session (the second host has none): the holder's exit is among them
    held = first.pen.firmware._held
    left = [m.value for m in held if getattr(m, "code", None) is EventCode.SERVICE_MODE_LEFT]
    assert left == [ServiceExit.SESSION_ENDED]
