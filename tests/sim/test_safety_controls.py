"""One test per safety control of shared/pen-spec.md, enforced by the simulated firmware alone.

The host in these tests has no checks of its own (test_firmware_harness.Host), so each test
fails if the firmware's control is removed.
"""

from __future__ import annotations

import pytest
from test_firmware_harness import Host

from micropen.protocol import limits as L
from micropen.protocol.messages import (
    ClearFault,
    EmergencyStop,
    ErrorCode,
    EventCode,
    FaultCode,
    GetCartridge,
    Nak,
    PenState,
    Run,
    RunMode,
    RunOutcome,
    SetDepth,
    SetRate,
    SetServiceMode,
    SetWatchdog,
    SimParam,
    SimSet,
    Stop,
)

A = L.Area
_new = tuple.__new__


def running(seed: int = 1, depth: int = 1000, rate: int = 110, area: A = A.CHEEKS) -> Host:
    host = Host(seed=seed)
    host.ready(depth_um=depth, rate_sps=rate)
    host.start(int(area), RunMode.DURATION, duration_ms=L.RUN_DURATION_MAX_MS)
    host.run_for(0.2)
    assert host.pen.state is PenState.RUNNING
    return host


def assert_stopped_and_home(host: Host, within_s: float = 0.05) -> None:
    """Motor braked at once; needles home within the retract time."""
    assert host.pen.physics.omega == 0.0 and not host.pen.physics.motor_drive
    host.run_for(within_s, step=0.001)
    assert host.pen.true_depth_um() == 0.0 and host.pen.physics.act_pos_um == 0.0


# ------------------------------------------------------------------------------ depth
@pytest.mark.parametrize("depth", [1, 150, 199])
def test_safety_depth_between_0_and_200_um_refused(depth: int) -> None:
    host = Host(seed=1)
    host.ready()
    reply = host.nak(SetDepth, depth, 0)
    assert (reply.error, reply.value, reply.limit) == (ErrorCode.DEPTH_OUT_OF_RANGE, depth, 200)


def test_safety_depth_above_2500_um_refused_by_the_firmware_itself() -> None:
    host = Host(seed=1)
    host.ready()
    host.ack(SetDepth, 0, 0)  # 0 (home) is a valid setpoint
    refusal = host.pen.firmware.check_depth(2600, True)  # the wire cannot carry 2600
    assert refusal is not None and refusal.error is ErrorCode.DEPTH_OUT_OF_RANGE
    assert refusal.limit == L.DEPTH_MAX_UM


def test_safety_run_at_depth_0_refused() -> None:
    host = Host(seed=1)
    host.ready()
    host.ack(SetDepth, 0, 0)
    reply = host.nak(Run, int(A.CHEEKS), RunMode.STROKES, 10, 0)
    assert (reply.error, reply.limit) == (ErrorCode.DEPTH_OUT_OF_RANGE, L.DEPTH_MIN_UM)


@pytest.mark.parametrize("area", list(A), ids=lambda a: a.name)
def test_safety_area_hard_maximum_checked_at_run(area: A) -> None:
    profile = L.AREAS[area]
    deepest = profile.override_max_um  # the hard maximum, with the override where there is one
    override = int(deepest > L.DEPTH_SOFT_CAP_UM)
    host = Host(seed=1)
    host.ready(rate_sps=profile.allowed_rates()[0])
    if area is A.BENCH_FIXTURE:
        host.ack(SetServiceMode, 1)  # the fixture runs only in service mode
    if deepest + 10 <= L.DEPTH_MAX_UM:
        host.ack(SetDepth, deepest + 10, override)
        reply = host.nak(Run, int(area), RunMode.STROKES, 10, 0)
        assert (reply.error, reply.value, reply.limit) == (
            ErrorCode.DEPTH_ABOVE_AREA_MAX,
            deepest + 10,
            deepest,
        )
        assert host.pen.physics.phase == 0.0
    host.ack(SetDepth, deepest, override)
    host.start(int(area), RunMode.STROKES, strokes=10)


