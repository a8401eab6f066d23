"""``micropen proxy``: a fault-injecting link proxy between a host and any pen.

::

    host ──(tcp:PORT or a new pty)── proxy ──(pen URL: serial, socket://, rfc2217://, sim://)── pen

The proxy drops, corrupts, duplicates and delays what crosses it, at rates drawn from a seed
(the fault model is :mod:`micropen.tools.proxy_faults`, which reuses the simulator's
``LinkFaults``), so the same link-robustness tests run against the simulator and a real pen on
a bench. It understands nothing of the protocol beyond the 0x00 frame delimiter.

* The pen side is opened through the host's own transports (``make_transport``), so every pen
  URL the host accepts works here, and a pen that resets or is unplugged is reopened with
  backoff.
* The host side is a TCP listener (one host at a time: a new connection replaces the current
  one, as ``micropen sim serve --tcp`` does) or a new pseudo-terminal whose slave end the host
  opens as a serial port (the proxy holds the slave open, so a host can close and reopen it).
* A *disconnect* (:meth:`LinkProxy.disconnect`) makes the line carry nothing either way for a
  while — the simulator's ``DISCONNECT`` parameter, applied to a bench cable.

Command line: the first stdout line is the listening address (the pty path, or the TCP port);
statistics per direction are printed at exit (SIGINT/SIGTERM), as one JSON line with ``--json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import os
import signal
import socket
import sys
import tty
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import typer

from micropen.host.errors import HostError, InvalidInput
from micropen.host.loopthread import LoopThread
from micropen.host.tasks import TaskScope
from micropen.host.transports import Transport, make_transport

from .proxy_faults import FaultSpec, FaultyDirection

__all__ = [
    "HOST_TO_PEN",
    "PEN_TO_HOST",
    "LinkProxy",
    "ListenSpec",
    "ProxyThread",
    "app",
    "parse_listen",
    "proxy",
    "register",
]

HOST_TO_PEN = "host_to_pen"
PEN_TO_HOST = "pen_to_host"
OUTBOX_LIMIT = 64 * 1024  # bytes queued for a host that does not read before the oldest drop
REOPEN_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0)
READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """Where hosts reach the proxy: ``pty`` or ``tcp:[HOST:]PORT``."""

    kind: str  # "pty" | "tcp"
    host: str = "127.0.0.1"
    port: int = 0


def parse_listen(text: str) -> ListenSpec:
    """``pty``, ``tcp:PORT`` or ``tcp:HOST:PORT`` (port 0 picks a free port)."""
    if text == "pty":
        return ListenSpec("pty")
    kind, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    if kind != "tcp" or not port.isdigit() or int(port) > 65535:
        raise InvalidInput(
            f"--listen {text!r} is not pty or tcp:PORT (0–65535); e.g. --listen tcp:5000"
        )
    return ListenSpec("tcp", host or "127.0.0.1", int(port))


# ------------------------------------------------------------------------------------ host side
class _HostSide(Protocol):
    address: str
    dropped_bytes: int

    async def start(self) -> None: ...

    def write(self, data: bytes) -> None: ...

    def drop_host(self) -> None: ...

    async def close(self) -> None: ...


class _TcpHost:
    """One host at a time on a TCP port; the newest connection wins."""

    def __init__(self, spec: ListenSpec, on_data: Callable[[bytes], None]) -> None:
        self._spec, self._on_data = spec, on_data
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.address = ""
        self.dropped_bytes = 0
        self.connections = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self._spec.host, self._spec.port)
        self.address = str(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.drop_host()
        self._writer = writer
        self.connections += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while data := await reader.read(READ_SIZE):
                if self._writer is writer:
                    self._on_data(data)
        except OSError:
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()

    def write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            self.dropped_bytes += len(data)
            return
        if writer.transport.get_write_buffer_size() > OUTBOX_LIMIT:
            self.dropped_bytes += len(data)  # a host that stopped reading: as a full FIFO
            return
        writer.write(data)

    def drop_host(self) -> None:
        """Close the current host connection (the host sees the cable pulled)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    async def close(self) -> None:
        self.drop_host()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(OSError):
                await self._server.wait_closed()


