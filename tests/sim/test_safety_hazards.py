"""One test per hazard of shared/pen-spec.md where the firmware has a part in controlling it.

Each drives the simulated pen through bytes only (no host-side checks) and looks at the
*physical* outcome too (true needle depth, motor phase), so it fails if the firmware's
control is removed.
"""

from __future__ import annotations

import pytest
from test_firmware_harness import Host

from micropen.protocol import limits as L
from micropen.protocol.messages import (
    CalBank,
    CalCommit,
    CalData,
    CalRead,
    CalWrite,
    EmergencyStop,
    ErrorCode,
    EventCode,
    FaultCode,
    GetStatus,
    Nak,
    PenState,
    Run,
    RunMode,
    RunOutcome,
    SetDepth,
    SetServiceMode,
    SetTelemetry,
    SimParam,
    SimSet,
    Stop,
    calibration_crc,
)

A = L.Area
CHEEKS = int(A.CHEEKS)


def _cal(counter: int, gain: int = 0, offset: int = 0, rate: int = 0) -> tuple[int, ...]:
    fields = (1, gain, offset, rate, 1_764_000_000, counter)
    return (*fields, calibration_crc(*fields))


def test_hazard_1_over_depth_refused_above_area_max() -> None:
    host = Host(seed=4)
    host.ready(depth_um=600, rate_sps=90)
    host.ack(SetDepth, 900, 0)
    assert host.nak(Run, int(A.PERIORBITAL), RunMode.STROKES, 10, 0).limit == 500
    assert host.pen.true_depth_um() == 0.0
    host.ack(SetDepth, 500, 0)
    host.start(int(A.PERIORBITAL), RunMode.DURATION, duration_ms=5000)
    host.run_for(0.2)
    reached = host.pen.true_depth_um()
    assert host.nak(SetDepth, 510, 0).error is ErrorCode.DEPTH_ABOVE_AREA_MAX
    host.run_for(0.2)
    assert host.pen.true_depth_um() == reached
    assert host.pen.physics.act_pos_um <= 500.0 + 1e-9  # nominal calibration: raw = commanded


def test_hazard_1_true_depth_at_area_max_is_within_tolerance_once_calibrated() -> None:
    host = Host(seed=21)
    host.ready(depth_um=750, rate_sps=90)
    e = host.pen.unit_errors
    g, o = e.depth_gain_ppm / 1e6, e.depth_offset_um
    record = _cal(2, round((1 / (1 + g) - 1) * 1e6), round(-o / (1 + g)))
    host.ack(CalWrite, *record)
    host.ack(CalCommit, record[-1])
    host.start(int(A.FOREHEAD), RunMode.DURATION, duration_ms=1000)
    host.run_for(0.3)
    assert host.pen.true_depth_um() <= 750 + L.DEPTH_AS_LEFT_TOL_UM


@pytest.mark.parametrize("how", ["stop", "estop", "host_lost", "fault"])
def test_hazard_2_needles_stop_and_stay_stopped(how: str) -> None:
    host = Host(seed=5)
    host.ready()
    host.start(CHEEKS, RunMode.DURATION, duration_ms=60_000)
    host.run_for(0.5)
    if how == "stop":
        host.ack(Stop)
    elif how == "estop":
        host.ack(EmergencyStop)
    elif how == "host_lost":
        host.silent = True
    else:
        host.pen.set_param(SimParam.FLUID_INGRESS, 1, host.now)
    host.wait_for(lambda: host.pen.state is not PenState.RUNNING, 0.6)
    phase = host.pen.physics.phase
    host.run_for(0.06, step=0.001)
    assert host.pen.true_depth_um() == 0.0
    host.run_for(5.0)
    assert host.pen.physics.phase == phase and host.pen.physics.omega == 0.0
    assert host.pen.true_depth_um() == 0.0


@pytest.mark.parametrize("strokes", [1, 3, 999, 5000])
def test_hazard_3_exact_stroke_count_never_more_than_commanded(strokes: int) -> None:
    host = Host(seed=strokes)
    host.ready(rate_sps=110)
    host.ack(SetTelemetry, 200)
    host.start(CHEEKS, RunMode.STROKES, strokes=strokes)
    report = host.wait_report(timeout=120.0, step=0.02)
    host.run_for(1.0)
    assert report.strokes == strokes == host.pen.physics.phase
    assert all(t.run_strokes <= strokes for t in host.telemetry())
    assert host.status().lifetime_strokes == strokes
    cart = host.pen.cartridge
    assert cart is not None and cart.strokes_used == strokes


