"""The parameter envelope: every limit just inside and just outside, per treatment area.

Each limit is checked twice: the host refuses the value before sending anything
(SafetyLimitError), and — with the host's checks bypassed — the pen refuses it too, with the
right ErrorCode, and nothing happens. Values outside a field's declared wire range (a depth above
2.5 mm, a rate below 50/s, area 10…) are refused by the pen's decoder with the field's typed
code (DEPTH_OUT_OF_RANGE, RATE_OUT_OF_RANGE, UNKNOWN_AREA…), not as a malformed message: a host
without checks learns what it asked for wrong.
"""

from __future__ import annotations

import pytest

from micropen.hil_tests.capture import capture
from micropen.hil_tests.drive import pen_refuses, raw, start_run
from micropen.host import Pen
from micropen.host.errors import InvalidInput, PenRefused, SafetyLimitError
from micropen.protocol import limits as L
from micropen.protocol.messages import (
    Ack,
    ErrorCode,
    EventCode,
    PenState,
    Run,
    RunMode,
    RunOutcome,
    SetDepth,
    SetRate,
    SetTelemetry,
    SetWatchdog,
)

E = ErrorCode
AREAS = list(L.AREAS.values())
OVERRIDE = "HIL envelope test"


def _nothing_happened(pen: Pen, run_id: int) -> None:
    status = pen.status()
    assert status.run_id == run_id, "a refused command started a run"
    assert status.state is PenState.IDLE


# ------------------------------------------------------------------------------- depth
@pytest.mark.parametrize(
    ("depth_um", "override", "expected"),
    [
        (L.DEPTH_MIN_UM - 10, 0, E.DEPTH_OUT_OF_RANGE),
        (1, 0, E.DEPTH_OUT_OF_RANGE),
        (L.DEPTH_SOFT_CAP_UM + 10, 0, E.SOFT_CAP_NEEDS_OVERRIDE),
        (L.DEPTH_MAX_UM + 10, 1, E.DEPTH_OUT_OF_RANGE),  # beyond the wire field's range
    ],
)
def test_depth_outside_is_refused_by_host_and_pen(
    pen: Pen, depth_um: int, override: int, expected: ErrorCode
) -> None:
    reason = OVERRIDE if override else None
    with pytest.raises(SafetyLimitError):
        pen.set_depth(depth_um / 1000, override_reason=reason)
    run_id = pen.status().run_id
    assert pen_refuses(pen, SetDepth, depth_um, override) is expected
    assert pen.status().depth_set_um == 0
    _nothing_happened(pen, run_id)


@pytest.mark.parametrize(
    ("depth_um", "override"),
    [(0, 0), (L.DEPTH_MIN_UM, 0), (L.DEPTH_SOFT_CAP_UM, 0), (L.DEPTH_MAX_UM, 1)],
)
def test_depth_inside_is_accepted(pen: Pen, depth_um: int, override: int) -> None:
    pen.set_depth(depth_um / 1000, override_reason=OVERRIDE if override else None)
    status = pen.status()
    assert (status.depth_set_um, status.soft_cap_override) == (depth_um, override)


def test_soft_cap_override_is_explicit_and_logged(pen: Pen) -> None:
    depth = L.DEPTH_SOFT_CAP_UM + 10
    with pytest.raises(SafetyLimitError, match="soft cap"):
        pen.set_depth(depth / 1000)
    with pytest.raises(SafetyLimitError):
        pen.set_depth(depth / 1000, override_reason="   ")
    with capture(pen) as cap:
        pen.set_depth(depth / 1000, override_reason=OVERRIDE)
        event = cap.wait_event(EventCode.SOFT_CAP_OVERRIDE, 2.0)
    assert event.value == depth
    assert pen.status().soft_cap_override == 1


# ------------------------------------------------------------------------------- areas
def _pen_answer_to_run(pen: Pen, profile: L.AreaProfile, depth_um: int, override: int) -> ErrorCode:
    """Set depth and rate past the host, then ask for a run in ``profile``'s area: the first
    refusal the pen gives (at SetDepth, or at Run)."""
    try:
        raw(pen, SetDepth, depth_um, override)
    except PenRefused as refused:
        return refused.code
    raw(pen, SetRate, max(profile.allowed_rates()))
    return pen_refuses(pen, Run, int(profile.area), RunMode.STROKES, 10, 0)