class _PtyHost:
    """A new pseudo-terminal; the host opens its slave end as a serial port."""

    def __init__(self, spec: ListenSpec, on_data: Callable[[bytes], None]) -> None:
        self._on_data = on_data
        self._master = -1
        self._slave = -1
        self._out = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.address = ""
        self.dropped_bytes = 0

    async def start(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.address = os.ttyname(self._slave)
        os.set_blocking(self._master, False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._master, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: nobody holds the slave (cannot happen while we hold it)
            if exc.errno != errno.EIO:
                raise
            return
        if data:
            self._on_data(data)

    def write(self, data: bytes) -> None:
        if self._master < 0:
            self.dropped_bytes += len(data)
            return
        self._out += data
        excess = len(self._out) - OUTBOX_LIMIT
        if excess > 0:
            del self._out[:excess]
            self.dropped_bytes += excess
        self._flush()

    def _flush(self) -> None:
        try:
            sent = os.write(self._master, self._out) if self._out else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self.dropped_bytes += len(self._out)
            self._out.clear()
            sent = 0
        del self._out[:sent]
        if self._loop is None:
            return
        if self._out:
            self._loop.add_writer(self._master, self._flush)
        else:
            self._loop.remove_writer(self._master)

    def drop_host(self) -> None:
        """A pty cannot be unplugged; pen output queued for the host is thrown away."""
        self.dropped_bytes += len(self._out)
        self._out.clear()

    async def close(self) -> None:
        if self._loop is not None and self._master >= 0:
            self._loop.remove_reader(self._master)
            self._loop.remove_writer(self._master)
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1


# ------------------------------------------------------------------------------------ the proxy
class _Stopped(Exception):
    """Internal: the proxy was asked to stop."""


class LinkProxy:
    """The proxy's asyncio core: one pen, one host side, two faulty directions."""

    def __init__(
        self,
        pen_url: str,
        listen: ListenSpec,
        faults: FaultSpec | None = None,
        *,
        seed: int = 0,
        host_to_pen: FaultSpec | None = None,
        pen_to_host: FaultSpec | None = None,
    ) -> None:
        spec = faults or FaultSpec()
        self.pen_url = pen_url
        self.seed = seed
        self.directions = {
            HOST_TO_PEN: FaultyDirection(HOST_TO_PEN, host_to_pen or spec, 2 * seed),
            PEN_TO_HOST: FaultyDirection(PEN_TO_HOST, pen_to_host or spec, 2 * seed + 1),
        }
        self._pen: Transport = make_transport(pen_url)
        self._pen_open = False
        host_cls = _PtyHost if listen.kind == "pty" else _TcpHost
        self._host: _HostSide = host_cls(listen, self._from_host)
        self._kick = {name: asyncio.Event() for name in self.directions}
        self._stop = asyncio.Event()
        self.pen_reopens = 0

    @property
    def address(self) -> str:
        """The pty path, or the TCP port, once started."""
        return self._host.address

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- data path
    def _from_host(self, data: bytes) -> None:
        out = self.directions[HOST_TO_PEN].feed(data, self._now())
        self._to_pen(out)
        self._kick[HOST_TO_PEN].set()

    def _to_pen(self, data: bytes) -> None:
        if not data:
            return
        if not self._pen_open:
            self.directions[HOST_TO_PEN].stats.unsent += len(data)
            return
        try:
            self._pen.write(data)
        except HostError:
            self._pen_open = False

    def _to_host(self, data: bytes) -> None:
        if data:
            self._host.write(data)

    async def _pen_reader(self) -> None:
        direction = self.directions[PEN_TO_HOST]
        while True:
            if not self._pen_open:
                await self._open_pen()
            try:
                data = await self._pen.read()
            except HostError:
                self._pen_open = False
                continue
            self._to_host(direction.feed(data, self._now()))
            self._kick[PEN_TO_HOST].set()

    async def _open_pen(self) -> None:
        """Reopen a pen that reset or was unplugged, with backoff, until it is back."""
        for delay in itertools.chain(REOPEN_BACKOFF, itertools.repeat(REOPEN_BACKOFF[-1])):
            with contextlib.suppress(HostError):
                await self._pen.close()
            await asyncio.sleep(delay)
            try:
                await self._pen.open()
            except HostError:
                continue
            self._pen_open = True
            self.pen_reopens += 1
            return

    async def _releaser(self, name: str, write: Callable[[bytes], None]) -> None:
        """Delivers delayed bytes when they fall due."""
        direction, kick = self.directions[name], self._kick[name]
        while True:
            deadline = direction.next_deadline()
            kick.clear()
            if deadline is None:
                await kick.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - self._now())):
                        await kick.wait()
            write(direction.release(self._now()))

    # -- control
    def configure(self, faults: FaultSpec, direction: str | None = None) -> None:
        """Apply new fault rates from now on, to one direction (HOST_TO_PEN, PEN_TO_HOST) or
        both."""
        for name, faulty in self.directions.items():
            if direction is None or name == direction:
                faulty.configure(faults, self._now())

    def disconnect(self, seconds: float) -> None:
        """Carry nothing either way for ``seconds`` (0 ends a disconnect now)."""
        ms = max(0, round(seconds * 1000))
        for direction in self.directions.values():
            direction.disconnect(ms, self._now())

    def drop_host(self) -> None:
        """Close the host's connection (TCP); the host must reconnect."""
        self._host.drop_host()

    def stop(self) -> None:
        self._stop.set()

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = {n: d.stats.to_dict() for n, d in self.directions.items()}
        stats["host_dropped_bytes"] = self._host.dropped_bytes
        stats["pen_reopens"] = self.pen_reopens
        stats["seed"] = self.seed
        stats["faults"] = {n: d.spec.to_dict() for n, d in self.directions.items()}
        return stats

    async def serve(self, ready: Callable[[str], None] | None = None) -> None:
        """Open both sides, call ``ready(address)``, and forward until :meth:`stop`."""
        await self._pen.open()  # a pen that cannot be opened at all is an error, not a wait
        self._pen_open = True
        try:
            await self._host.start()
            if ready is not None:
                ready(self.address)
            async with TaskScope("proxy") as scope:
                scope.start(self._pen_reader())
                scope.start(self._releaser(HOST_TO_PEN, self._to_pen))
                scope.start(self._releaser(PEN_TO_HOST, self._to_host))
                await self._stop.wait()
        finally:
            await self._host.close()
            with contextlib.suppress(HostError):
                await self._pen.close()