def test_safety_area_maximum_checked_on_set_depth_while_running() -> None:
    host = running(depth=500, rate=90, area=A.FOREHEAD)
    reply = host.nak(SetDepth, 800, 0)
    assert (reply.error, reply.value, reply.limit) == (ErrorCode.DEPTH_ABOVE_AREA_MAX, 800, 750)
    host.run_for(0.1)
    assert abs(host.pen.firmware._raw_depth(500) - host.pen.physics.act_pos_um) < 1e-9
    host.ack(SetDepth, 700, 0)  # within the area: moves at once
    host.run_for(0.1)
    assert host.pen.physics.act_pos_um == pytest.approx(host.pen.firmware._raw_depth(700))


def test_safety_soft_cap_needs_override_and_is_logged() -> None:
    host = Host(seed=1)
    host.ready()
    reply = host.nak(SetDepth, 1600, 0)
    assert (reply.error, reply.value, reply.limit) == (
        ErrorCode.SOFT_CAP_NEEDS_OVERRIDE,
        1600,
        L.DEPTH_SOFT_CAP_UM,
    )
    host.ack(SetDepth, 1600, 1)
    host.run_for(0.01)
    assert [e.value for e in host.events(EventCode.SOFT_CAP_OVERRIDE)] == [1600]
    host.start(int(A.SCALP), RunMode.STROKES, strokes=10)


def test_safety_override_maximum_per_area() -> None:
    host = Host(seed=1)
    host.ready()
    host.ack(SetDepth, 2010, 1)
    reply = host.nak(Run, int(A.CHEEKS), RunMode.STROKES, 10, 0)
    assert (reply.error, reply.limit) == (ErrorCode.DEPTH_ABOVE_AREA_MAX, 2000)
    host.ack(SetDepth, 2000, 1)
    host.start(int(A.CHEEKS), RunMode.STROKES, strokes=10)
    host.wait_report()
    host.run_for(0.1)
    host.ack(SetDepth, 800, 1)  # the override does not stretch an area that has none
    assert host.nak(Run, int(A.FOREHEAD), RunMode.STROKES, 10, 0).limit == 750


# ------------------------------------------------------------------------------ rate
def test_safety_stroke_rate_outside_50_to_150_refused_by_the_firmware_itself() -> None:
    host = Host(seed=1)
    host.ready()
    for rate, limit in ((40, 50), (160, 150)):
        reply = host.pen.firmware._on_set_rate(_new(SetRate, (1, rate)), host.now)
        assert isinstance(reply, Nak) and reply.error is ErrorCode.RATE_OUT_OF_RANGE
        assert reply.limit == limit


@pytest.mark.parametrize("rate", [50, 100, 130, 150])
def test_safety_rate_must_be_an_allowed_level_of_the_area(rate: int) -> None:
    host = Host(seed=1)
    host.ready(rate_sps=rate)  # SetRate itself accepts any rate in range
    reply = host.nak(Run, int(A.CHEEKS), RunMode.STROKES, 10, 0)  # cheeks: levels 2-4
    assert (reply.error, reply.value, reply.limit) == (
        ErrorCode.RATE_NOT_ALLOWED_FOR_AREA,
        rate,
        110,
    )


def test_safety_rate_change_while_running_checked_against_the_area() -> None:
    host = running(rate=90)
    assert host.nak(SetRate, 50).error is ErrorCode.RATE_NOT_ALLOWED_FOR_AREA
    host.ack(SetRate, 70)
    host.run_for(0.3)
    expected = 70 * (1 + host.pen.unit_errors.speed_gain_ppm / 1e6)
    assert host.pen.true_rate_sps() == pytest.approx(expected, rel=1e-3)


