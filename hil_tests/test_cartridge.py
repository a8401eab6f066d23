"""Cartridge rules: locked at the first run of a mounting, refused when re-mounted, retired when
pulled out while running. (Refusal of used, expired, unknown or missing cartridges is
``test_hazard_4`` in test_hazards.py.)

These need a bay the suite can load (the simulator's SimMountCartridge) and consume cartridges.
"""

from __future__ import annotations

import pytest

from micropen.hil_tests.capture import capture
from micropen.hil_tests.drive import pen_refuses, start_run, wait_in_position
from micropen.hil_tests.target import HilContext, mount
from micropen.host import Pen
from micropen.host.errors import PenNotReady
from micropen.protocol import limits as L
from micropen.protocol.messages import (
    Capability,
    CartridgeState,
    ErrorCode,
    EventCode,
    FaultCode,
    Run,
    RunMode,
    RunOutcome,
    SimParam,
)

pytestmark = [pytest.mark.hil_destructive, pytest.mark.hil_needs(Capability.SIMULATOR)]


def _pen_refuses_run(pen: Pen) -> ErrorCode:
    """Past the host's checks, straight to the pen: its own refusal code."""
    return pen_refuses(pen, Run, int(L.Area.FOREHEAD), RunMode.STROKES, 10, 0)


def _run(pen: Pen, *, strokes: int | None = None, seconds: float | None = None) -> int:
    return start_run(
        pen, area="forehead", depth_mm=0.5, rate_sps=90, strokes=strokes, seconds=seconds
    )


def test_first_run_locks_and_a_remount_is_refused(pen: Pen, hil_context: HilContext) -> None:
    cartridge = hil_context.cartridges.fresh()
    assert mount(pen, *cartridge) == CartridgeState.NEW
    with capture(pen) as cap:
        run_id = _run(pen, strokes=10)
        locked = cap.wait_event(EventCode.CARTRIDGE_LOCKED, 2.0)
        pen.wait_run_end(run_id, timeout=3)
    assert locked.value == cartridge[0] and locked.run_id == run_id
    assert pen.cartridge().state is CartridgeState.LOCKED
    run_id = _run(pen, strokes=10)
    assert pen.wait_run_end(run_id, timeout=3).outcome is RunOutcome.COMPLETED
    mount(pen, 0, "", 0, 0)
    assert mount(pen, *cartridge) == CartridgeState.REFUSED
    with pytest.raises(PenNotReady, match="used before"):  # the host's own check
        _run(pen, strokes=10)
    assert _pen_refuses_run(pen) is ErrorCode.CARTRIDGE_USED  # and the pen's


@pytest.mark.hil_needs(Capability.DEVICE_FAULT_INJECTION)
def test_cartridge_pulled_while_running_is_retired(pen: Pen, hil_context: HilContext) -> None:
    cartridge = hil_context.cartridges.fresh()
    mount(pen, *cartridge)
    pen.set_telemetry(200)
    with capture(pen) as cap:
        run_id = _run(pen, seconds=10.0)
        wait_in_position(cap, 500)
        pen.sim_set(SimParam.CARTRIDGE_REMOVE, 1)
        report = pen.wait_run_end(run_id, timeout=3)
        cap.wait_event(EventCode.RETRACTED, 2.0, run_id)
    assert report.outcome is RunOutcome.FAULT
    assert [f.fault for f in cap.faults()] == [FaultCode.CARTRIDGE_REMOVED]
    pen.clear_fault()
    assert mount(pen, *cartridge) == CartridgeState.REFUSED
    with pytest.raises(PenNotReady, match="used before"):  # the host's own check
        _run(pen, strokes=10)
    assert _pen_refuses_run(pen) is ErrorCode.CARTRIDGE_USED  # and the pen's
