"""Through a bad line — 2 % of frames lost and one byte in a thousand with a flipped bit, each
way — every command is executed exactly once and every stroke is counted.

The line is the link proxy (``micropen proxy``), so the same test runs in front of a bench pen.
Exactly-once is checked where the pen shows it: on a simulator each ``SimSet`` emits one
``SIM_PARAMETER_CHANGED`` event carrying the parameter, so the sequence of events must equal,
one for one, the sequence of commands the host sent (a duplicate inserts one, a loss removes
one); on any pen each ``Run`` takes the next run id, so the ids must be consecutive.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from micropen.hil_tests.capture import capture
from micropen.hil_tests.drive import check_invariants, start_run, strokes_accounted, wait_idle
from micropen.hil_tests.proxied import through_proxy
from micropen.hil_tests.target import HilContext, ensure_cartridge
from micropen.host import Pen
from micropen.host.connection import AsyncPen
from micropen.protocol.messages import (
    Ack,
    Capability,
    EventCode,
    RunMode,
    RunOutcome,
    SimParam,
    SimSet,
)
from micropen.tools.proxy_faults import FaultSpec

pytestmark = pytest.mark.slow

BAD_LINE = FaultSpec(drop_frames=0.02, corrupt_bytes=1e-3)
SEED = 20_250_101
COMMANDS = 10_000
WINDOW = 16  # commands in flight, as a busy host would have
HARMLESS = (SimParam.AMBIENT_DC, SimParam.OVERHEAT, SimParam.DEPTH_DRIFT_UM, SimParam.STALL)
RUNS, RUN_STROKES = 4, 100


async def _send_all(core: AsyncPen, plan: list[tuple[SimParam, int]], sent: list[SimParam]) -> None:
    """Every command of ``plan`` with WINDOW in flight; ``sent`` gets the order they went out
    in (the command is built at the moment it is handed to the link)."""
    slots = asyncio.Semaphore(WINDOW)

    async def one(param: SimParam, value: int) -> None:
        def build(cmd_id: int) -> SimSet:
            sent.append(param)
            return SimSet(cmd_id, param, value)

        async with slots:
            reply = await core.request(build)
        assert isinstance(reply, Ack), reply

    await asyncio.gather(*(one(p, v) for p, v in plan))


@pytest.mark.hil_needs(Capability.SIMULATOR)
def test_10000_commands_execute_exactly_once(
    hil_context: HilContext,
    hil_measure: Callable[..., object],
    hil_link_stats: Callable[[str, dict[str, Any]], None],
) -> None:
    rng = random.Random(SEED)
    plan = [(p, hil_context.baseline[p]) for p in rng.choices(HARMLESS, k=COMMANDS)]
    sent: list[SimParam] = []
    with through_proxy(hil_context, BAD_LINE, seed=SEED) as (proxy, pen), capture(pen) as cap:
        t0 = time.monotonic()
        pen.run_coroutine(_send_all(pen.async_pen, plan, sent))
        elapsed = time.monotonic() - t0
        cap.wait_for(
            lambda: len(cap.events(EventCode.SIM_PARAMETER_CHANGED)) >= COMMANDS,
            10.0,
            f"{COMMANDS} SIM_PARAMETER_CHANGED events",
        )
        pen.status()  # every event sent before this reply has arrived
        host, line = pen.statistics(), proxy.statistics()
    executed = [SimParam(e.value) for e in cap.events(EventCode.SIM_PARAMETER_CHANGED)]
    assert len(executed) == COMMANDS, f"{len(executed)} executions for {COMMANDS} commands"
    assert executed == sent, "an execution was duplicated, lost or reordered"
    assert host["late_replies"] == 0 and host["reconnects"] == 0
    assert not cap.faults()
    _report_line(hil_measure, hil_link_stats, host, line)
    hil_measure("commands_per_s", COMMANDS / elapsed, "1/s", 100, None)


SIM_LINE = FaultSpec(drop_frames=0.02, corrupt_frames=0.03)  # ≈ 1e-3 per byte on ~30-byte frames
SIM_COMMANDS = 2_000


@pytest.mark.hil_needs(Capability.SIMULATOR, Capability.LINK_FAULT_INJECTION)
def test_the_same_faults_inside_the_simulator(
    pen: Pen,
    hil_context: HilContext,
    hil_measure: Callable[..., object],
    hil_link_stats: Callable[[str, dict[str, Any]], None],
) -> None:
    """One fault vocabulary: the proxy's frame faults, given to the simulator's own line as
    SimSet parameters (FaultSpec.sim_params), and the same exactly-once check holds."""
    rng = random.Random(SEED + 2)
    plan = [(p, hil_context.baseline[p]) for p in rng.choices(HARMLESS, k=SIM_COMMANDS)]
    sent: list[SimParam] = []
    faults = SIM_LINE.sim_params()
    retransmits = pen.statistics()["retransmits"]
    for param, value in faults.items():
        pen.sim_set(param, value)
    try:
        with capture(pen) as cap:
            pen.run_coroutine(_send_all(pen.async_pen, plan, sent))
            cap.wait_for(
                lambda: len(cap.events(EventCode.SIM_PARAMETER_CHANGED)) >= SIM_COMMANDS,
                10.0,
                f"{SIM_COMMANDS} SIM_PARAMETER_CHANGED events",
            )
            pen.status()
    finally:
        for param in faults:
            pen.sim_set(param, 0)
    executed = [SimParam(e.value) for e in cap.events(EventCode.SIM_PARAMETER_CHANGED)]
    assert executed == sent, "an execution was duplicated, lost or reordered"
    host = pen.statistics()
    hil_link_stats("host", host)
    hil_measure("retransmits", host["retransmits"] - retransmits, "frames", 1, None)


def _report_line(
    hil_measure: Callable[..., object],
    hil_link_stats: Callable[[str, dict[str, Any]], None],
    host: dict[str, Any],
    line: dict[str, Any],
) -> None:
    """The line really was as bad as asked, both ways (within 4 sigma of the binomial)."""
    hil_link_stats("host", host)
    hil_link_stats("proxy", line)
    for direction in ("host_to_pen", "pen_to_host"):
        d = line[direction]
        for name, hits, trials, p, scale, unit in (
            ("frame_loss", d["dropped"], d["frames"], BAD_LINE.drop_frames, 100, "%"),
            ("bit_errors", d["corrupted_bytes"], d["bytes"], BAD_LINE.corrupt_bytes, 1000, "‰"),
        ):
            sigma = math.sqrt(p * (1 - p) / trials)
            low, high = max(0.0, p - 4 * sigma) * scale, (p + 4 * sigma) * scale
            hil_measure(f"{direction}_{name}", scale * hits / trials, unit, low, high)


def test_runs_are_counted_exactly_through_a_bad_line(
    hil_context: HilContext,
    hil_measure: Callable[..., object],
    hil_link_stats: Callable[[str, dict[str, Any]], None],
) -> None:
    with through_proxy(hil_context, BAD_LINE, seed=SEED + 1) as (proxy, pen):
        if ensure_cartridge(hil_context, pen) is None:
            pytest.skip("the pen has no usable cartridge: mount a new one and run again")
        pen.set_telemetry(100)
        first = wait_idle(pen)
        targets: dict[int, tuple[RunMode, int]] = {}
        with capture(pen) as cap:
            for _ in range(RUNS):
                before = wait_idle(pen)
                run_id = start_run(
                    pen, area="cheeks", depth_mm=1.0, rate_sps=110, strokes=RUN_STROKES
                )
                targets[run_id] = (RunMode.STROKES, RUN_STROKES)
                report = pen.wait_run_end(run_id, timeout=RUN_STROKES / 110 + 5)
                assert (report.outcome, report.strokes) == (RunOutcome.COMPLETED, RUN_STROKES)
                strokes_accounted(before, wait_idle(pen), report)
            last = wait_idle(pen)
        ids = sorted(targets)
        assert ids == list(range(first.run_id + 1, first.run_id + 1 + RUNS)), "a Run ran twice"
        assert last.lifetime_strokes - first.lifetime_strokes == RUNS * RUN_STROKES
        check_invariants(cap, depth_limit_um=1000, run_targets=targets)
        _report_line(hil_measure, hil_link_stats, pen.statistics(), proxy.statistics())
