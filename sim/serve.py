"""Serve one simulated pen over a pseudo-terminal or TCP, the way a real pen is reached.

Why: the host's serial transport, its reconnect logic and the hardware-in-the-loop tests must run
the very code path they run against a pen on ``/dev/ttyACM0``. A pty is a serial device to
pyserial (``serial.Serial(path)``); a TCP socket is what pyserial's ``socket://HOST:PORT`` URL
opens. Nothing above the byte stream knows it talks to a simulator.

How it runs: one synchronous, single-threaded :mod:`selectors` loop per pen
(:meth:`PenServer.run`). Each turn it feeds what the host sent to the pen at ``clock.now()``,
advances the pen, writes what the pen has to send, then sleeps in ``select()`` until a byte
arrives, the pen's next deadline or :data:`MAX_WAIT_S` (a safety cap), whichever comes first: no
busy loop and no fixed sleeps. :meth:`PenServer.stop` may be called from any thread or a signal
handler: it sets a flag and writes to a self-pipe the loop is waiting on, so a test can run a
server in a thread and stop it deterministically. The bench channel (:mod:`.bench_server`) is
served by the same loop, so the pen is only ever touched by one thread.

Transports:

* :class:`PtyTransport` opens a pty pair, puts the slave in raw mode (no echo, no CR/LF
  translation) and keeps the slave open itself, so a host closing and reopening the device never
  hangs up the master. The master runs in packet mode (``TIOCPKT``, Linux and BSD) so the loop
  learns when the host flushes its input - pyserial does so on every open - and then drops the
  pen output still queued for the previous session instead of handing it to the new one. If the
  master does hang up (EIO/POLLHUP while nobody holds the slave, e.g. ``hold_slave=False``), the
  loop stops polling it for one turn at a time and keeps serving until a host reopens it.
* :class:`TcpTransport` listens on one port and serves one host at a time: **a new connection
  replaces the current one**. A host that crashed without closing its socket must not lock the
  pen out, and a real pen, too, talks to whichever program opened it last; the pen sees the new
  host's SYN, starts a new link epoch and the old host's frames are stale.

Output the host does not read is queued up to :data:`OUTBOX_LIMIT` bytes, then the oldest bytes
are dropped and counted, as a full UART FIFO drops them: COBS framing resynchronises and the link
retransmits. Output while no TCP host is connected is dropped at once.

Command line (one line on stdout, flushed, then serve until SIGTERM/SIGINT, exit status 0)::

    python3 -m micropen.sim.serve --pty [--link PATH] [--seed N] [--query "seed=7&..."]
    python3 -m micropen.sim.serve --tcp PORT [--host ADDR] [--bench-tcp PORT] [--json]
    python3 -m micropen.sim.serve --tcp PORT --seed 44 --state PATH

With ``--state PATH`` (or ``state=PATH`` in the query) the unit's non-volatile memory is loaded
from and written to that file (:mod:`.statefile`), which stays locked while the server runs; on
SIGTERM/SIGINT the pen is powered off (its last state written) before the process exits. A
server built by :func:`open_server` owns its pen and powers it off on close.

The line is the device path (``--pty``) or the TCP port, followed by ``bench_tcp=PORT`` and
``serial=SERIAL``; with ``--json`` it is one JSON object ``{"pty": path}`` or ``{"tcp": port}``
plus ``"bench_tcp"`` (when served) and ``"serial"``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import sys
import termios
import threading
import tty
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from types import FrameType, TracebackType
from typing import Protocol, TypeVar

from micropen.protocol.errors import MicropenError
from micropen.protocol.messages import SimParam

from .bench_server import BenchTcpService
from .clock import Clock, RealClock
from .pen import SimConfig, SimulatedPen
from .tcp import accept_nodelay, listen

__all__ = [
    "MAX_WAIT_S",
    "OUTBOX_LIMIT",
    "ElapsedClock",
    "Outbox",
    "PenServer",
    "PenTransport",
    "PtyTransport",
    "ServeStats",
    "Service",
    "StopSignal",
    "TcpTransport",
    "announce",
    "main",
    "open_server",
    "run_until_signalled",
    "serve_pty",
    "serve_tcp",
    "sleep_time",
]

MAX_WAIT_S = 0.05  # longest select() sleep even when the pen has no deadline
READ_SIZE = 65536
OUTBOX_LIMIT = 64 * 1024  # pen output queued for a slow host before the oldest bytes drop
_TIOCPKT_FLUSHREAD = 0x01  # <linux/tty.h>; not exported by the termios module

_T = TypeVar("_T")

Handler = Callable[[int], None]
"""What the loop calls when a registered file object is ready; gets the selectors event mask."""


@dataclass(slots=True)
class ServeStats:
    """Counters for one server since it was created."""

    wakeups: int = 0  # loop turns: an idle pen must not make this grow fast
    bytes_in: int = 0  # from the host to the pen
    bytes_out: int = 0  # from the pen, written to the transport
    bytes_dropped: int = 0  # pen output nobody could take (no host, or the queue overflowed)
    connections: int = 0  # TCP hosts accepted
    disconnects: int = 0  # TCP hosts gone, pty hang-ups
    input_flushes: int = 0  # pty host flushed its input (opened the port): stale output dropped
    stale_deadlines: int = 0  # the pen reported a deadline stepping did not clear (see sleep_time)


class Outbox:
    """Bytes waiting for a slow reader, at most ``limit`` of them (the oldest drop first)."""

    __slots__ = ("_buf", "limit")

    def __init__(self, limit: int = OUTBOX_LIMIT) -> None:
        self._buf = bytearray()
        self.limit = limit

    def __len__(self) -> int:
        return len(self._buf)

    def push(self, data: bytes) -> int:
        """Queue ``data``; return how many old bytes were dropped to make room."""
        self._buf += data
        excess = len(self._buf) - self.limit
        if excess <= 0:
            return 0
        del self._buf[:excess]
        return excess

    def flush(self, write: Callable[[memoryview], int]) -> int:
        """Write until empty or the writer would block; return the bytes written."""
        written = 0
        while self._buf:
            try:
                with memoryview(self._buf) as view:  # released before the buffer shrinks
                    n = write(view)
            except BlockingIOError:
                break
            if n <= 0:
                break
            del self._buf[:n]
            written += n
        return written

    def take(self, size: int) -> bytes:
        """Remove and return up to ``size`` bytes from the front."""
        chunk = bytes(self._buf[:size])
        del self._buf[:size]
        return chunk

    def clear(self) -> int:
        """Forget everything queued; return how many bytes that was."""
        n = len(self._buf)
        self._buf.clear()
        return n


class StopSignal:
    """A flag plus a self-pipe: ``set()`` wakes a loop sleeping in ``select()``.

    Safe from other threads and from signal handlers: it takes no lock, and a full pipe (the loop
    is already awake) is not an error.
    """

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._set = False

    def set(self) -> None:
        self._set = True
        self.wake()

    def wake(self) -> None:
        """Wake the loop without stopping it."""
        with contextlib.suppress(BlockingIOError, OSError):  # full pipe, or already closed
            os.write(self._write_fd, b"\0")

    def is_set(self) -> bool:
        return self._set

    def fileno(self) -> int:
        return self._read_fd

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read_fd, 512):
                pass

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class ElapsedClock:
    """Real time that continues from ``start``: serves a pen whose own time stands at ``start``
    (e.g. one created with the default ``now=0.0``) without a jump."""

    __slots__ = ("_base", "_offset")

    def __init__(self, start: float = 0.0, base: Clock | None = None) -> None:
        self._base = base or RealClock()
        self._offset = start - self._base.now()

    def now(self) -> float:
        return self._base.now() + self._offset


class Service(Protocol):
    """Something served by the pen's loop besides the pen itself (the bench channel).

    ``register`` adds the service's file objects to the loop's selector with a :data:`Handler`
    as ``data``; the loop calls that handler with the ready event mask.
    """

    def register(self, selector: selectors.BaseSelector) -> None: ...

    def describe(self) -> dict[str, str | int]: ...

    def close(self) -> None: ...


class PenTransport(Protocol):
    """The byte stream between the pen and its host."""

    def register(
        self, selector: selectors.BaseSelector, on_data: Callable[[bytes], None], stats: ServeStats
    ) -> None:
        """Start watching the transport; received bytes go to ``on_data``."""
        ...

    def tick(self) -> None:
        """Called once per loop turn, before ``select()``."""
        ...

    def write(self, data: bytes) -> None:
        """Queue pen output and write as much as the host takes without blocking."""
        ...

    def describe(self) -> dict[str, str | int]:
        """Where a host finds the pen, for the announcement line."""
        ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------------- pty
class PtyTransport:
    """A pseudo-terminal whose slave end the host opens as a serial port.

    ``path`` is the slave device (``/dev/pts/N``). ``link_path`` makes a symlink to it (like
    socat's ``link=``) so scripts can use a stable name; it is removed on close if still ours.
    """

    def __init__(self, *, link_path: str | None = None, hold_slave: bool = True) -> None:
        self._master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave: int | None = slave
        if not hold_slave:
            os.close(slave)
            self._slave = None
        os.set_blocking(self._master, False)
        self._packet = _enable_packet_mode(self._master)
        self._outbox = Outbox()
        self._selector: selectors.BaseSelector | None = None
        self._on_data: Callable[[bytes], None] = _discard
        self._stats = ServeStats()
        self._registered = False
        self._hung_up = False
        self._idle_turns = 0
        self._down = False  # hung up since the last byte from the host
        self.link_path = link_path
        if link_path is not None:
            _replace_symlink(self.path, link_path)

    def register(
        self, selector: selectors.BaseSelector, on_data: Callable[[bytes], None], stats: ServeStats
    ) -> None:
        self._selector, self._on_data, self._stats = selector, on_data, stats
        self._watch()

    def tick(self) -> None:
        if self._hung_up:
            self._idle_turns -= 1
            if self._idle_turns <= 0:  # look again: a host may have opened the slave
                self._hung_up = False
                self._watch()

    def write(self, data: bytes) -> None:
        if self._hung_up:
            self._stats.bytes_dropped += len(data)
            return
        self._stats.bytes_dropped += self._outbox.push(data)
        self._flush()

    def describe(self) -> dict[str, str | int]:
        return {"pty": self.path}

    def close(self) -> None:
        self._unwatch()
        if self.link_path is not None:
            with contextlib.suppress(OSError):
                if os.readlink(self.link_path) == self.path:
                    os.unlink(self.link_path)
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._slave = None

    # -- internals
    def _watch(self) -> None:
        if self._selector is None:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._outbox else 0)
        if self._registered:
            self._selector.modify(self._master, events, self._on_event)
        else:
            self._selector.register(self._master, events, self._on_event)
            self._registered = True

    def _unwatch(self) -> None:
        if self._registered and self._selector is not None:
            self._selector.unregister(self._master)
        self._registered = False

    def _on_event(self, events: int) -> None:
        if events & selectors.EVENT_READ:
            self._read()
        if events & selectors.EVENT_WRITE and not self._hung_up:
            self._flush()

    def _read(self) -> None:
        try:
            chunk = os.read(self._master, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            chunk = b""
        if not chunk:
            self._hang_up()
            return
        if self._packet:
            status, chunk = chunk[0], chunk[1:]
            if status & _TIOCPKT_FLUSHREAD:
                self._stats.input_flushes += 1
                self._stats.bytes_dropped += self._outbox.clear()
                self._watch()
        if chunk:
            self._down = False
            self._on_data(chunk)

    def _flush(self) -> None:
        try:
            self._stats.bytes_out += self._outbox.flush(self._write_master)
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            self._hang_up()
            return
        self._watch()

    def _write_master(self, view: memoryview) -> int:
        return os.write(self._master, view)

    def _hang_up(self) -> None:
        """Nobody holds the slave: sleep one whole loop turn without polling the master (a hung
        up master is always "ready", so polling it would spin)."""
        if not self._down:
            self._stats.disconnects += 1
        self._down = True
        self._stats.bytes_dropped += self._outbox.clear()
        self._hung_up = True
        self._idle_turns = 2
        self._unwatch()


def _enable_packet_mode(master: int) -> bool:
    request = getattr(termios, "TIOCPKT", None)
    if request is None:
        return False
    try:
        fcntl.ioctl(master, request, struct.pack("i", 1))
    except OSError:
        return False
    return True


def _replace_symlink(target: str, link_path: str) -> None:
    """Point ``link_path`` at ``target`` atomically, replacing a stale link."""
    tmp = f"{link_path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link_path)


def _discard(data: bytes) -> None:
    return None


# ------------------------------------------------------------------------------------- tcp
class TcpTransport:
    """A TCP listener for one host at a time; a new connection replaces the current one."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._listener = listen(host, port)
        self.host: str = host
        self.port: int = self._listener.getsockname()[1]
        self._client: socket.socket | None = None
        self._outbox = Outbox()
        self._selector: selectors.BaseSelector | None = None
        self._on_data: Callable[[bytes], None] = _discard
        self._stats = ServeStats()

    def register(
        self, selector: selectors.BaseSelector, on_data: Callable[[bytes], None], stats: ServeStats
    ) -> None:
        self._selector, self._on_data, self._stats = selector, on_data, stats
        selector.register(self._listener, selectors.EVENT_READ, self._on_accept)

    def tick(self) -> None:
        return None

    @property
    def connected(self) -> bool:
        return self._client is not None

    def write(self, data: bytes) -> None:
        if self._client is None:
            self._stats.bytes_dropped += len(data)
            return
        self._stats.bytes_dropped += self._outbox.push(data)
        self._flush()

    def describe(self) -> dict[str, str | int]:
        return {"tcp": self.port}

    def close(self) -> None:
        self._drop_client()
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._listener)
        self._listener.close()

    # -- internals
    def _on_accept(self, events: int) -> None:
        sock = accept_nodelay(self._listener)
        if sock is None:
            return
        self._drop_client()  # one host at a time: the newest wins
        self._client = sock
        self._stats.connections += 1
        if self._selector is not None:
            self._selector.register(sock, selectors.EVENT_READ, self._on_client)

    def _on_client(self, events: int) -> None:
        client = self._client
        if client is None:
            return
        if events & selectors.EVENT_READ:
            try:
                data = client.recv(READ_SIZE)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data == b"":
                self._drop_client()
                return
            if data:
                self._on_data(data)
        if events & selectors.EVENT_WRITE:
            self._flush()

    def _flush(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            self._stats.bytes_out += self._outbox.flush(client.send)
        except OSError:  # reset or broken pipe: the host is gone
            self._drop_client()
            return
        if self._selector is not None:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._outbox else 0)
            self._selector.modify(client, events, self._on_client)

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        self._stats.bytes_dropped += self._outbox.clear()
        if client is None:
            return
        self._stats.disconnects += 1
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(client)
        client.close()


