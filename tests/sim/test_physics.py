"""The physical models: determinism, retract time, motor lag, heat, battery, unit errors."""

from __future__ import annotations

import math

import pytest
from test_firmware_harness import Host

from micropen.protocol import limits as L
from micropen.protocol.messages import RunMode, SetTelemetry
from micropen.sim import physics as P
from micropen.sim.bench import Bench
from micropen.sim.pen import SimConfig, SimulatedPen
from micropen.sim.physics import Physics, UnitErrors

CHEEKS = int(L.Area.CHEEKS)


def _session_bytes(seed: int) -> tuple[bytes, list[float]]:
    """Everything the pen wrote during a short treatment, and gauge readings."""
    host = Host(seed=seed, boot_seed=1)  # boot ids repeatable too: asked for explicitly
    written = bytearray()
    original = host.pen.data_to_send

    def spy(now: float) -> bytes:
        out = original(now)
        written.extend(out)
        return out

    host.pen.data_to_send = spy  # type: ignore[method-assign]
    host.ready()
    host.ack(SetTelemetry, 100)
    host.start(CHEEKS, RunMode.DURATION, duration_ms=700)
    readings = []
    for _ in range(5):
        host.run_for(0.1)
        readings.append(host.pen.bench.gauge.read_mm(host.now))
    host.wait_report()
    return bytes(written), readings


def test_same_seed_same_bytes_and_readings() -> None:
    assert _session_bytes(17) == _session_bytes(17)


def test_other_seed_other_results() -> None:
    assert _session_bytes(17)[0] != _session_bytes(18)[0]


def test_reading_the_bench_does_not_change_what_the_pen_does() -> None:
    def strokes(read_bench: bool) -> tuple[int, int]:
        host = Host(seed=3)
        host.ready()
        host.start(CHEEKS, RunMode.DURATION, duration_ms=500)
        for _ in range(10):
            host.run_for(0.05)
            if read_bench:
                host.pen.bench.gauge.read_mm(host.now)
                host.pen.bench.tachometer.read_sps(host.now)
        report = host.wait_report()
        return report.strokes, host.status().temperature_dc

    assert strokes(True) == strokes(False)


def test_manufacturing_errors_within_bounds_over_many_seeds() -> None:
    seen = [UnitErrors.from_seed(seed) for seed in range(2000)]
    for bound, values in (
        (P.DEPTH_GAIN_ERR_PPM_MAX, [e.depth_gain_ppm for e in seen]),
        (P.DEPTH_OFFSET_ERR_UM_MAX, [e.depth_offset_um for e in seen]),
        (P.SPEED_GAIN_ERR_PPM_MAX, [e.speed_gain_ppm for e in seen]),
    ):
        assert all(bound * P.ERROR_MAGNITUDE_MIN_FRACTION - 1 <= abs(v) <= bound for v in values)
        assert min(values) < 0 < max(values)  # both signs occur
    assert len(set(seen)) > 1990  # units differ


def test_uncalibrated_units_fail_as_found_depth_acceptance_often_and_calibration_can_fix_all() -> (
    None
):
    points_um = (250, 500, 1000, 1500, 2000, 2500)
    failing = 0
    for seed in range(1000):
        e = UnitErrors.from_seed(seed)
        errors = [e.true_depth_um(d) - d for d in points_um]
        failing += max(abs(x) for x in errors) > L.DEPTH_ACCEPT_TOL_UM
        g, o = e.depth_gain_ppm / 1e6, e.depth_offset_um
        gain_ppm, offset_um = (1 / (1 + g) - 1) * 1e6, -o / (1 + g)
        assert abs(gain_ppm) <= L.CAL_GAIN_PPM_LIMIT and abs(offset_um) <= L.CAL_OFFSET_UM_LIMIT
    assert failing > 300  # see docs/simulator.md for the exact share


def test_ideal_unit_has_no_errors() -> None:
    pen = SimulatedPen(SimConfig(seed=5, manufacturing_errors=False))
    assert pen.unit_errors == UnitErrors()


def test_retract_from_full_travel_within_50_ms() -> None:
    ph = Physics(UnitErrors(), 0.0)
    ph.move_actuator(P.ACTUATOR_TRAVEL_UM)
    ph.step(1.0, math.inf)
    assert ph.act_pos_um == P.ACTUATOR_TRAVEL_UM
    ph.move_actuator(0.0)
    arrival = ph.actuator_arrival() - ph.t
    assert arrival <= L.RETRACT_MAX_MS / 1000.0
    ph.step(ph.t + arrival, math.inf)
    assert ph.act_pos_um == 0.0 and ph.true_depth_um() == 0.0


def test_home_is_zero_depth_whatever_the_offset_error() -> None:
    ph = Physics(UnitErrors(depth_offset_um=80), 0.0)
    assert ph.true_depth_um() == 0.0
    ph.move_actuator(1000.0)
    ph.step(1.0, math.inf)
    assert ph.true_depth_um() == pytest.approx(1080.0)


