"""The same Pen API end to end over every transport: a real pty, a TCP socket and pyusb.

One back-to-back class (python-can style), subclassed per transport by changing how the pen is
reached. The simulator runs in a separate process for pty and TCP, so bytes cross the real
serial code path; USB goes through pyusb's real API with the simulated-device backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _bench_pairing import paired_usb_backend
from _waits import until

from micropen.host import AsyncPen, ConnectionNotice
from micropen.protocol.messages import PenState, RunOutcome

pytestmark = pytest.mark.looptime(False)  # real transports: their bytes take real time


@contextlib.contextmanager
def sim_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "micropen.tools.cli", "sim", "serve", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line, "the simulator printed no address"
        yield proc, line[0]
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class BackToBack:
    """Every transport must pass these. Subclasses named Test* provide the ``pen`` fixture;
    this base is not collected itself."""

    async def test_identity_and_status(self, pen: AsyncPen) -> None:
        assert pen.identity is not None and pen.identity.needle_count == 12
        assert pen.is_simulated  # a served simulator says so: logs label it SIMULATOR
        status = await pen.status()
        assert status.state in (PenState.IDLE, PenState.BOOT)

    async def test_run_exact_strokes(self, pen: AsyncPen) -> None:
        await pen.set_telemetry(100)
        report = await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=90)
        assert (report.outcome, report.strokes) == (RunOutcome.COMPLETED, 90)

    async def test_emergency_stop(self, pen: AsyncPen) -> None:
        await pen.set_depth(0.5)
        await pen.set_rate(90)
        await pen.status()
        run_id = await pen.start_run(area="forehead", seconds=10)
        await pen.emergency_stop()
        report = await pen.wait_run_end(run_id, timeout=2)
        assert report.outcome is RunOutcome.EMERGENCY_STOP
        await pen.clear_fault()

    async def test_statistics_count_traffic(self, pen: AsyncPen) -> None:
        await pen.status()
        stats = pen.statistics()
        assert stats["frames_sent"] > 0 and stats["frames_received"] > 0
        assert stats["crc_failures"] == 0


class TestPty(BackToBack):
    @pytest.fixture
    async def pen(self) -> AsyncIterator[AsyncPen]:
        with sim_process("--pty", "--seed", "11") as (_, path):
            p = await AsyncPen.open(path)
            yield p
            await p.close()


class TestTcp(BackToBack):
    @pytest.fixture
    async def pen(self) -> AsyncIterator[AsyncPen]:
        with sim_process("--tcp", "0", "--seed", "12") as (_, port):
            p = await AsyncPen.open(f"socket://127.0.0.1:{port}")
            yield p
            await p.close()


class TestUsb(BackToBack):
    @pytest.fixture
    async def pen(self) -> AsyncIterator[AsyncPen]:
        from micropen.sim.pen import SimConfig

        backend = paired_usb_backend([SimConfig(seed=13)])
        try:
            p = await AsyncPen.open("usb://1209:0001?serial=SIM-000013", usb_backend=backend)
            yield p
            await p.close()
        finally:
            backend.close()


async def test_pty_pen_reset_is_noticed_and_reported(tmp_path: Path) -> None:
    """Kill the pen process (a reset): the host notices within 1 s, reconnects to the new
    one at the same stable path, and reports that the pen rebooted."""
    link = tmp_path / "pen"
    notices: list[ConnectionNotice] = []
    with sim_process("--pty", "--link", str(link), "--seed", "21") as (proc, _):
        pen = await AsyncPen.open(str(link))
        try:
            pen.add_listener(
                lambda m: notices.append(m) if isinstance(m, ConnectionNotice) else None
            )
            old_boot = pen.identity.boot_id if pen.identity else 0
            proc.kill()
            proc.wait()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await until(lambda: notices, within=3, what="the host noticing the dead link")
            assert notices[0].kind == "lost"
            assert loop.time() - t0 < 1.0, "the host must notice a dead link within 1 s"
            with sim_process("--pty", "--link", str(link), "--seed", "21"):
                await pen.wait_connected(10)
                assert "rebooted" in [n.kind for n in notices]
                assert pen.identity is not None and pen.identity.boot_id != old_boot
                assert (await pen.status()).state is PenState.IDLE
        finally:
            await pen.close()


async def test_usb_unplug_is_noticed_and_a_replugged_pen_reconnects() -> None:
    from micropen.sim.pen import SimConfig
    from micropen.sim.usb_device import SimUsbPen, make_sim_usb_backend

    backend = make_sim_usb_backend([SimConfig(seed=14)])
    try:
        pen = await AsyncPen.open("usb://1209:0001", usb_backend=backend)
    except BaseException:
        backend.close()
        raise
    try:
        notices: list[str] = []
        pen.add_listener(
            lambda m: notices.append(m.kind) if isinstance(m, ConnectionNotice) else None
        )
        backend.unplug("SIM-000014")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await until(lambda: "lost" in notices, within=3, what="the host noticing the unplug")
        assert loop.time() - t0 < 1.0
        backend.plug(*SimUsbPen(SimConfig(seed=14), address=2).device())
        await pen.wait_connected(10)
        assert "rebooted" in notices  # a new pen process: a new boot id
        assert (await pen.status()).state is PenState.IDLE
    finally:
        await pen.close()
        backend.close()
