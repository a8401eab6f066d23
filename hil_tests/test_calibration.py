"""Calibration storage: write the staging bank, read it back, commit it, read the active bank.

Destructive: it commits a calibration. It writes back the very values the pen had when the
suite started (under a newer counter), so the pen behaves as before — only its calibration
counter moved on, which is exactly what a counter must do.
"""

from __future__ import annotations

import pytest

from micropen.hil_tests.capture import capture
from micropen.hil_tests.target import HilContext
from micropen.host import Pen
from micropen.protocol.messages import (
    CalBank,
    CalData,
    Capability,
    EventCode,
    calibration_crc,
)

pytestmark = [pytest.mark.hil_destructive, pytest.mark.hil_needs(Capability.CALIBRATION_STORAGE)]


def _fields(cal: CalData) -> tuple[int, ...]:
    return (
        cal.version,
        cal.depth_gain_ppm,
        cal.depth_offset_um,
        cal.rate_gain_ppm,
        cal.written_at,
        cal.counter,
    )


def test_calibration_write_read_commit_round_trip(pen: Pen, hil_context: HilContext) -> None:
    active = pen.cal_read(CalBank.ACTIVE)
    assert active.valid == 1
    original = hil_context.calibration
    counter = max(active.counter, pen.cal_read(CalBank.STAGING).counter) + 1
    crc = pen.cal_write(
        depth_gain_ppm=original.depth_gain_ppm,
        depth_offset_um=original.depth_offset_um,
        rate_gain_ppm=original.rate_gain_ppm,
        counter=counter,
        written_at=original.written_at + 1,
        version=original.version,
    )
    staged = pen.cal_read(CalBank.STAGING)
    expected = (
        original.version,
        original.depth_gain_ppm,
        original.depth_offset_um,
        original.rate_gain_ppm,
        original.written_at + 1,
        counter,
    )
    assert _fields(staged) == expected
    assert (staged.valid, staged.crc) == (1, crc) and crc == calibration_crc(*expected)
    assert _fields(pen.cal_read(CalBank.ACTIVE)) == _fields(active), "changed before the commit"
    with capture(pen) as cap:
        pen.cal_commit(crc)
        committed = cap.wait_event(EventCode.CALIBRATION_COMMITTED, 2.0)
    assert committed.value == counter
    now_active = pen.cal_read(CalBank.ACTIVE)
    assert _fields(now_active) == expected and now_active.valid == 1 and now_active.crc == crc
    status = pen.status()
    assert status.calibrated == 1
