"""The simulated pen on a real pseudo-terminal, opened with pyserial as a host opens a pen."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from _pen_host import handshake, read_line, served_in_thread, stop_child

from micropen.protocol import limits as L
from micropen.sim.clock import RealClock
from micropen.sim.pen import SimConfig, SimulatedPen
from micropen.sim.serve import MAX_WAIT_S, PenServer, PtyTransport, StopSignal, serve_pty

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX ptys only")

PORT_TIMEOUT_S = 0.02


def _open(path: str) -> serial.Serial:
    return serial.Serial(path, timeout=PORT_TIMEOUT_S)


@pytest.fixture
def served() -> Iterator[PenServer]:
    with served_in_thread(SimConfig(seed=3), PtyTransport()) as server:
        yield server


def test_handshake_then_reconnect_in_thread(served: PenServer) -> None:
    path = str(served.describe()["pty"])
    with _open(path) as port:
        first = handshake(port)
    assert first.needle_count == L.NEEDLE_COUNT
    assert first.serial == served.pen.identity.serial
    with _open(path) as port:  # the host closed the device and opens it again
        second = handshake(port)
    assert second.boot_id == first.boot_id  # same pen, still running: not a reboot
    assert served.statistics().input_flushes >= 2  # each open dropped the stale output


def test_idle_server_sleeps(served: PenServer) -> None:
    """No busy loop: an idle pen wakes the loop about once per MAX_WAIT_S at most."""
    before = served.statistics().wakeups
    threading.Event().wait(0.3)  # measuring idleness, not waiting for an event
    woke = served.statistics().wakeups - before
    assert woke <= 3 * (0.3 / MAX_WAIT_S), woke


def test_serve_pty_function_with_link_and_stop_signal(tmp_path: Path) -> None:
    pen = SimulatedPen(SimConfig(seed=5))  # its time starts at 0; served time continues from it
    link = tmp_path / "pen0"
    paths: queue.Queue[str] = queue.Queue()
    stop = StopSignal()
    thread = threading.Thread(
        target=serve_pty,
        kwargs={
            "pen": pen,
            "link_path": str(link),
            "ready": paths.put,
            "stop": stop,
        },
    )
    thread.start()
    try:
        path = paths.get(timeout=5.0)
        assert os.path.realpath(link) == path
        with _open(str(link)) as port:
            assert handshake(port).needle_count == L.NEEDLE_COUNT
    finally:
        stop.set()
        thread.join(5.0)
    assert not thread.is_alive()
    assert not link.exists()  # the server removed its symlink
    assert 0.0 < pen.now < 5.0  # no jump to the monotonic clock's origin


def test_master_hang_up_is_survived() -> None:
    """Without the server holding the slave, every host close hangs the master up (EIO)."""
    clock = RealClock()
    pen = SimulatedPen(SimConfig(seed=4), now=clock.now())
    with PenServer(pen, PtyTransport(hold_slave=False), clock=clock) as server:
        thread = threading.Thread(target=server.run)
        thread.start()
        try:
            path = str(server.describe()["pty"])
            for _ in range(2):
                with _open(path) as port:
                    assert handshake(port).needle_count == L.NEEDLE_COUNT
            start, before = time.monotonic(), server.statistics().wakeups
            threading.Event().wait(0.3)  # nobody holds the slave now: the master is hung up
            rate = (server.statistics().wakeups - before) / (time.monotonic() - start)
        finally:
            server.stop()
            thread.join(5.0)
    assert not thread.is_alive()
    assert server.statistics().disconnects >= 1  # at least the last close was a hang-up
    assert rate < 4 / MAX_WAIT_S, f"{rate:.0f} wakeups/s while hung up: a busy loop"


@pytest.mark.parametrize("as_json", [False, True])
def test_module_subprocess_reconnect_and_sigterm(as_json: bool) -> None:
    argv = [sys.executable, "-m", "micropen.sim.serve", "--pty", "--seed", "9"]
    proc = subprocess.Popen(
        [*argv, "--json"] if as_json else argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = read_line(proc.stdout)  # type: ignore[arg-type]
        path = json.loads(line)["pty"] if as_json else line.split()[0]
        with _open(path) as port:
            first = handshake(port)
        with _open(path) as port:
            second = handshake(port)
        assert first.needle_count == second.needle_count == L.NEEDLE_COUNT
        assert first.boot_id == second.boot_id
    finally:
        status = stop_child(proc)
    assert status == 0, proc.stderr.read() if proc.stderr else status
