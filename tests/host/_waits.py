"""Bounded waits for host tests: each names what it waits for and fails when it does not
happen, instead of sleeping for a while and hoping.

Under virtual time (tests/host/conftest.py) a wait costs no wall time: the loop's clock jumps
to the next timer. Prefer a listener where the pen tells the host (notices, reports); these
are for states nothing announces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from micropen.host import AsyncPen, ConnectionNotice
from micropen.host.transports.sim import SimTransport
from micropen.protocol.messages import PenState, SimParam


async def until(
    predicate: Callable[[], object], *, within: float, what: str, step: float = 0.001
) -> None:
    """Until ``predicate()`` is true, looking every ``step`` s (0: every turn of the loop);
    AssertionError naming ``what`` after ``within`` s."""
    try:
        async with asyncio.timeout(within):
            while not predicate():
                await asyncio.sleep(step)
    except TimeoutError:
        raise AssertionError(f"{what} did not happen within {within} s") from None


def sim_of(pen: AsyncPen) -> SimTransport:
    assert isinstance(pen.transport, SimTransport)
    return pen.transport


def strokes_delivered(pen: AsyncPen) -> int:
    """What the simulated pen's motor has delivered in the current run (0 when idle)."""
    sim = sim_of(pen).pen
    return int(sim.physics.phase) if sim.state is PenState.RUNNING else 0


async def delivering(pen: AsyncPen, strokes: int = 1) -> None:
    """Until the pen's run has delivered ``strokes``."""
    await until(
        lambda: strokes_delivered(pen) >= strokes, within=2.0, what=f"{strokes} strokes delivered"
    )


def pull_the_cable(pen: AsyncPen, ms: int) -> None:
    """Nothing crosses the link for ``ms`` from now (done to the pen, not over the link)."""
    transport = sim_of(pen)
    with transport._lock:
        transport.pen.set_param(SimParam.DISCONNECT, ms, transport.now())


def notices(pen: AsyncPen) -> list[ConnectionNotice]:
    """Every connection notice from now on, in order."""
    seen: list[ConnectionNotice] = []
    pen.add_listener(lambda m: seen.append(m) if isinstance(m, ConnectionNotice) else None)
    return seen