# ------------------------------------------------------------------------------------- loop
class PenServer:
    """One pen, one transport, optional services, one single-threaded selector loop.

    ``clock`` must be the pen's time base (create the pen with ``now=clock.now()``); by default
    real time continues from the pen's current time. Use as a context manager; :meth:`run`
    blocks until :meth:`stop`.
    """

    def __init__(
        self,
        pen: SimulatedPen,
        transport: PenTransport,
        *,
        clock: Clock | None = None,
        services: Sequence[Service] = (),
        stop: StopSignal | None = None,
        owns_pen: bool = False,
    ) -> None:
        self.pen = pen
        self.owns_pen = owns_pen  # close() powers it off (last state-file write, unlock)
        self.transport = transport
        self.clock: Clock = clock or ElapsedClock(pen.now)
        self.services = tuple(services)
        self._stop = stop or StopSignal()
        self._stats = ServeStats()
        self._stepped_at = float("-inf")
        self._calls: deque[Callable[[SimulatedPen, float], None]] = deque()
        # the pen's screen (pairing codes): to stderr unless the owner shows it elsewhere
        self.display: Callable[[str], None] = _print_display
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stop.fileno(), selectors.EVENT_READ, self._on_stop)
        transport.register(self._selector, self._on_data, self._stats)
        for service in self.services:
            service.register(self._selector)

    def __enter__(self) -> PenServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def call_soon(self, action: Callable[[SimulatedPen, float], None]) -> None:
        """Run ``action(pen, now)`` in the serving loop (thread-safe): how a bench lever — a
        pulled cable, a power cut — reaches a pen that a loop in another thread serves."""
        self._calls.append(action)
        self._stop.wake()

    def run(self) -> None:
        """Serve until :meth:`stop` is called (from any thread or a signal handler)."""
        while not self._stop.is_set():
            while self._calls:
                self._calls.popleft()(self.pen, self.clock.now())
            self._pump()
            self.transport.tick()
            for key, events in self._selector.select(self._wait_s()):
                handler: Handler = key.data
                handler(events)
            self._stats.wakeups += 1

    def stop(self) -> None:
        self._stop.set()

    def describe(self) -> dict[str, str | int]:
        """Where hosts find the pen and its bench, plus the pen's serial number."""
        info = self.transport.describe()
        for service in self.services:
            info.update(service.describe())
        info["serial"] = self.pen.identity.serial
        return info

    def statistics(self) -> ServeStats:
        return replace(self._stats)

    def close(self) -> None:
        try:
            self.transport.close()
            for service in self.services:
                service.close()
            self._selector.close()
            self._stop.close()
        finally:
            if self.owns_pen:
                self.owns_pen = False
                self.pen.close(self.clock.now())

    # -- internals
    def _on_stop(self, events: int) -> None:
        self._stop.drain()

    def _on_data(self, data: bytes) -> None:
        self._stats.bytes_in += len(data)
        self.pen.receive_data(data, self.clock.now())

    def _pump(self) -> None:
        now = self.clock.now()
        self.pen.advance(now)
        out = self.pen.data_to_send(now)
        if out:
            self.transport.write(out)
        if self.pen.display:
            for line in self.pen.take_display():
                self.display(line)
        self._stepped_at = now

    def _wait_s(self) -> float:
        deadline = self.pen.next_deadline()
        if deadline is not None and deadline <= self._stepped_at:
            self._stats.stale_deadlines += 1
        return sleep_time(deadline, self._stepped_at, self.clock.now())


