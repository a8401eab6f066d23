"""Issue 16 finding 8: one pen under two URL spellings is refused the second time (the two
connections fought over the pen: 186 link losses in 10 s)."""

from __future__ import annotations

import asyncio

import pytest

from micropen.host.calibration import load_station
from micropen.host.errors import InvalidInput
from micropen.tools.station.hub import PenHub


def test_a_pen_already_connected_under_another_url_is_refused() -> None:
    async def scenario() -> None:
        hub = PenHub(station=load_station(), log=False)
        try:
            first = await hub.connect("sim://?seed=91", "tester")
            with pytest.raises(InvalidInput) as refused:
                await hub.connect("sim://?serial=SIM-000091&seed=92", "tester")
            assert str(refused.value) == (
                f"pen {first.serial} is already connected as {first.pid} (sim://?seed=91); "
                "use that one, or disconnect it first"
            )
            assert list(hub.pens) == [first.pid]
            assert (await first.refresh()).state.name == "IDLE"  # the first one still answers
        finally:
            await hub.close()

    asyncio.run(scenario())