# ------------------------------------------------------------------------------ run bounds
def test_safety_stroke_count_and_duration_bounds() -> None:
    host = Host(seed=1)
    host.ready()
    reply = host.nak(Run, int(A.CHEEKS), RunMode.STROKES, 0, 0)
    assert (reply.error, reply.limit) == (ErrorCode.STROKES_OUT_OF_RANGE, 1)
    reply = host.nak(Run, int(A.CHEEKS), RunMode.DURATION, 0, 99)
    assert (reply.error, reply.limit) == (ErrorCode.DURATION_OUT_OF_RANGE, 100)
    fw = host.pen.firmware
    too_many = fw.check_run(_new(Run, (1, int(A.CHEEKS), RunMode.STROKES, 1_000_001, 0)))
    assert too_many is not None and too_many.limit == L.STROKES_MAX
    too_long = fw.check_run(_new(Run, (1, int(A.CHEEKS), RunMode.DURATION, 0, 1_800_001)))
    assert too_long is not None and too_long.limit == L.RUN_DURATION_MAX_MS


# ------------------------------------------------------------------------------ watchdog
def test_safety_heartbeat_watchdog_stops_and_retracts() -> None:
    host = running()
    host.silent = True
    silent_from = host.now
    host.wait_for(lambda: host.pen.state is not PenState.RUNNING, 1.0)
    stopped_after = host.now - silent_from
    assert 0.4 <= stopped_after <= 0.5 + 0.002
    assert host.pen.fault is FaultCode.WATCHDOG
    assert_stopped_and_home(host)
    host.silent = False
    host.run_for(0.1)
    assert [f.fault for f in host.faults()] == [FaultCode.WATCHDOG]
    assert host.reports()[-1].outcome is RunOutcome.WATCHDOG


def test_safety_watchdog_does_not_trip_while_the_host_talks() -> None:
    host = running()
    host.run_for(3.0)
    assert host.pen.state is PenState.RUNNING


def test_safety_watchdog_range_is_enforced_by_the_firmware() -> None:
    host = Host(seed=1)
    host.ready()
    for ms, limit in ((99, 100), (2001, 2000)):
        reply = host.pen.firmware._on_set_watchdog(_new(SetWatchdog, (1, ms)), host.now)
        assert isinstance(reply, Nak) and (reply.error, reply.limit) == (
            ErrorCode.WATCHDOG_OUT_OF_RANGE,
            limit,
        )


# ------------------------------------------------------------------------------ stops
def test_safety_emergency_stop_latches_until_clear_fault() -> None:
    host = running()
    host.ack(EmergencyStop)
    assert host.pen.state is PenState.FAULT and host.pen.fault is FaultCode.EMERGENCY_STOP
    assert_stopped_and_home(host)
    reply = host.nak(Run, int(A.CHEEKS), RunMode.STROKES, 10, 0)
    assert reply.error is ErrorCode.FAULT_ACTIVE
    host.run_for(1.0)
    assert host.pen.state is PenState.FAULT
    host.ack(ClearFault)
    assert host.pen.state is PenState.IDLE
    assert host.reports()[-1].outcome is RunOutcome.EMERGENCY_STOP


def test_safety_emergency_stop_obeyed_before_any_handshake() -> None:
    host = running()
    host.connect()  # a new epoch: nothing else would be obeyed before Hello
    host.ack(EmergencyStop)
    assert host.pen.state is PenState.FAULT


@pytest.mark.parametrize("cause", ["stop", "estop", "watchdog", "stall"])
def test_safety_retract_within_50_ms(cause: str) -> None:
    host = Host(seed=1)
    host.ready(depth_um=2500, rate_sps=90)
    host.start(int(A.STRETCH_MARKS), RunMode.DURATION, duration_ms=20_000)
    host.run_for(0.2)
    assert host.pen.physics.act_pos_um > 2400
    if cause == "stop":
        host.send(Stop(host.next_id()))
    elif cause == "estop":
        host.send(EmergencyStop(host.next_id()), urgent=True)
    elif cause == "watchdog":
        host.silent = True
    else:
        host.pen.set_param(SimParam.STALL, 1, host.now)
    host.wait_for(lambda: host.pen.state is not PenState.RUNNING, 1.0)
    stopped = host.pen.firmware._stop_t
    host.wait_for(lambda: host.pen.true_depth_um() == 0.0, 0.2)
    home_at = host.now
    host.silent = False
    host.run_for(0.05)
    assert home_at - stopped <= 0.050 + 0.001  # the spec's 50 ms; 1 ms: the pump's step
    retracted = host.events(EventCode.RETRACTED)
    assert retracted and retracted[-1].value <= 50


