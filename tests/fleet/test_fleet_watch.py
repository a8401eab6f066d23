"""FleetWatcher: the live view of a pen that faults during a run, and of one that goes away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from _fleet_helpers import WATCHER, FleetBroker

from micropen.host import AsyncPen
from micropen.host.errors import HostError
from micropen.host.fleet import BridgeConfig, FleetBridge, FleetWatcher, PenView
from micropen.host.fleet.watch import view_from_status
from micropen.protocol.messages import SimParam

SERIAL = "SIM-000010"


async def _until(updates: AsyncIterator[PenView], seen: Callable[[PenView], bool]) -> PenView:
    async with asyncio.timeout(10):
        async for view in updates:
            if seen(view):
                return view
    raise AssertionError("the watcher stopped")


async def test_a_fault_shows_up_in_the_watch_view(
    fleet_broker: FleetBroker, tmp_path: Path
) -> None:
    pen = await AsyncPen.open("sim://?seed=10")
    config = BridgeConfig(site="watch", queue_dir=tmp_path / "q", calibration_due="2031-02-03")
    watcher = FleetWatcher(fleet_broker.config(WATCHER), site="watch")
    try:
        async with (
            contextlib.aclosing(watcher.updates()) as views,
            FleetBridge(pen, fleet_broker.config(SERIAL), config) as bridge,
        ):
            await bridge.wait_connected(5)
            first = await _until(views, lambda v: v.online)
            await pen.set_depth(0.5, area="forehead")
            await pen.set_rate(90, area="forehead")
            await pen.status()
            await pen.start_run(area="forehead", seconds=20)
            await pen.sim_set(SimParam.STALL, 1)  # the motor jams: the pen faults and stops
            faulted = await _until(views, lambda v: v.last_fault is not None)
            await _until(views, lambda v: v.state == "FAULT")
            await pen.sim_set(SimParam.STALL, 0)
            with contextlib.suppress(HostError):
                await pen.clear_fault()
            await bridge.close()
            gone = await _until(views, lambda v: not v.online)
    finally:
        await pen.close()
    assert (first.serial, first.site, first.calibration_due) == (SERIAL, "watch", "2031-02-03")
    assert first.cartridge and first.link == "up"
    assert faulted.last_fault is not None and faulted.last_fault.startswith("STALL")
    assert gone.reason == "bridge stopped" and gone.last_fault == faulted.last_fault
    assert watcher.pens[("watch", SERIAL)] == gone


def test_views_keep_what_is_known_when_a_pen_goes_offline() -> None:
    online = view_from_status(
        "s", "P", {"online": True, "state": "IDLE", "cartridge": {"id": 5, "state": "NEW"},
                   "run": None, "last_fault": {"code": "STALL", "value": 1400}},
        None,
    )  # fmt: skip
    offline = view_from_status("s", "P", {"online": False, "reason": "connection lost"}, online)
    assert (online.cartridge, online.last_fault) == ("5 NEW", "STALL (1400)")
    assert (offline.online, offline.state, offline.reason) == (False, "IDLE", "connection lost")


def test_the_watcher_ignores_malformed_and_foreign_messages() -> None:
    watcher = FleetWatcher(None)  # type: ignore[arg-type]
    assert watcher.apply("micropen/v1/s/P/status", b"not json") is None
    assert watcher.apply("elsewhere/topic", b"{}") is None
    assert watcher.apply("micropen/v1/s/P/status", b'{"schema": "micropen.status/9"}') is None
    assert watcher.counters["bad_payloads"] == 3
    view = watcher.apply(
        "micropen/v1/s/P/status",
        b'{"schema": "micropen.status/1", "site": "forged", "serial": "X", "online": true}',
    )
    assert view is not None and (view.site, view.serial) == ("s", "P"), "the topic is trusted"
    assert watcher.apply("micropen/v1/s/P/status", b"") == PenView(
        "s", "P", False, reason="removed"
    )
    assert watcher.pens == {}