def sleep_time(deadline: float | None, stepped_at: float, now: float) -> float:
    """How long a driver may sleep: until the pen's next deadline, at most :data:`MAX_WAIT_S`.

    A deadline at or before ``stepped_at`` - the time the pen was just advanced and drained to -
    is one that stepping did not clear. Sleeping 0 s on it would spin at 100 % CPU, so it counts
    as no deadline (the pen already did all it could up to that time).
    """
    if deadline is None or deadline <= stepped_at:
        return MAX_WAIT_S
    return min(max(deadline - now, 0.0), MAX_WAIT_S)


# ------------------------------------------------------------------------------------- entry points
def serve_pty(
    pen: SimulatedPen,
    *,
    clock: Clock | None = None,
    link_path: str | None = None,
    ready: Callable[[str], None] | None = None,
    stop: StopSignal | None = None,
    services: Sequence[Service] = (),
) -> None:
    """Serve ``pen`` on a new pty until ``stop`` is set; ``ready(path)`` gets the slave path
    (printed on stdout when ``ready`` is None)."""
    with PenServer(
        pen, PtyTransport(link_path=link_path), clock=clock, services=services, stop=stop
    ) as server:
        _announce_to(ready, str(server.describe()["pty"]))
        server.run()


def serve_tcp(
    pen: SimulatedPen,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Clock | None = None,
    ready: Callable[[int], None] | None = None,
    stop: StopSignal | None = None,
    services: Sequence[Service] = (),
) -> None:
    """Serve ``pen`` on TCP until ``stop`` is set; ``ready(port)`` gets the bound port (port 0
    picks a free one; printed on stdout when ``ready`` is None)."""
    transport = TcpTransport(host, port)
    with PenServer(pen, transport, clock=clock, services=services, stop=stop) as server:
        _announce_to(ready, transport.port)
        server.run()