def _stopped_at_full_depth(speed_pct: int) -> Host:
    host = Host(seed=1)
    host.ready(depth_um=2500, rate_sps=90)
    host.start(int(A.STRETCH_MARKS), RunMode.DURATION, duration_ms=20_000)
    host.run_for(0.2)
    host.pen.set_param(SimParam.ACTUATOR_SPEED_PCT, speed_pct, host.now)
    host.send(Stop(host.next_id()))
    host.wait_for(lambda: host.pen.state is not PenState.RUNNING, 1.0, step=0.001)
    return host


def test_safety_a_slow_retraction_faults_50_ms_after_the_stop() -> None:
    """The firmware times every retraction itself (not from the actuator model): needles not
    home 50 ms after the stop latch RETRACT_SLOW, and no run starts until they are home."""
    host = _stopped_at_full_depth(50)  # 2.5 mm at 30 mm/s: 83 ms
    stopped = host.now
    host.wait_for(lambda: host.pen.state is PenState.FAULT, 0.2, step=0.001)
    assert 0.050 <= host.now - stopped <= 0.052
    assert host.pen.fault is FaultCode.RETRACT_SLOW
    assert host.pen.physics.act_pos_um > 0.0  # caught before the needles were home
    raised = host.events(EventCode.FAULT_RAISED)
    assert raised and raised[-1].value == int(FaultCode.RETRACT_SLOW)
    assert host.faults()[-1].value in (50, 51)  # the elapsed ms it found
    refused = host.nak(ClearFault)  # needles still out: the cause stands
    assert refused.error is ErrorCode.FAULT_ACTIVE
    host.wait_for(lambda: host.pen.physics.act_pos_um == 0.0, 0.1, step=0.001)
    host.run_for(0.02)
    host.ack(ClearFault)
    assert host.pen.state is PenState.IDLE


def test_an_actuator_speeding_up_mid_retraction_reports_its_real_arrival() -> None:
    host = _stopped_at_full_depth(40)  # 2.5 mm at 24 mm/s would take 104 ms
    stopped = host.now
    host.run_for(0.01, step=0.001)
    host.pen.set_param(SimParam.ACTUATOR_SPEED_PCT, 100, host.now)  # 2.26 mm left: 38 ms
    host.wait_for(lambda: host.pen.physics.act_pos_um == 0.0, 0.2, step=0.001)
    home_ms = (host.now - stopped) * 1000
    host.run_for(0.05)
    assert home_ms < 50 and host.pen.fault is FaultCode.NONE
    assert host.events(EventCode.RETRACTED)[-1].value == pytest.approx(home_ms, abs=1.5)
    assert host.pen.state is PenState.IDLE


def test_safety_a_retraction_within_50_ms_raises_nothing() -> None:
    host = _stopped_at_full_depth(100)  # 2.5 mm at 60 mm/s: 42 ms
    host.run_for(0.2)
    assert host.pen.state is PenState.IDLE and host.pen.fault is FaultCode.NONE
    assert not host.faults()


def test_safety_an_actuator_slowing_mid_retraction_is_still_caught() -> None:
    """The model's arrival time was computed at full speed; the 50 ms check still reads the
    needles' real position."""
    host = _stopped_at_full_depth(100)
    host.run_for(0.01, step=0.001)
    host.pen.set_param(SimParam.ACTUATOR_SPEED_PCT, 10, host.now)
    host.wait_for(lambda: host.pen.state is PenState.FAULT, 0.1, step=0.001)
    assert host.pen.fault is FaultCode.RETRACT_SLOW
    host.wait_for(lambda: host.pen.physics.act_pos_um == 0.0, 1.0, step=0.001)
    assert host.events(EventCode.RETRACTED)[-1].value > 50  # and it says how long it took


