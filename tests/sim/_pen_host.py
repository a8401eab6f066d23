"""A minimal host for end-to-end tests: a host Link driven over a real pyserial port.

Deliberately not the host package: these tests prove the served byte stream works for *any*
host that speaks the protocol, with the smallest loop that can (read with the port's timeout,
feed the link, write what it has to send).
"""

from __future__ import annotations

import selectors
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import serial
from _bench_pairing import pair_with_this_host

from micropen.host.pairing import HostKeys
from micropen.protocol.events import Connected, MessageReceived
from micropen.protocol.link import Link, Role
from micropen.protocol.messages import PROTOCOL_VERSION, Ack, Hello, Identity, OpenSession
from micropen.protocol.schema import Message, schema_hash
from micropen.sim.clock import RealClock
from micropen.sim.pen import SimConfig, SimulatedPen
from micropen.sim.serve import PenServer, PenTransport

EXCHANGE_TIMEOUT_S = 5.0


class PenHost:
    """Talks to a pen over an open pyserial port (``serial.Serial`` or ``serial_for_url``)."""

    def __init__(self, port: Any, keys: HostKeys | None = None) -> None:
        """Authenticates with ``keys`` (default: this user's keystore) when it holds the pen."""
        self.port = port
        self.keys = HostKeys() if keys is None else keys
        self.link = Link(Role.HOST, pairing=self.keys.lookup)
        self.inbox: list[Message] = []
        self._cmd_id = 0

    def pump(self) -> None:
        """One turn: write what the link has, read what the port has (bounded by its timeout)."""
        out = self.link.data_to_send(time.monotonic())
        if out:
            self.port.write(out)
        data = self.port.read(max(1, self.port.in_waiting))
        if data:
            self.link.receive_data(data, time.monotonic())
        for event in self.link.events():
            if isinstance(event, MessageReceived):
                self.inbox.append(event.message)
            elif not isinstance(event, Connected):
                raise AssertionError(f"unexpected link event {event!r}")

    def wait_for(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + EXCHANGE_TIMEOUT_S
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self.pump()

    def connect(self) -> None:
        offer = self.keys.host_id if self.keys.offers else None
        self.link.connect(time.monotonic(), offer)
        self.wait_for(lambda: self.link.connected, "the pen's SYNACK")

    def request(self, make: Callable[[int], Message]) -> Message:
        """Send the command ``make(cmd_id)``; return the reply carrying that cmd_id."""
        self._cmd_id += 1
        cmd_id = self._cmd_id
        self.link.send(make(cmd_id), time.monotonic())

        def reply() -> Message | None:
            return next((m for m in self.inbox if getattr(m, "cmd_id", None) == cmd_id), None)

        self.wait_for(lambda: reply() is not None, f"the reply to command {cmd_id}")
        self.port.write(self.link.data_to_send(time.monotonic()))  # acknowledge it
        answer = reply()
        assert answer is not None
        self.inbox.remove(answer)
        return answer

    def hello(self) -> Identity:
        reply = self.request(
            lambda cmd_id: Hello(
                cmd_id=cmd_id, protocol_version=PROTOCOL_VERSION, schema_hash=schema_hash()
            )
        )
        assert isinstance(reply, Identity), reply
        opened = self.request(lambda cmd_id: OpenSession(cmd_id=cmd_id, session=0x7E57))
        assert isinstance(opened, Ack), opened
        return reply


def handshake(port: Any) -> Identity:
    host = PenHost(port)
    host.connect()
    return host.hello()


def read_line(stream: IO[str], timeout_s: float = 10.0) -> str:
    """One line from a child's stdout, waiting at most ``timeout_s``."""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            raise AssertionError(f"no line from the child within {timeout_s} s")
    return stream.readline()


def stop_child(proc: subprocess.Popen[str], timeout_s: float = 5.0) -> int:
    """SIGTERM, then the exit status (killed, and the test failed, if it hangs)."""
    proc.terminate()
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("the server did not exit on SIGTERM") from None


@contextmanager
def served_in_thread(
    config: SimConfig, transport: PenTransport, *, paired: bool = True
) -> Iterator[PenServer]:
    """A pen served by a loop in a thread on the real clock, paired with this test's host
    keystore unless ``paired=False``; stopped and joined on the way out."""
    clock = RealClock()
    pen = SimulatedPen(config, now=clock.now())
    if paired:
        pair_with_this_host(pen, clock.now())
    with PenServer(pen, transport, clock=clock) as server:
        thread = threading.Thread(target=server.run, name="pen-server")
        thread.start()
        try:
            yield server
        finally:
            server.stop()
            thread.join(5.0)
            assert not thread.is_alive(), "the server loop did not stop"


def open_port(info: dict[str, Any]) -> Any:
    """A pyserial port to a served pen, from its announcement (``tcp`` port or ``pty`` path)."""
    if "tcp" in info:
        return serial.serial_for_url(f"socket://127.0.0.1:{info['tcp']}", timeout=0.02)
    return serial.Serial(info["pty"], timeout=0.02)
