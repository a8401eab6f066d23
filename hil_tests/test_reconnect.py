"""Reconnect after a link drop, through the link proxy (so it works in front of any pen).

Three drops: the pen's replies lost for a while (its commands still arrive and are executed),
the line dead both ways (the pen's watchdog stops the run meanwhile), and the TCP connection
closed under the host (a cable pulled). In each, the host reconnects to the same boot, a
command pending across the drop is answered exactly once, and the run's report arrives with
its exact stroke count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from micropen.hil_tests.capture import Capture, capture
from micropen.hil_tests.drive import start_run, strokes_accounted, wait_idle
from micropen.hil_tests.proxied import through_proxy
from micropen.hil_tests.target import HilContext, ensure_cartridge
from micropen.host import Pen
from micropen.host.connection import ConnectionNotice
from micropen.protocol.messages import (
    Capability,
    EventCode,
    FaultCode,
    RunOutcome,
    SimParam,
)
from micropen.tools.proxy import PEN_TO_HOST, ProxyThread
from micropen.tools.proxy_faults import FaultSpec

OUTAGE_S = 1.2
RECONNECT_LIMIT_S = 2.0  # host liveness 0.75 s + reconnect backoff
DEAD = FaultSpec(drop_frames=1.0)


def _pending_command(ctx: HilContext, pen: Pen) -> Callable[[], Any]:
    """A command whose execution can be counted: SimSet emits one event per execution on a
    simulator; elsewhere GetStatus (its answer is checked, its execution cannot be counted)."""
    if ctx.has(Capability.SIMULATOR):
        value = ctx.baseline[SimParam.AMBIENT_DC]
        return lambda: pen.sim_set(SimParam.AMBIENT_DC, value)
    return pen.status


def _notices(cap: Capture, kind: str) -> list[tuple[float, ConnectionNotice]]:
    return [(h, n) for h, n in cap.stamped(ConnectionNotice) if n.kind == kind]


def _fault_for(proxy: ProxyThread, how: str) -> None:
    if how == "replies_lost":
        proxy.configure(DEAD, PEN_TO_HOST)
    elif how == "line_dead":
        proxy.disconnect(OUTAGE_S)
    else:
        proxy.drop_host()


def _heal(proxy: ProxyThread, how: str) -> None:
    if how == "replies_lost":
        proxy.configure(FaultSpec(), PEN_TO_HOST)


@pytest.mark.parametrize(
    ("how", "listen", "outcome"),
    [
        ("replies_lost", "pty", RunOutcome.STOPPED),
        ("line_dead", "pty", RunOutcome.WATCHDOG),
        ("cable_pulled", "tcp:0", RunOutcome.STOPPED),
    ],
    ids=["replies_lost", "line_dead", "cable_pulled"],
)
def test_reconnect_after_link_drop(
    hil_context: HilContext,
    hil_measure: Callable[..., object],
    hil_link_stats: Callable[[str, dict[str, Any]], None],
    how: str,
    listen: str,
    outcome: RunOutcome,
) -> None:
    with through_proxy(hil_context, listen=listen) as (proxy, pen):
        if ensure_cartridge(hil_context, pen) is None:
            pytest.skip("the pen has no usable cartridge: mount a new one and run again")
        before = wait_idle(pen)
        boot = pen.identity.boot_id
        with capture(pen) as cap, ThreadPoolExecutor(1) as pool:
            run_id = start_run(pen, area="cheeks", depth_mm=1.0, rate_sps=90, seconds=30.0)
            _fault_for(proxy, how)
            fault_at = time.monotonic()
            pending = pool.submit(_pending_command(hil_context, pen))
            if how != "cable_pulled":
                time.sleep(OUTAGE_S)  # the outage itself: a bounded wait on a real link
                _heal(proxy, how)
            healed_at = time.monotonic() if how == "replies_lost" else fault_at + OUTAGE_S
            if how == "cable_pulled":
                healed_at = fault_at
            cap.wait_for(lambda: _notices(cap, "reconnected"), RECONNECT_LIMIT_S + 2, "reconnect")
            pending.result(timeout=5)
            if outcome is RunOutcome.STOPPED:
                pen.stop()
            report = pen.wait_run_end(run_id, timeout=5)
            reconnected_at = _notices(cap, "reconnected")[0][0]
        assert pen.identity.boot_id == boot, "the pen restarted"
        assert not _notices(cap, "rebooted")
        assert report.outcome is outcome, report
        if outcome is RunOutcome.WATCHDOG:
            assert [f.fault for f in cap.faults()] == [FaultCode.WATCHDOG]
            pen.clear_fault()
        strokes_accounted(before, wait_idle(pen), report)
        if hil_context.has(Capability.SIMULATOR):
            changed = cap.events(EventCode.SIM_PARAMETER_CHANGED)
            assert len(changed) == 1, f"the pending command ran {len(changed)} times"
        slack = 0.05  # the proxy's own timing of the outage's end against the test's
        hil_measure(
            "reconnect_after_heal", reconnected_at - healed_at, "s", -slack, RECONNECT_LIMIT_S
        )
        hil_measure("outage_seen", reconnected_at - fault_at, "s", 0, OUTAGE_S + RECONNECT_LIMIT_S)
        stats = pen.statistics()
        assert stats["reconnects"] >= 1
        hil_link_stats("host", stats)
        hil_link_stats("proxy", proxy.statistics())