# ------------------------------------------------------------------------------ motor, heat, power
def test_safety_stall_over_current_faults_after_100_ms() -> None:
    host = running()
    host.pen.set_param(SimParam.STALL, 1, host.now)
    jammed = host.now
    host.run_for(0.1, step=0.001)
    assert host.pen.state is PenState.RUNNING  # a current spike shorter than 100 ms is allowed
    host.wait_for(lambda: host.pen.state is PenState.FAULT, 0.05)
    assert host.now - jammed <= 0.125
    assert host.pen.fault is FaultCode.STALL
    assert_stopped_and_home(host)
    assert host.nak(ClearFault).error is ErrorCode.FAULT_ACTIVE  # still jammed
    host.ack(SimSet, SimParam.STALL, 0)
    host.ack(ClearFault)


def test_safety_over_temperature_warns_at_40_and_faults_at_43() -> None:
    host = running(seed=2)
    host.ack(SimSet, SimParam.OVERHEAT, 200)

    def temp() -> float:
        return host.pen.physics.temp_c

    host.wait_for(lambda: bool(host.events(EventCode.TEMPERATURE_WARNING)), 400, step=0.05)
    assert 39.8 <= temp() <= 40.6 and host.pen.state is PenState.RUNNING
    host.wait_for(lambda: host.pen.state is PenState.FAULT, 400, step=0.05)
    assert host.pen.fault is FaultCode.OVER_TEMPERATURE and 42.8 <= temp() <= 43.3
    assert_stopped_and_home(host)
    assert host.nak(ClearFault).error is ErrorCode.FAULT_ACTIVE
    host.ack(SimSet, SimParam.OVERHEAT, 0)
    host.wait_for(lambda: temp() < 40.5, 600, step=0.5)
    host.ack(ClearFault)


def test_safety_over_temperature_fault_at_rest_too() -> None:
    host = Host(seed=2)
    host.ready()
    host.ack(SimSet, SimParam.AMBIENT_DC, 450)
    host.wait_for(lambda: host.pen.state is PenState.FAULT, 600, step=0.5)
    assert host.pen.fault is FaultCode.OVER_TEMPERATURE


def test_safety_refuses_to_start_above_41_c() -> None:
    host = Host(seed=2)
    host.ready()
    host.ack(SimSet, SimParam.AMBIENT_DC, 418)
    host.wait_for(lambda: host.pen.physics.temp_c > 41.2, 900, step=0.5)
    reply = host.nak(Run, int(A.CHEEKS), RunMode.STROKES, 10, 0)
    assert (reply.error, reply.limit) == (ErrorCode.OVER_TEMPERATURE, L.TEMP_LIMIT_DC)
    assert reply.value > L.TEMP_LIMIT_DC


def test_safety_low_battery_refuses_to_start_below_3400_mv() -> None:
    host = Host(seed=1)
    host.ready()
    host.ack(SimSet, SimParam.BATTERY_MV, 3390)
    reply = host.nak(Run, int(A.CHEEKS), RunMode.STROKES, 10, 0)
    assert (reply.error, reply.limit) == (ErrorCode.BATTERY_LOW, L.BATTERY_START_MIN_MV)
    host.ack(SimSet, SimParam.BATTERY_MV, 3420)
    host.start(int(A.CHEEKS), RunMode.STROKES, strokes=10)


def test_safety_low_battery_stops_below_3300_mv() -> None:
    host = Host(seed=1)
    host.ready()
    host.ack(SimSet, SimParam.BATTERY_MV, 3420)
    host.start(int(A.CHEEKS), RunMode.DURATION, duration_ms=10_000)
    host.run_for(0.5)
    assert host.pen.state is PenState.RUNNING  # 3.42 V sags to about 3.35 V under load
    host.ack(SimSet, SimParam.BATTERY_MV, 3340)
    host.run_for(0.05)
    assert host.pen.state is PenState.FAULT and host.pen.fault is FaultCode.BATTERY_LOW
    assert_stopped_and_home(host)


