"""Every TCP connection micropen opens has Nagle's algorithm off (docs/protocol.md,
"Transports"): with it on, a request written while the previous frame waits for a delayed ACK
costs 40 ms. Each path is opened against a real loopback listener and its socket asked."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from micropen.hil_tests.rawlink import RawLink
from micropen.host.calibration.instruments import SerialChannel, TcpChannel
from micropen.host.transports.serial import ThreadedSerialTransport
from micropen.host.transports.socket import SocketTransport
from micropen.host.url import parse_pen_url
from micropen.sim.tcp import accept_nodelay, listen

pytestmark = pytest.mark.looptime(False)  # real sockets


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    yield server
    server.close()


def _nodelay(sock: Any) -> bool:
    """asyncio hands out a TransportSocket, pyserial a socket.socket: both answer this."""
    assert sock is not None and sock.family == socket.AF_INET, sock
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def _port(server: socket.socket) -> int:
    return int(server.getsockname()[1])


async def test_the_socket_pen_transport(listener: socket.socket) -> None:
    transport = SocketTransport(parse_pen_url(f"socket://127.0.0.1:{_port(listener)}"))
    await transport.open()
    try:
        assert _nodelay(transport._writer.get_extra_info("socket"))  # type: ignore[union-attr]
    finally:
        await transport.close()


async def test_a_socket_url_opened_through_pyserial(listener: socket.socket) -> None:
    url = f"socket://127.0.0.1:{_port(listener)}"
    transport = ThreadedSerialTransport(parse_pen_url(url), url)
    await transport.open()
    try:
        assert _nodelay(transport._serial._socket)
    finally:
        await transport.close()


async def test_an_instrument_over_tcp_and_over_a_socket_url(listener: socket.socket) -> None:
    tcp = TcpChannel("127.0.0.1", _port(listener))
    await tcp.open()
    assert _nodelay(tcp._writer.get_extra_info("socket"))  # type: ignore[union-attr]
    await tcp.aclose()
    serial_url = SerialChannel(f"socket://127.0.0.1:{_port(listener)}")
    await serial_url.open()
    assert _nodelay(serial_url._serial._socket)
    await serial_url.aclose()


def test_the_hil_raw_link(listener: socket.socket) -> None:
    with RawLink(f"socket://127.0.0.1:{_port(listener)}") as raw:
        assert _nodelay(raw._port._socket)


def test_the_simulator_accepts_with_nodelay() -> None:
    server = listen("127.0.0.1", 0)
    try:
        client = socket.create_connection(server.getsockname()[:2], timeout=5)
        server.setblocking(True)
        accepted = accept_nodelay(server)
        assert accepted is not None and _nodelay(accepted)
        accepted.close()
        client.close()
    finally:
        server.close()