def test_motor_first_order_lag() -> None:
    ph = Physics(UnitErrors(speed_gain_ppm=20_000), 0.0)
    ph.drive_motor(100.0)
    ph.step(P.MOTOR_TAU_S, math.inf)
    target = 102.0
    assert ph.omega == pytest.approx(target * (1 - math.exp(-1)), rel=1e-9)
    ph.step(1.0, math.inf)
    assert ph.omega == pytest.approx(target)
    expected_phase = target * 1.0 - target * P.MOTOR_TAU_S * (1 - math.exp(-1.0 / P.MOTOR_TAU_S))
    assert ph.phase == pytest.approx(expected_phase, rel=1e-9)


def test_step_size_does_not_change_the_physics() -> None:
    def final(step: float) -> tuple[float, float, float, float]:
        ph = Physics(UnitErrors(speed_gain_ppm=-30_000), 0.0)
        ph.drive_motor(110.0)
        ph.move_actuator(1500.0)
        t = 0.0
        while t < 2.0 - 1e-12:
            t = min(2.0, t + step)
            ph.step(t, math.inf)
        return ph.phase, ph.omega, ph.act_pos_um, ph.v_oc

    a, b = final(0.001), final(0.5)
    for x, y in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=1e-7)


@pytest.mark.parametrize("limit", [1.0, 2.0, 37.0, 1234.0])
def test_stroke_limit_lands_exactly_on_the_crossing(limit: float) -> None:
    ph = Physics(UnitErrors(), 0.0)
    ph.drive_motor(110.0)
    hit = ph.step(60.0, limit)
    assert hit and ph.phase == limit
    crossing = ph.t
    probe = Physics(UnitErrors(), 0.0)
    probe.drive_motor(110.0)
    probe.step(crossing * (1 - 1e-9), math.inf)
    assert probe.phase < limit  # an instant earlier it had not got there


def test_stall_raises_current_over_the_threshold_and_stops_the_motor() -> None:
    ph = Physics(UnitErrors(), 0.0)
    ph.drive_motor(110.0)
    ph.step(1.0, math.inf)
    assert ph.current_ma() < L.STALL_CURRENT_MA
    ph.stalled = True
    assert ph.current_ma() > L.STALL_CURRENT_MA
    ph.step(2.0, math.inf)
    assert ph.omega < 0.1


def test_temperature_rises_with_duty_and_cools_at_rest() -> None:
    ph = Physics(UnitErrors(), 0.0)
    ph.drive_motor(110.0)
    ph.step(P.THERMAL_TAU_S, math.inf)
    rise = ph.temp_c - P.AMBIENT_DEFAULT_C
    steady = P.HEAT_C_PER_A * ph.current_ma() / 1000.0
    assert rise == pytest.approx(steady * (1 - math.exp(-1)), rel=0.02)
    hot = ph.temp_c
    ph.brake()
    ph.step(2 * P.THERMAL_TAU_S, math.inf)
    assert ph.temp_c - P.AMBIENT_DEFAULT_C == pytest.approx(
        (hot - P.AMBIENT_DEFAULT_C) * math.exp(-1), rel=1e-6
    )


def test_battery_discharges_faster_under_load() -> None:
    idle, busy = Physics(UnitErrors(), 0.0), Physics(UnitErrors(), 0.0)
    busy.drive_motor(110.0)
    idle.step(600.0, math.inf)
    busy.step(600.0, math.inf)
    assert busy.v_oc < idle.v_oc < P.BATTERY_START_V
    assert busy.battery_mv() < busy.v_oc * 1000.0  # terminal voltage sags under load


def test_bench_instruments_read_the_truth_with_their_noise() -> None:
    truth = {"depth": 1234.0, "rate": 107.3}
    bench = Bench(lambda now: truth["depth"], lambda now: truth["rate"], seed=4, today_day=100)
    depths = [bench.gauge.read_mm(0.0) for _ in range(200)]
    rates = [bench.tachometer.read_sps(0.0) for _ in range(200)]
    assert all(abs(d - 1.234) < 0.008 for d in depths) and len(set(depths)) > 3
    assert all(round(d, 3) == d for d in depths)
    assert all(abs(r - 107.3) < 0.3 for r in rates)
    truth["depth"], truth["rate"] = 0.0, 0.0
    assert bench.gauge.read_mm(0.0) == 0.0 and bench.tachometer.read_sps(0.0) == 0.0
    assert bench.gauge.cal_due_day == 280 and bench.gauge.cal_due.isoformat() == "1970-10-08"
    assert bench.gauge.serial == "DG-000004" and bench.tachometer.model


def test_pen_sensors_are_noisy_but_unbiased() -> None:
    host = Host(seed=13)
    host.ready(depth_um=1000)
    host.ack(SetTelemetry, 200)
    host.start(CHEEKS, RunMode.DURATION, duration_ms=3000)
    host.wait_report()
    samples = [t for t in host.telemetry() if t.state.name == "RUNNING" and t.t_ms > 600]
    depths = [s.depth_um for s in samples]
    assert len(set(depths)) > 2
    assert abs(sum(depths) / len(depths) - 1000) < 1.0