# ------------------------------------------------------------------------------ depth error
def test_safety_depth_error_fault_when_measured_depth_deviates_over_150_um() -> None:
    host = running()
    host.ack(SimSet, SimParam.DEPTH_DRIFT_UM, 120)
    host.run_for(0.5)
    assert host.pen.state is PenState.RUNNING  # inside the tolerance
    host.ack(SimSet, SimParam.DEPTH_DRIFT_UM, -170)
    host.run_for(0.02)
    assert host.pen.state is PenState.FAULT and host.pen.fault is FaultCode.DEPTH_ERROR
    assert_stopped_and_home(host)
    assert host.nak(ClearFault).error is ErrorCode.FAULT_ACTIVE
    host.ack(SimSet, SimParam.DEPTH_DRIFT_UM, 0)
    host.ack(ClearFault)


# ------------------------------------------------------------------------------ cartridge
def test_safety_cartridge_locked_on_first_run() -> None:
    host = Host(seed=1)
    host.ready()
    host.start(int(A.CHEEKS), RunMode.STROKES, strokes=5)
    host.run_for(0.1)
    info = host.cmd(GetCartridge)
    assert info.state.name == "LOCKED"  # type: ignore[attr-defined]
    assert len(host.events(EventCode.CARTRIDGE_LOCKED)) == 1
    cart = host.pen.cartridge
    assert cart is not None and cart.cartridge_id in host.pen.nvm.cartridges.used_ids


def test_safety_cartridge_refused_when_re_mounted_even_after_a_reset() -> None:
    host = Host(seed=1)
    host.ready()
    host.start(int(A.CHEEKS), RunMode.STROKES, strokes=5)
    host.wait_report()
    host.run_for(0.1)
    cart = host.pen.cartridge
    assert cart is not None
    pen = host.pen
    pen.mount_cartridge(0, "", 0, 0, host.now)
    pen.mount_cartridge(
        cart.cartridge_id, cart.lot, cart.manufactured_day, cart.expiry_day, host.now
    )
    reply = host.nak(Run, int(A.CHEEKS), RunMode.STROKES, 5, 0)
    assert reply.error is ErrorCode.CARTRIDGE_USED
    assert reply.value & 0xFFFF_FFFF == cart.cartridge_id
    pen.power_cycle(host.now)
    host.run_for(0.3)
    host.connect()
    host.hello()
    host.ack(SetDepth, 1000, 0)
    assert host.nak(Run, int(A.CHEEKS), RunMode.STROKES, 5, 0).error is ErrorCode.CARTRIDGE_USED


@pytest.mark.parametrize(
    ("lot", "made", "expires", "error"),
    [
        ("LOT", -800, -70, ErrorCode.CARTRIDGE_EXPIRED),
        ("LOT", -740, 100, ErrorCode.CARTRIDGE_EXPIRED),  # printed expiry beyond 2-year shelf life
        ("", -10, 300, ErrorCode.CARTRIDGE_UNKNOWN),
        ("LOT", 5, 300, ErrorCode.CARTRIDGE_UNKNOWN),  # made after today
        ("LOT", -10, -20, ErrorCode.CARTRIDGE_UNKNOWN),  # expires before it was made
    ],
)
def test_safety_cartridge_expired_or_unknown_refused(
    lot: str, made: int, expires: int, error: ErrorCode
) -> None:
    host = Host(seed=1, cartridge=False)
    host.ready()
    today = host.pen.config.today_day
    host.pen.mount_cartridge(99, lot, today + made, today + expires, host.now)
    reply = host.nak(Run, int(A.CHEEKS), RunMode.STROKES, 5, 0)
    assert reply.error is error
    assert host.pen.physics.phase == 0.0