class ProxyThread:
    """A :class:`LinkProxy` on an event loop in a thread this object owns (started by
    ``__enter__``, joined by ``__exit__``): for scripts and tests driving a host in-process."""

    def __init__(self, pen_url: str, listen: str | ListenSpec = "pty", **options: Any) -> None:
        self._args = (pen_url, parse_listen(listen) if isinstance(listen, str) else listen)
        self._options = options
        self._thread: LoopThread | None = None
        self._proxy: LinkProxy | None = None
        self._served: Future[None] | None = None
        self.address = ""

    def __enter__(self) -> ProxyThread:
        self._thread = LoopThread("micropen-proxy")
        ready: Future[str] = Future()

        async def run() -> None:
            self._proxy = LinkProxy(*self._args, **self._options)
            await self._proxy.serve(ready.set_result)

        def served(done: Future[None]) -> None:
            if not ready.done():  # serve() ended before it was ready: report why
                ready.set_exception(done.exception() or _Stopped("the proxy stopped"))

        self._served = self._thread.submit(run())
        self._served.add_done_callback(served)
        try:
            self.address = ready.result(timeout=10)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _call(self, fn: Callable[[LinkProxy], Any]) -> Any:
        async def call() -> Any:
            assert self._proxy is not None
            return fn(self._proxy)

        assert self._thread is not None
        return self._thread.call(call(), timeout=10)

    def statistics(self) -> dict[str, Any]:
        return self._call(LinkProxy.statistics)  # type: ignore[no-any-return]

    def configure(self, faults: FaultSpec, direction: str | None = None) -> None:
        self._call(lambda p: p.configure(faults, direction))

    def disconnect(self, seconds: float) -> None:
        self._call(lambda p: p.disconnect(seconds))

    def drop_host(self) -> None:
        self._call(LinkProxy.drop_host)

    def __exit__(self, *exc: object) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._proxy is not None and self._served is not None and not self._served.done():
            thread.loop.call_soon_threadsafe(self._proxy.stop)
            with contextlib.suppress(BaseException):
                self._served.result(timeout=10)
        thread.stop()


