"""A Stop sent while a Run is unanswered must win, whatever the line does.

The host sends Stop urgent: the pen obeys it on arrival, even before earlier frames that are
still missing. If the Run's frame was lost, the pen obeys Stop first (nothing is running: Ack 0)
and then the retransmitted Run — and would be left needling after the operator stopped it
(hazard 2; found by the protocol document's review). The host therefore stops again once a Run
it sent before a Stop is answered (docs/protocol.md, "Link rules": urgent messages).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import looptime
import pytest
from _waits import sim_of, until

from micropen.host import AsyncPen
from micropen.protocol.framing import HEADER, SACK
from micropen.protocol.link import Flag
from micropen.protocol.messages import Ack, PenState, Run, RunOutcome, Stop


@pytest.fixture
async def pen() -> AsyncIterator[AsyncPen]:
    with looptime.enabled():
        p = await AsyncPen.open("sim://?seed=5")
    yield p
    with looptime.enabled():
        await p.close()


def _drop_the_first_run_frame(pen: AsyncPen) -> list[bytes]:
    """The next frame carrying a Run never reaches the pen (its retransmission does)."""
    from cobs import cobs

    transport = sim_of(pen)
    write = transport.write
    dropped: list[bytes] = []

    def lossy(data: bytes) -> None:
        kept = bytearray()
        for piece in bytes(data).split(b"\x00"):
            if not piece:
                continue
            raw = cobs.decode(piece)
            start = HEADER.size + (SACK.size if raw[0] & Flag.SACK else 0)  # a bitmap first
            carries_run = len(raw) > start and raw[0] & Flag.DATA and raw[start] == Run.ID
            if carries_run and not dropped:
                dropped.append(raw)
                continue
            kept += b"\x00" + piece + b"\x00"
        if kept:
            write(bytes(kept))

    transport.write = lossy  # type: ignore[method-assign]
    return dropped


async def test_a_stop_that_overtakes_a_lost_run_still_stops_it(pen: AsyncPen) -> None:
    await pen.set_depth(0.5, area="forehead")
    await pen.set_rate(90, area="forehead")
    dropped = _drop_the_first_run_frame(pen)
    starting = asyncio.create_task(pen.start_run(area="forehead", seconds=60))
    await until(lambda: dropped, within=1.0, what="the Run frame lost on the line")
    stopped = await pen.request(lambda c: Stop(c), urgent=True)
    # the overtaking happened: the pen obeyed this Stop with no run going (Ack.value: none)
    assert isinstance(stopped, Ack) and stopped.value == 0
    run_id = await starting
    report = await pen.wait_run_end(run_id, timeout=2.0)
    assert report.outcome is RunOutcome.STOPPED
    assert sim_of(pen).pen.state is not PenState.RUNNING
