"""Small verbs the HIL tests share: raw commands past the host's checks, starting runs, reading
latencies off the telemetry, and the hazard invariants every run must keep."""

from __future__ import annotations

import time
from typing import Any

from micropen.host import Pen
from micropen.host.errors import PenRefused
from micropen.protocol import limits as L
from micropen.protocol.messages import (
    ErrorCode,
    FaultReport,
    PenState,
    RunMode,
    RunReport,
    Status,
    Telemetry,
)
from micropen.protocol.schema import Message

from .capture import Capture, steady_rate
from .rawlink import unchecked

__all__ = [
    "HOME_UM",
    "as_i32",
    "check_invariants",
    "pen_refuses",
    "raw",
    "retract_ms",
    "start_run",
    "steady_rate_of",
    "strokes_accounted",
    "wait_idle",
    "wait_in_position",
]

HOME_UM = 10  # a telemetry depth at or below this reads "retracted" (sensor noise is ~2 µm)
IN_POSITION_UM = 20
POSITION_TIMEOUT_S = 2.0


def raw(pen: Pen, cls: type[Message], *fields: Any) -> Message:
    """Send ``cls(cmd_id, *fields)`` through the open connection, skipping every host check
    (and the message's own range checks): the pen alone decides."""
    core = pen.async_pen
    return pen.run_coroutine(core.request(lambda c: unchecked(cls, c, *fields)))


def pen_refuses(pen: Pen, cls: type[Message], *fields: Any) -> ErrorCode:
    """The error code of the pen's Nak to a raw command; fails the test if it was accepted."""
    try:
        reply = raw(pen, cls, *fields)
    except PenRefused as refused:
        return refused.code
    raise AssertionError(f"the pen accepted {cls.__name__}{fields!r}: {reply!r}")


def start_run(
    pen: Pen,
    *,
    area: str,
    depth_mm: float,
    rate_sps: int,
    strokes: int | None = None,
    seconds: float | None = None,
    override_reason: str | None = None,
) -> int:
    """Set depth and rate (host-checked) and start a run; returns the run id."""
    pen.set_depth(depth_mm, area=area, override_reason=override_reason)
    pen.set_rate(rate_sps, area=area)
    wait_idle(pen)  # also refreshes the status the host re-checks before starting
    run_id: int = pen.start_run(area=area, strokes=strokes, seconds=seconds)
    return run_id


def as_i32(value: int) -> int:
    """A u32 as the signed 32-bit ``value`` field of an Event or Nak carries it."""
    return ((value + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000


def steady_rate_of(cap: Capture, rate_sps: int) -> float:
    """The steady stroke rate counted from the telemetry, as % error against ``rate_sps``."""
    counted, _ = steady_rate(cap.telemetry())
    return 100 * (counted / rate_sps - 1)


def wait_idle(pen: Pen, timeout: float = 1.0) -> Status:
    """Status once the pen is IDLE: after a run's report the needles are still on their way
    home (STOPPING) for up to RETRACT_MAX_MS, and a Run then is refused with BAD_STATE."""
    deadline = time.monotonic() + timeout
    status = pen.status()
    while status.state is PenState.STOPPING:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the pen was still stopping {timeout:g} s after the run (needles home "
                "within 50 ms)"
            )
        status = pen.status()
    return status


def wait_in_position(cap: Capture, depth_um: int, timeout: float = POSITION_TIMEOUT_S) -> Telemetry:
    """The first running sample with the needles at the set depth (telemetry must be on)."""
    return cap.wait_telemetry(
        lambda s: s.state is PenState.RUNNING and abs(s.depth_um - depth_um) <= IN_POSITION_UM,
        timeout,
        f"the needles at {depth_um} µm while running",
    )


def retract_ms(samples: list[Telemetry], since_t_ms: int) -> float:
    """Pen-clock ms from ``since_t_ms`` to the first sample at home (≤ HOME_UM)."""
    for s in samples:
        if s.t_ms >= since_t_ms and s.depth_um <= HOME_UM:
            return float(s.t_ms - since_t_ms)
    raise AssertionError(f"no telemetry sample at home after t={since_t_ms} ms")


def first_not_running(samples: list[Telemetry], after_t_ms: int = 0) -> Telemetry:
    """The first sample, after ``after_t_ms``, in which the pen no longer runs."""
    for s in samples:
        if s.t_ms >= after_t_ms and s.state is not PenState.RUNNING:
            return s
    raise AssertionError("the pen never left RUNNING in the telemetry")


def check_invariants(
    cap: Capture,
    *,
    depth_limit_um: int,
    run_targets: dict[int, tuple[RunMode, int]] | None = None,
    faults_allowed: bool = False,
) -> None:
    """Hazard invariants over everything captured:

    * no measured depth beyond the deepest commanded depth plus the fault tolerance (hazard 1);
    * a stroke-bounded run never reports more strokes than its target (hazard 3);
    * each run is reported once, and a completed stroke run reports exactly its target;
    * no fault report unless the test provoked one.
    """
    limit = depth_limit_um + L.DEPTH_FAULT_TOL_UM
    deepest = max((s.depth_um for s in cap.telemetry()), default=0)
    assert deepest <= limit, f"measured depth {deepest} µm beyond {limit} µm"
    reports = cap.of(RunReport)
    ids = [r.run_id for r in reports]
    assert len(ids) == len(set(ids)), f"a run was reported twice: {ids}"
    for report in reports:
        target = (run_targets or {}).get(report.run_id)
        if target is None or target[0] is not RunMode.STROKES:
            continue
        assert report.strokes <= target[1], f"run {report.run_id}: {report.strokes} > target"
        if report.outcome.name == "COMPLETED":
            assert report.strokes == target[1], f"run {report.run_id} completed short"
    if not faults_allowed:
        assert not cap.of(FaultReport), f"unexpected faults: {cap.of(FaultReport)}"


def strokes_accounted(before: Status, after: Status, report: RunReport) -> None:
    """Every counter the pen keeps moved by exactly the strokes its report names (hazard 3)."""
    assert after.run_id == report.run_id
    assert after.run_strokes == report.strokes
    assert after.lifetime_strokes - before.lifetime_strokes == report.strokes
    if after.cartridge_id == before.cartridge_id:
        assert after.cartridge_strokes - before.cartridge_strokes == report.strokes