def test_hazard_3_strokes_counted_when_a_run_is_cut_short() -> None:
    host = Host(seed=8)
    host.ready()
    host.start(CHEEKS, RunMode.STROKES, strokes=10_000)
    host.run_for(0.7)
    host.ack(EmergencyStop)
    report = host.wait_report()
    assert report.outcome is RunOutcome.EMERGENCY_STOP
    assert report.strokes == int(host.pen.physics.phase) > 0
    assert host.status().lifetime_strokes == report.strokes


@pytest.mark.parametrize("kind", ["used", "expired", "unknown"])
def test_hazard_4_used_expired_or_unknown_cartridge_never_runs(kind: str) -> None:
    host = Host(seed=6)
    host.ready()
    pen, today = host.pen, host.pen.config.today_day
    if kind == "used":
        host.start(CHEEKS, RunMode.STROKES, strokes=5)
        host.wait_report()
        host.run_for(0.1)
        cart = pen.cartridge
        assert cart is not None
        pen.mount_cartridge(0, "", 0, 0, host.now)
        pen.mount_cartridge(cart.cartridge_id, "RELABELLED", today - 1, today + 9, host.now)
    elif kind == "expired":
        pen.mount_cartridge(31, "OLD", today - 900, today - 1, host.now)
    else:
        pen.mount_cartridge(32, "", today - 1, today + 100, host.now)
    phase = pen.physics.phase
    reply = host.nak(Run, CHEEKS, RunMode.STROKES, 5, 0)
    expected = {
        "used": ErrorCode.CARTRIDGE_USED,
        "expired": ErrorCode.CARTRIDGE_EXPIRED,
        "unknown": ErrorCode.CARTRIDGE_UNKNOWN,
    }
    assert reply.error is expected[kind]
    host.run_for(0.5)
    assert pen.physics.phase == phase and pen.true_depth_um() == 0.0


def test_hazard_5_fluid_ingress_acted_on() -> None:
    host = Host(seed=7)
    host.ready()
    host.start(CHEEKS, RunMode.DURATION, duration_ms=60_000)
    host.run_for(0.3)
    host.ack(SimSet, SimParam.FLUID_INGRESS, 1)
    assert host.pen.fault is FaultCode.FLUID_INGRESS
    host.run_for(0.06, step=0.001)
    assert host.pen.true_depth_um() == 0.0 and host.pen.physics.omega == 0.0
    assert FaultCode.FLUID_INGRESS in [f.fault for f in host.faults()]
    assert host.events(EventCode.CARTRIDGE_RETIRED)


def test_hazard_6_depth_drift_is_noticed() -> None:
    host = Host(seed=9)
    host.ready()
    host.start(CHEEKS, RunMode.DURATION, duration_ms=60_000)
    host.run_for(0.3)
    host.ack(SimSet, SimParam.DEPTH_DRIFT_UM, 200)
    host.run_for(0.03)
    assert host.pen.fault is FaultCode.DEPTH_ERROR
    assert FaultCode.DEPTH_ERROR in [f.fault for f in host.faults()]


def test_hazard_6_stroke_rate_drift_shows_in_telemetry() -> None:
    host = Host(seed=9)
    host.ready(rate_sps=110)
    host.ack(SetTelemetry, 50)
    host.start(CHEEKS, RunMode.DURATION, duration_ms=60_000)
    host.ack(SimSet, SimParam.SPEED_GAIN_ERROR_PPM, -45_000)  # the motor wore: 4.5 % slow
    host.run_for(0.5)
    measured = host.telemetry()[-1].rate_csps / 100
    assert measured == pytest.approx(110 * 0.955, rel=0.005)  # the pen reports the truth
    assert host.pen.state is PenState.RUNNING  # within the ±5 % the spec allows


@pytest.mark.parametrize("ppm", [-55_000, 55_000, -80_000])
def test_hazard_6_stroke_rate_drift_beyond_5_percent_faults(ppm: int) -> None:
    """The pen's own control: a stroke rate more than 5 % off the set rate for 100 ms stops
    the run with RATE_ERROR (the spec's ±5 % stroke-rate accuracy)."""
    host = Host(seed=9)
    host.ready(rate_sps=110)
    host.start(CHEEKS, RunMode.DURATION, duration_ms=60_000)
    host.run_for(0.5)
    assert host.pen.state is PenState.RUNNING
    host.ack(SimSet, SimParam.SPEED_GAIN_ERROR_PPM, ppm)
    host.run_for(0.25)  # the motor's lag, then 100 ms off the rate
    assert host.pen.state is PenState.FAULT and host.pen.fault is FaultCode.RATE_ERROR
    report = host.wait_report()
    assert report.outcome is RunOutcome.FAULT


