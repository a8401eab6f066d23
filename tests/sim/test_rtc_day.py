"""The simulated pen's real-time clock runs on: a long `sim serve` sees the date change.

It used to be fixed when the unit was configured, so a simulator left running for days never
saw a cartridge expire."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from micropen.protocol.errors import LocalProtocolError
from micropen.protocol.messages import CartridgeState
from micropen.sim.pen import SimConfig, SimulatedPen

DAY = 20_000  # 2024-10-04


def _mount_expiring_today(pen: SimulatedPen, cartridge_id: int, now: float) -> CartridgeState:
    pen.mount_cartridge(cartridge_id, "L-RTC", DAY - 30, DAY, now)  # expires at the end of DAY
    return pen.firmware.slot.state


def test_the_date_changes_at_midnight_on_the_pens_clock() -> None:
    # powered on 400 s before midnight UTC, at an arbitrary point of the pen's clock
    pen = SimulatedPen(SimConfig(seed=5, today_day=DAY, day_seconds=86_000.0), now=1_000.0)
    assert pen.today(1_000.0) == DAY and pen.today(1_399.9) == DAY
    assert _mount_expiring_today(pen, 0x51, 1_000.0) is CartridgeState.NEW
    assert pen.today(1_400.0) == DAY + 1
    assert _mount_expiring_today(pen, 0x52, 1_500.0) is CartridgeState.REFUSED  # expired now
    pen.power_cycle(1_600.0)  # the clock is battery-backed: a reset keeps the date
    assert pen.today(1_600.0) == DAY + 1
    assert pen.today(1_000.0 + 400 + 3 * 86_400) == DAY + 4


def test_by_default_the_clock_is_the_real_date_and_time() -> None:
    before = datetime.now(UTC)
    config = SimConfig()
    after = datetime.now(UTC)
    assert config.today_day in {(d.date() - date(1970, 1, 1)).days for d in (before, after)}
    midnight = before.replace(hour=0, minute=0, second=0, microsecond=0)
    assert (before - midnight).total_seconds() - 1 <= config.day_seconds < 86_400
    assert SimConfig(today_day=DAY).day_seconds == 0.0  # a pinned day starts at its midnight


@pytest.mark.parametrize("seconds", [-0.5, 86_400.0, float("nan")])
def test_seconds_into_the_day_are_checked(seconds: float) -> None:
    with pytest.raises(LocalProtocolError, match="day_seconds"):
        SimConfig(today_day=DAY, day_seconds=seconds)
