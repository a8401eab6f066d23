"""The simulated pen on TCP, opened with pyserial's ``socket://`` URL as a host opens a pen."""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import serial
from _pen_host import PenHost, handshake, read_line, served_in_thread, stop_child

from micropen.protocol import limits as L
from micropen.sim.clock import RealClock
from micropen.sim.pen import SimConfig, SimulatedPen
from micropen.sim.serve import PenServer, StopSignal, TcpTransport, serve_tcp

PORT_TIMEOUT_S = 0.02


def _open(port: int) -> serial.SerialBase:
    return serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=PORT_TIMEOUT_S)


@pytest.fixture
def served() -> Iterator[PenServer]:
    with served_in_thread(SimConfig(seed=11), TcpTransport()) as server:
        yield server


def test_handshake_then_reconnect_in_thread(served: PenServer) -> None:
    port = int(served.describe()["tcp"])
    with _open(port) as conn:
        first = handshake(conn)
    with _open(port) as conn:
        second = handshake(conn)
    assert first.needle_count == second.needle_count == L.NEEDLE_COUNT
    assert first.boot_id == second.boot_id  # the pen kept running between connections
    stats = served.statistics()
    assert stats.connections == 2
    assert stats.bytes_in > 0 and stats.bytes_out > 0


def test_new_connection_replaces_the_current_one(served: PenServer) -> None:
    port = int(served.describe()["tcp"])
    with _open(port) as old, _open(port) as new:
        assert handshake(new).needle_count == L.NEEDLE_COUNT
        # the server closed the old connection: the first read sees EOF, not data
        raw = old._socket  # pyserial's socket handler: reading it directly shows the EOF
        raw.settimeout(2.0)
        assert raw.recv(1) == b""
    assert served.statistics().connections == 2


def test_host_vanishing_mid_session_is_survived(served: PenServer) -> None:
    """A host that resets its connection (RST, not FIN) is dropped; the next one is served."""
    port = int(served.describe()["tcp"])
    conn = _open(port)
    host = PenHost(conn)
    host.connect()
    raw: socket.socket = conn._socket
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()  # linger 0: the kernel sends RST
    with _open(port) as again:
        assert handshake(again).needle_count == L.NEEDLE_COUNT


def test_serve_tcp_function_reports_port_and_stops() -> None:
    clock = RealClock()
    pen = SimulatedPen(SimConfig(seed=12), now=clock.now())
    ports: queue.Queue[int] = queue.Queue()
    stop = StopSignal()
    thread = threading.Thread(
        target=serve_tcp, args=(pen,), kwargs={"clock": clock, "ready": ports.put, "stop": stop}
    )
    thread.start()
    try:
        port = ports.get(timeout=5.0)
        assert port > 0
        with _open(port) as conn:
            assert handshake(conn).serial == pen.identity.serial
    finally:
        stop.set()
        thread.join(5.0)
    assert not thread.is_alive()


def test_module_subprocess_reconnect_and_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "micropen.sim.serve", "--tcp", "0", "--json", "--seed", "13"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(read_line(proc.stdout))  # type: ignore[arg-type]
        with _open(info["tcp"]) as conn:
            first = handshake(conn)
        with _open(info["tcp"]) as conn:
            second = handshake(conn)
        assert first.serial == second.serial == info["serial"]
        assert first.boot_id == second.boot_id
    finally:
        status = stop_child(proc)
    assert status == 0, proc.stderr.read() if proc.stderr else status