def _announce_to(ready: Callable[[_T], None] | None, value: _T) -> None:
    if ready is None:
        print(value, flush=True)
    else:
        ready(value)


def open_server(
    config: SimConfig,
    *,
    pty: bool = False,
    tcp_port: int | None = None,
    host: str = "127.0.0.1",
    link_path: str | None = None,
    bench_port: int | None = None,
    params: Mapping[SimParam, int] | None = None,
) -> PenServer:
    """Build a pen on a real clock, its transport and (optionally) its bench channel."""
    if pty == (tcp_port is not None):
        raise ValueError("choose exactly one transport: pty=True or tcp_port=PORT")
    clock = ElapsedClock()
    pen = SimulatedPen(config, now=clock.now())  # a state file is locked from here on
    try:
        for param, value in (params or {}).items():
            pen.set_param(param, value, clock.now())
        transport: PenTransport = (
            PtyTransport(link_path=link_path) if pty else TcpTransport(host, tcp_port or 0)
        )
        services: list[Service] = []
        if bench_port is not None:
            services.append(BenchTcpService(pen.bench, clock, host=host, port=bench_port))
    except BaseException:
        pen.close(clock.now())
        raise
    return PenServer(pen, transport, clock=clock, services=services, owns_pen=True)


def announce(info: Mapping[str, str | int], *, as_json: bool) -> str:
    """The one line a parent process reads: JSON, or the path/port then ``key=value`` fields."""
    if as_json:
        return json.dumps(dict(info), sort_keys=True)
    head = info.get("pty", info.get("tcp"))
    rest = [f"{k}={v}" for k, v in info.items() if k not in ("pty", "tcp")]
    return " ".join([str(head), *rest])