def _expected_above(profile: L.AreaProfile, depth_um: int, override: int) -> ErrorCode:
    if depth_um > L.DEPTH_MAX_UM:
        return E.DEPTH_OUT_OF_RANGE
    if depth_um > L.DEPTH_SOFT_CAP_UM and not override:
        return E.SOFT_CAP_NEEDS_OVERRIDE
    return E.DEPTH_ABOVE_AREA_MAX


@pytest.mark.parametrize("profile", AREAS, ids=lambda p: p.name)
def test_area_depth_just_outside_is_refused(pen: Pen, profile: L.AreaProfile) -> None:
    above = profile.max_um + 10
    with pytest.raises(SafetyLimitError):
        pen.set_depth(above / 1000, area=profile.area)
    cases = [(above, 0)]
    if profile.override_max_um > profile.max_um:
        over = profile.override_max_um + 10
        with pytest.raises(SafetyLimitError):
            pen.set_depth(over / 1000, area=profile.area, override_reason=OVERRIDE)
        cases.append((over, 1))
    run_id = pen.status().run_id
    for depth_um, override in cases:
        answer = _pen_answer_to_run(pen, profile, depth_um, override)
        assert answer is _expected_above(profile, depth_um, override), (depth_um, override)
        _nothing_happened(pen, run_id)


def _inside_cases() -> list[tuple[L.AreaProfile, int]]:
    cases = [(p, p.max_um) for p in AREAS]
    cases += [(p, p.override_max_um) for p in AREAS if p.override_max_um > p.max_um]
    return cases


@pytest.mark.parametrize(
    ("profile", "depth_um"), _inside_cases(), ids=lambda v: getattr(v, "name", str(v))
)
def test_area_depth_just_inside_runs_exactly(
    runnable_pen: Pen, profile: L.AreaProfile, depth_um: int
) -> None:
    pen = runnable_pen
    reason = OVERRIDE if depth_um > L.DEPTH_SOFT_CAP_UM else None
    rate = max(profile.allowed_rates())
    fixture = profile.area is L.Area.BENCH_FIXTURE
    if fixture:
        pen.enter_service_mode()  # the fixture runs only in service mode
    try:
        run_id = start_run(
            pen, area=profile.name, depth_mm=depth_um / 1000, rate_sps=rate, strokes=10,
            override_reason=reason,
        )  # fmt: skip
        report = pen.wait_run_end(run_id, timeout=5)
    finally:
        if fixture:
            pen.leave_service_mode()
    assert (report.outcome, report.strokes) == (RunOutcome.COMPLETED, 10)
    assert (report.depth_um, report.rate_sps, report.area) == (depth_um, rate, profile.area)


def test_the_bench_fixture_runs_only_in_service_mode(runnable_pen: Pen) -> None:
    """The pen's own rule, the host's check bypassed: a fixture run outside service mode and a
    treatment run inside it are both refused, with their own codes."""
    pen = runnable_pen
    pen.set_depth(0.5)
    pen.set_rate(90)
    fixture, forehead = int(L.Area.BENCH_FIXTURE), int(L.Area.FOREHEAD)
    code = pen_refuses(pen, Run, fixture, RunMode.STROKES, 10, 0)
    assert code is ErrorCode.SERVICE_MODE_REQUIRED
    pen.enter_service_mode()
    try:
        assert pen.status().service_mode == 1
        code = pen_refuses(pen, Run, forehead, RunMode.STROKES, 10, 0)
        assert code is ErrorCode.SERVICE_MODE_ACTIVE
    finally:
        pen.leave_service_mode()
    assert pen.status().service_mode == 0


def _rates_outside(profile: L.AreaProfile) -> list[int]:
    allowed = profile.allowed_rates()
    return [allowed[0] - 1, allowed[-1] + 1]


@pytest.mark.parametrize("profile", AREAS, ids=lambda p: p.name)
def test_area_rate_just_outside_is_refused(pen: Pen, profile: L.AreaProfile) -> None:
    allowed = profile.allowed_rates()
    for rate in (allowed[0], allowed[-1]):
        pen.set_rate(rate, area=profile.area)
    run_id = pen.status().run_id
    raw(pen, SetDepth, profile.default_um, 0)
    for rate in _rates_outside(profile):
        with pytest.raises(SafetyLimitError):
            pen.set_rate(rate, area=profile.area)
        if not L.RATE_MIN_SPS <= rate <= L.RATE_MAX_SPS:  # outside the wire range itself
            assert pen_refuses(pen, SetRate, rate) is E.RATE_OUT_OF_RANGE
        else:
            raw(pen, SetRate, rate)
            answer = pen_refuses(pen, Run, int(profile.area), RunMode.STROKES, 10, 0)
            assert answer is E.RATE_NOT_ALLOWED_FOR_AREA, rate
        _nothing_happened(pen, run_id)


