"""Issue 16, finding 4: a calibration that ends on an unexpected exception (the review's
resolution 1e308 gave an OverflowError) ends its job — failed, with the reason shown — the pen
is made safe, and a new calibration of the pen can start. Driven on the hub directly (no HTTP),
events read from the pen's channel with bounded waits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from micropen.host.calibration import load_station
from micropen.tools.station import hub as hub_module
from micropen.tools.station.hub import PenHub, PenSession

WAIT_S = 30.0


async def _until_ended(session: PenSession, queue: asyncio.Queue[dict[str, Any]]) -> None:
    async with asyncio.timeout(WAIT_S):
        while True:
            event = await queue.get()
            if event["type"] == "calibration" and event["job"]["state"] not in (
                "starting",
                "running",
            ):
                return


def test_an_unexpected_error_ends_the_job_and_the_pen_is_safe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = hub_module.run_calibration

    async def overflowing(*args: Any, **kwargs: Any) -> Any:
        progress = kwargs["progress"]

        def exploding(event: Any) -> None:
            progress(event)
            if event.point is not None:  # mid-procedure, the pen at a set point
                raise OverflowError("int too large to convert to float")

        kwargs["progress"] = exploding
        return await real(*args, **kwargs)

    async def scenario() -> None:
        hub = PenHub(station=load_station(), log=False)
        try:
            session = await hub.connect("sim://?seed=61", "tester")
            queue = session.channel.subscribe()
            monkeypatch.setattr(hub_module, "run_calibration", overflowing)
            job = hub.start_calibration(
                session, procedure="depth", gauge="sim", technician="Kim", readings=2
            )
            await _until_ended(session, queue)
            assert job.state == "failed" and job.outcome == "incomplete"
            assert job.reason is not None and "OverflowError" in job.reason
            assert "made safe" in job.reason
            assert job.task is not None and job.task.done()
            assert not session.abort_calibration("test")  # nothing left running
            status = await session.refresh()
            assert status.state.name == "IDLE", status
            assert session.sample is not None and session.sample.depth_um <= 10  # 10 µm: home
            # the pen can be calibrated again
            monkeypatch.setattr(hub_module, "run_calibration", real)
            again = hub.start_calibration(
                session, procedure="depth", gauge="sim", technician="Kim", readings=2
            )
            await _until_ended(session, queue)
            assert again.state == "done", again.reason
        finally:
            await hub.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("how", "why"),
    [
        ("stop", "stopped with the stop button at the station"),
        ("abort", "aborted at the station"),
        ("shutdown", "the station was shut down"),
    ],
)
def test_the_record_says_how_the_station_ended_a_calibration(how: str, why: str) -> None:
    """Issue 16 finding 6: not "cancelled (Ctrl-C)" — the station's reason, in the job and in
    the stored record."""
    from micropen.host.calibration import RecordStore

    async def scenario() -> None:
        hub = PenHub(station=load_station(), log=False)
        closed = False
        try:
            session = await hub.connect("sim://?seed=62", "tester")
            queue = session.channel.subscribe()
            job = hub.start_calibration(
                session, procedure="depth", gauge="sim", technician="Kim", readings=2
            )
            async with asyncio.timeout(WAIT_S):
                while (await queue.get())["type"] != "point":
                    pass
            if how == "stop":
                await session.stop()
            elif how == "abort":
                assert session.abort_calibration("aborted at the station")
            else:
                await hub.close()
                closed = True
            assert job.task is not None
            async with asyncio.timeout(WAIT_S):  # a job that never ends fails here, as a hang
                await asyncio.gather(job.task, return_exceptions=True)
            assert job.state == "aborted", job.to_dict()
            assert job.reason is not None and why in job.reason and "Ctrl-C" not in job.reason
            [record] = RecordStore().history(session.serial)
            assert record.reason.endswith(f"cancelled: {why}"), record.reason
        finally:
            if not closed:
                await hub.close()

    asyncio.run(scenario())