def _print_display(line: str) -> None:
    print(f"pen display: {line}", file=sys.stderr, flush=True)


def press_pairing_button(server: PenServer) -> None:
    """The pen's pairing button (thread- and signal-safe): one host may pair within a minute."""
    server.call_soon(lambda pen, now: pen.press_pairing_button(now))


def run_until_signalled(server: PenServer, ready: Callable[[], None] | None = None) -> None:
    """Run ``server``; SIGTERM and SIGINT stop it cleanly (main thread only). ``ready`` (the
    announcement a parent process waits for) is called once the handlers are in place, so a
    parent that signals as soon as it has read it never catches the process unprepared."""
    if threading.current_thread() is not threading.main_thread():
        if ready is not None:
            ready()
        server.run()
        return
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: press_pairing_button(server))
    try:
        with _stop_on_signals(server, (signal.SIGTERM, signal.SIGINT)):
            if ready is not None:
                ready()
            server.run()
    finally:
        signal.signal(signal.SIGUSR1, previous)


@contextlib.contextmanager
def _stop_on_signals(server: PenServer, signals: Sequence[signal.Signals]) -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        server.stop()

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m micropen.sim.serve",
        description="Serve a simulated micropen over a pty or TCP until SIGTERM/SIGINT.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal")
    where.add_argument("--tcp", type=int, metavar="PORT", help="serve on TCP (0: a free port)")
    parser.add_argument("--host", default="127.0.0.1", help="TCP address to bind")
    parser.add_argument("--link", metavar="PATH", help="symlink PATH to the pty device")
    parser.add_argument("--seed", type=int, help="pen seed (overrides the query's)")
    parser.add_argument("--query", default="", help='SimConfig query, e.g. "seed=7&cartridge=0"')
    parser.add_argument("--state", metavar="PATH", help="keep the unit's NVM in this file")
    parser.add_argument("--bench-tcp", type=int, metavar="PORT", help="serve the bench channel")
    parser.add_argument("--json", action="store_true", help="announce as one JSON line")
    return parser.parse_args(argv)


def make_config(query: str = "", seed: int | None = None, state: str | None = None) -> SimConfig:
    """A SimConfig from a query string, with ``seed`` and ``state`` (when given) taking
    precedence."""
    config = SimConfig.from_query(query) if query else SimConfig()
    if seed is not None:
        config = replace(config, seed=seed)
    if state is not None:
        config = replace(config, state=state)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        server = open_server(
            make_config(args.query, args.seed, args.state),
            pty=args.pty,
            tcp_port=args.tcp,
            host=args.host,
            link_path=args.link,
            bench_port=args.bench_tcp,
        )
    except (MicropenError, OSError) as exc:
        print(f"micropen.sim.serve: {exc}", file=sys.stderr)
        return 2
    try:
        with server:
            line = announce(server.describe(), as_json=args.json)
            run_until_signalled(server, lambda: print(line, flush=True))
    except MicropenError as exc:  # e.g. the state file could not be written: stop, loudly
        print(f"micropen.sim.serve: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