@pytest.mark.parametrize("rate", [L.RATE_MIN_SPS - 1, L.RATE_MAX_SPS + 1])
def test_rate_outside_the_pen_range_is_refused(pen: Pen, rate: int) -> None:
    with pytest.raises(SafetyLimitError):
        pen.set_rate(rate)
    assert pen_refuses(pen, SetRate, rate) is E.RATE_OUT_OF_RANGE


@pytest.mark.parametrize("rate", [L.RATE_MIN_SPS, L.RATE_MAX_SPS])
def test_rate_at_the_pen_range_is_accepted(pen: Pen, rate: int) -> None:
    pen.set_rate(rate)
    assert pen.status().rate_set_sps == rate


# ------------------------------------------------------------------------------- run bounds
@pytest.mark.parametrize(
    ("strokes", "seconds"),
    [(0, None), (L.STROKES_MAX + 1, None), (None, 0.099), (None, 1800.001), (None, None), (5, 1.0)],
)
def test_run_bounds_outside_are_refused_by_the_host(
    pen: Pen, strokes: int | None, seconds: float | None
) -> None:
    with pytest.raises(SafetyLimitError):
        pen.start_run(area="forehead", strokes=strokes, seconds=seconds)


@pytest.mark.parametrize(
    ("mode", "strokes", "duration_ms", "expected"),
    [
        (RunMode.STROKES, 0, 0, E.STROKES_OUT_OF_RANGE),
        (RunMode.STROKES, L.STROKES_MAX + 1, 0, E.STROKES_OUT_OF_RANGE),
        (RunMode.DURATION, 0, L.RUN_DURATION_MIN_MS - 1, E.DURATION_OUT_OF_RANGE),
        (RunMode.DURATION, 0, L.RUN_DURATION_MAX_MS + 1, E.DURATION_OUT_OF_RANGE),
    ],
)
def test_run_bounds_outside_are_refused_by_the_pen(
    pen: Pen, mode: RunMode, strokes: int, duration_ms: int, expected: ErrorCode
) -> None:
    profile = L.AREAS[L.Area.FOREHEAD]
    raw(pen, SetDepth, profile.default_um, 0)
    raw(pen, SetRate, profile.allowed_rates()[0])
    run_id = pen.status().run_id
    assert pen_refuses(pen, Run, int(profile.area), mode, strokes, duration_ms) is expected
    _nothing_happened(pen, run_id)


@pytest.mark.parametrize("area", [0, len(L.AREAS) + 1])
def test_unknown_area_is_refused(pen: Pen, area: int) -> None:
    with pytest.raises(SafetyLimitError, match="unknown treatment area"):
        pen.start_run(area="elbow", strokes=10)
    run_id = pen.status().run_id
    assert pen_refuses(pen, Run, area, RunMode.STROKES, 10, 0) is E.UNKNOWN_AREA
    _nothing_happened(pen, run_id)


# ------------------------------------------------------------------------------- watchdog
@pytest.mark.parametrize("ms", [L.HEARTBEAT_MIN_MS - 1, L.HEARTBEAT_MAX_MS + 1])
def test_watchdog_outside_is_refused(pen: Pen, ms: int) -> None:
    with pytest.raises(SafetyLimitError):
        pen.set_watchdog(ms)
    assert pen_refuses(pen, SetWatchdog, ms) is E.WATCHDOG_OUT_OF_RANGE
    assert pen.status().watchdog_ms == L.HEARTBEAT_DEFAULT_MS


@pytest.mark.parametrize("ms", [L.HEARTBEAT_MIN_MS, L.HEARTBEAT_MAX_MS])
def test_watchdog_inside_is_accepted(pen: Pen, ms: int) -> None:
    pen.set_watchdog(ms)
    assert pen.status().watchdog_ms == ms


def test_telemetry_rate_outside_is_refused(pen: Pen) -> None:
    with pytest.raises(InvalidInput):
        pen.set_telemetry(L.TELEMETRY_MAX_HZ + 1)
    assert pen_refuses(pen, SetTelemetry, L.TELEMETRY_MAX_HZ + 1) is E.TELEMETRY_OUT_OF_RANGE
    assert isinstance(raw(pen, SetTelemetry, L.TELEMETRY_MAX_HZ), Ack)
    assert pen.status().telemetry_hz == L.TELEMETRY_MAX_HZ
