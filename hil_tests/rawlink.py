"""A bare protocol host over the pen's port: no safety checks, no heartbeat, no reconnect.

What a buggy or hostile program on the same cable can do, so the suite can prove the pen's own
controls: messages the host's checks would never send (built by :func:`unchecked`), commands
before the handshake, the same frame written twice, a command re-sent with its ``cmd_id`` in a
new link epoch. It is synchronous and polls the port with a short timeout; every wait is
bounded (this talks to a real process or a real pen, so real time is the only clock there is).
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import serial

from micropen.host.pairing import HostKeys
from micropen.host.transports.nodelay import set_nodelay_on_port
from micropen.protocol.events import Connected, LinkLost, MessageReceived, PeerReset
from micropen.protocol.link import Link, Role
from micropen.protocol.messages import PROTOCOL_VERSION, Ack, Hello, Identity, OpenSession
from micropen.protocol.schema import Kind, Message, schema_hash

__all__ = ["RawLink", "RawLinkError", "port_url", "unchecked"]

M = TypeVar("M", bound=Message)
DEFAULT_TIMEOUT_S = 3.0
POLL_S = 0.002


class RawLinkError(AssertionError):
    """The pen did not answer as a conforming pen must (a test failure, not a crash)."""


def unchecked(cls: type[M], *values: Any) -> M:
    """A message built without its constructor's range checks — the bytes a host with no
    checks would send. Values must still fit the wire type (struct packs them)."""
    return tuple.__new__(cls, values)  # type: ignore[no-any-return]


def port_url(pen_url: str) -> str | None:
    """The pyserial URL of a pen URL, or None when the pen is not on a port (sim://, usb://)."""
    if pen_url.startswith("/") or pen_url.startswith("COM"):
        return pen_url
    parts = urlsplit(pen_url)
    if parts.scheme == "serial":
        return parts.path or parts.netloc
    if parts.scheme in ("socket", "rfc2217"):
        return pen_url.split("?")[0]
    return None


class RawLink:
    """One host link epoch over a port. Use as a context manager."""

    def __init__(
        self,
        url: str,
        *,
        baud: int = 1_000_000,
        timeout: float = DEFAULT_TIMEOUT_S,
        keys: HostKeys | None = None,
    ):
        """``keys``: authenticate as this (paired) host; None: any party that opened the port."""
        target = port_url(url)
        if target is None:
            raise ValueError(f"{url!r} is not a serial or socket pen URL")
        self._port: Any = serial.serial_for_url(target, baudrate=baud, timeout=POLL_S)
        set_nodelay_on_port(self._port)
        self.keys = keys
        self.link = Link(
            Role.HOST, rng=random.Random(), pairing=None if keys is None else keys.lookup
        )
        self.timeout = timeout
        self.notifications: list[Message] = []
        self.replies: dict[int, Message] = {}
        self.lost: str | None = None
        self._cmd_ids = itertools.count(random.randrange(1 << 20, 1 << 30))
        self.session = random.randrange(1, 1 << 32)  # one host session, across reconnects

    def __enter__(self) -> RawLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._port.close()

    # -- the byte pump
    def pump(self) -> None:
        """Write what the link has to send, read what arrived, sort the messages."""
        out = self.link.data_to_send(time.monotonic())
        if out:
            self._port.write(out)
        data = self._port.read(max(1, self._port.in_waiting))
        if data:
            self.link.receive_data(data, time.monotonic())
        for event in self.link.events():
            if isinstance(event, MessageReceived):
                self._sort(event.message)
            elif isinstance(event, LinkLost | PeerReset):
                self.lost = event.reason
            elif not isinstance(event, Connected):
                raise RawLinkError(f"unexpected link event {event!r}")
        out = self.link.data_to_send(time.monotonic())  # acknowledge at once
        if out:
            self._port.write(out)

    def _sort(self, message: Message) -> None:
        if message.KIND is Kind.REPLY:
            self.replies[message[0]] = message
        else:
            self.notifications.append(message)

    def wait_for(self, done: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not done():
            if time.monotonic() > deadline:
                raise RawLinkError(f"timed out waiting for {what}")
            self.pump()

    def pump_for(self, seconds: float) -> None:
        """Keep the link serviced for ``seconds`` (collecting notifications)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump()

    # -- the protocol
    def connect(self) -> None:
        """Open a new link epoch (SYN/SYNACK) — without the Hello handshake."""
        self.link.connect(time.monotonic(), None if self.keys is None else self.keys.host_id)
        self.wait_for(lambda: self.link.connected, "the pen's SYNACK")

    def next_cmd_id(self) -> int:
        return next(self._cmd_ids) & 0xFFFF_FFFF

    def send(self, message: Message, *, urgent: bool = False) -> None:
        self.link.send(message, time.monotonic(), urgent=urgent)
        self.pump()

    def request(self, build: Callable[[int], Message], *, urgent: bool = False) -> Message:
        """Send a command numbered by this link and wait for the reply with its cmd_id."""
        cmd_id = self.next_cmd_id()
        return self.request_as(build(cmd_id), urgent=urgent)

    def request_as(self, message: Message, *, urgent: bool = False) -> Message:
        """Send ``message`` as built (its own cmd_id) and wait for the reply to that cmd_id."""
        cmd_id = message[0]
        self.replies.pop(cmd_id, None)
        self.send(message, urgent=urgent)
        self.wait_for(lambda: cmd_id in self.replies, f"the reply to {type(message).__name__}")
        return self.replies.pop(cmd_id)

    def hello(self) -> Identity:
        reply = self.request(lambda c: Hello(c, PROTOCOL_VERSION, schema_hash()))
        if not isinstance(reply, Identity):
            raise RawLinkError(f"Hello was answered by {reply!r}")
        opened = self.request(lambda c: OpenSession(c, self.session))
        if not isinstance(opened, Ack):  # the pen hands its notifications to a session only
            raise RawLinkError(f"OpenSession was answered by {opened!r}")
        return reply