def test_safety_cartridge_exhausted_at_250000_strokes() -> None:
    host = Host(seed=1)
    host.ready()
    cart = host.pen.cartridge
    assert cart is not None
    cart.strokes_used = 250_000 - 10  # a nearly worn tag (the spec: 250,000 strokes)
    host.start(int(A.CHEEKS), RunMode.STROKES, strokes=100)
    report = host.wait_report()
    assert (report.outcome, report.strokes) == (RunOutcome.CARTRIDGE_LIMIT, 10)
    assert cart.strokes_used == 250_000
    host.run_for(0.1)
    reply = host.nak(Run, int(A.CHEEKS), RunMode.STROKES, 5, 0)
    assert reply.error is ErrorCode.CARTRIDGE_EXHAUSTED
    assert host.events(EventCode.CARTRIDGE_RETIRED)


def test_safety_cartridge_exhausted_after_30_minutes_of_needling() -> None:
    host = Host(seed=1)
    host.ready()
    cart = host.pen.cartridge
    assert cart is not None
    cart.run_ms_used = 30 * 60 * 1000 - 500.0  # the spec: 30 min of needling
    host.start(int(A.CHEEKS), RunMode.DURATION, duration_ms=2000)
    report = host.wait_report()
    assert (report.outcome, report.duration_ms) == (RunOutcome.CARTRIDGE_LIMIT, 500)
    host.run_for(0.1)
    assert host.nak(Run, int(A.CHEEKS), RunMode.STROKES, 5, 0).error is (
        ErrorCode.CARTRIDGE_EXHAUSTED
    )


def test_safety_cartridge_removed_while_running_is_a_fault() -> None:
    host = running()
    host.ack(SimSet, SimParam.CARTRIDGE_REMOVE, 1)
    assert host.pen.state is PenState.FAULT and host.pen.fault is FaultCode.CARTRIDGE_REMOVED
    assert_stopped_and_home(host)
    assert host.pen.cartridge is None


def test_safety_no_cartridge_refused() -> None:
    host = Host(seed=1, cartridge=False)
    host.ready()
    assert host.nak(Run, int(A.CHEEKS), RunMode.STROKES, 5, 0).error is ErrorCode.NO_CARTRIDGE


# ------------------------------------------------------------------------------ fluid ingress
def test_safety_fluid_ingress_stops_retracts_and_retires_the_cartridge() -> None:
    host = running()
    cart = host.pen.cartridge
    assert cart is not None
    host.ack(SimSet, SimParam.FLUID_INGRESS, 1)
    assert host.pen.state is PenState.FAULT and host.pen.fault is FaultCode.FLUID_INGRESS
    assert_stopped_and_home(host)
    retired = [e.value & 0xFFFF_FFFF for e in host.events(EventCode.CARTRIDGE_RETIRED)]
    assert retired == [cart.cartridge_id]
    assert host.nak(ClearFault).error is ErrorCode.FAULT_ACTIVE  # still wet
    host.ack(SimSet, SimParam.FLUID_INGRESS, 0)
    host.ack(ClearFault)
    reply = host.nak(Run, int(A.CHEEKS), RunMode.STROKES, 5, 0)
    assert reply.error is ErrorCode.CARTRIDGE_USED


def test_safety_fluid_ingress_at_rest_also_faults() -> None:
    host = Host(seed=1)
    host.ready()
    host.ack(SimSet, SimParam.FLUID_INGRESS, 1)
    assert host.pen.state is PenState.FAULT and host.pen.fault is FaultCode.FLUID_INGRESS


def test_safety_fluid_ingress_found_by_the_boot_self_test() -> None:
    host = Host(seed=1)
    host.ready()
    host.pen.set_param(SimParam.FLUID_INGRESS, 1, host.now)
    host.pen.power_cycle(host.now)
    assert host.pen.state is PenState.FAULT and host.pen.fault is FaultCode.FLUID_INGRESS


def test_safety_an_emergency_stop_does_not_hide_fluid_ingress() -> None:
    host = running()
    host.ack(SimSet, SimParam.FLUID_INGRESS, 1)
    host.ack(EmergencyStop)  # latches over the ingress fault
    reply = host.nak(ClearFault)
    assert (reply.error, reply.value) == (ErrorCode.FAULT_ACTIVE, FaultCode.FLUID_INGRESS)
    host.ack(SimSet, SimParam.FLUID_INGRESS, 0)
    host.ack(ClearFault)