def test_hazard_6_bench_fixture_runs_measure_drift_without_faulting() -> None:
    """Calibration measures the drift on the bench fixture: there it must be able to run."""
    host = Host(seed=9)
    host.ready(rate_sps=110)
    host.ack(SimSet, SimParam.SPEED_GAIN_ERROR_PPM, -80_000)
    host.ack(SetServiceMode, 1)  # the fixture runs only in service mode
    host.start(int(L.Area.BENCH_FIXTURE), RunMode.DURATION, duration_ms=60_000)
    host.run_for(1.0)
    assert host.pen.state is PenState.RUNNING


def test_hazard_6_uncalibrated_unit_refuses_to_run() -> None:
    host = Host(seed=9, calibration="blank")
    host.ready()
    assert host.nak(Run, CHEEKS, RunMode.STROKES, 5, 0).error is ErrorCode.UNCALIBRATED


def test_hazard_7_corrupted_calibration_detected_and_refused() -> None:
    host = Host(seed=10)
    host.ready()
    host.ack(SimSet, SimParam.CALIBRATION_CORRUPT, 1)
    host.run_for(1.0)  # the firmware re-checks its NVM at rest
    assert FaultCode.CALIBRATION_CORRUPT in [f.fault for f in host.faults()]
    assert host.status().calibrated == 0
    assert host.nak(Run, CHEEKS, RunMode.STROKES, 5, 0).error is ErrorCode.UNCALIBRATED


def test_hazard_7_calibration_downgrade_and_bad_crc_refused() -> None:
    host = Host(seed=10)
    host.ready()
    current = _cal(4, gain=300)
    host.ack(CalWrite, *current)
    host.ack(CalCommit, current[-1])
    tampered = list(_cal(9, gain=90_000))
    tampered[2] = -400  # offset altered after the CRC was computed
    assert host.nak(CalWrite, *tampered).error is ErrorCode.CALIBRATION_CRC_MISMATCH
    older = _cal(3, gain=90_000)
    host.ack(CalWrite, *older)
    assert host.nak(CalCommit, older[-1]).error is ErrorCode.CALIBRATION_DOWNGRADE
    active = host.cmd(CalRead, CalBank.ACTIVE)
    assert isinstance(active, CalData) and (active.counter, active.depth_gain_ppm) == (4, 300)


def test_hazard_8_commands_refused_before_handshake() -> None:
    host = Host(seed=11)
    host.connect()
    reply = host.cmd(SetDepth, 1000, 0)
    assert isinstance(reply, Nak) and reply.error is ErrorCode.NOT_CONNECTED
    assert host.nak(Run, CHEEKS, RunMode.STROKES, 5, 0).error is ErrorCode.NOT_CONNECTED
    assert host.nak(SimSet, SimParam.STALL, 1).error is ErrorCode.NOT_CONNECTED
    assert not host.events(EventCode.SECURITY_DENIED)  # records go to a session only
    host.hello()  # Hello + OpenSession: the held denials are handed over, to be logged
    host.run_for(0.05)
    assert len(host.events(EventCode.SECURITY_DENIED)) == 3
    host.ack(SetDepth, 1000, 0)
    host.connect()  # another link epoch (another host?): it must identify itself again
    assert host.nak(GetStatus).error is ErrorCode.NOT_CONNECTED
    assert host.pen.physics.phase == 0.0


def test_hazard_9_retransmitted_command_runs_once() -> None:
    host = Host(seed=12)
    host.ready()
    run = Run(4242, CHEEKS, RunMode.STROKES, 200, 0)
    first = host.request(run)
    host.wait_report()
    host.run_for(0.2)
    host.connect()  # the host lost the link and re-sends the same command in a new epoch
    host.hello()
    second = host.request(run)
    host.run_for(3.0)
    assert first == second
    assert len(host.reports()) == 1 and host.status().lifetime_strokes == 200


def test_hazard_9_duplicated_frames_execute_once() -> None:
    host = Host(seed=12)
    host.ready()
    host.ack(SimSet, SimParam.LINK_DUPLICATE_PPM, 1_000_000)  # every frame twice, both ways
    host.start(CHEEKS, RunMode.STROKES, strokes=50)
    host.wait_report()
    host.run_for(0.5)
    assert len(host.reports()) == 1
    assert host.pen.run is not None and host.pen.run.run_id == 1
    assert host.pen.nvm.lifetime_strokes == 50