# ------------------------------------------------------------------------------------ CLI
def _format_stats(stats: dict[str, Any]) -> str:
    keys = ("bytes", "frames", "dropped", "corrupted", "duplicated", "delayed")
    lines = []
    for name in (HOST_TO_PEN, PEN_TO_HOST):
        d = stats[name]
        lines.append(f"{name.replace('_', ' ')}: " + " ".join(f"{k}={d[k]}" for k in keys))
    return "\n".join(lines)


async def _run_cli(proxy_: LinkProxy) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, proxy_.stop)
    await proxy_.serve(lambda address: print(address, flush=True))
    return proxy_.statistics()


def proxy(
    pen: Annotated[
        str,
        typer.Option(
            "--pen",
            envvar="MICROPEN_PEN",
            help="Pen URL: /dev/ttyUSB0, serial:///dev/ttyACM0?baud=N, socket://HOST:PORT, sim://",
        ),
    ],
    listen: Annotated[
        str, typer.Option("--listen", help="Where the host connects: pty or tcp:[HOST:]PORT.")
    ] = "pty",
    seed: Annotated[int, typer.Option("--seed", help="Seed of every fault draw.")] = 0,
    drop_frames: Annotated[
        float, typer.Option("--drop-frames", help="Probability a frame is lost (each way).")
    ] = 0.0,
    corrupt_bytes: Annotated[
        float, typer.Option("--corrupt-bytes", help="Probability a byte gets a bit flipped.")
    ] = 0.0,
    corrupt_frames: Annotated[
        float, typer.Option("--corrupt-frames", help="Probability a frame gets one bit flipped.")
    ] = 0.0,
    duplicate_frames: Annotated[
        float, typer.Option("--duplicate-frames", help="Probability a frame arrives twice.")
    ] = 0.0,
    delay_ms: Annotated[int, typer.Option("--delay-ms", help="Delay of every byte, ms.")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Statistics at exit as one JSON line.")
    ] = False,
) -> None:
    """Forward bytes between a host and a pen, injecting seeded link faults.

    Prints the listening address (pty path or TCP port) on the first line; statistics per
    direction at exit (Ctrl-C or SIGTERM).
    """
    try:
        spec = FaultSpec(drop_frames, corrupt_frames, duplicate_frames, corrupt_bytes, delay_ms)
        where = parse_listen(listen)
        link_proxy = LinkProxy(pen, where, spec, seed=seed)
    except (InvalidInput, ValueError) as exc:  # LocalProtocolError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    try:
        stats = asyncio.run(_run_cli(link_proxy))
    except HostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    except OSError as exc:
        print(f"error: cannot listen on {listen}: {exc.strerror or exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(json.dumps(stats, sort_keys=True) if as_json else _format_stats(stats), flush=True)


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(proxy)


def register(cli: typer.Typer) -> None:
    """How tools/cli.py adds ``micropen proxy``."""
    cli.command(name="proxy")(proxy)


if __name__ == "__main__":
    app()
