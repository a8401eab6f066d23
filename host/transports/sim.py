"""The built-in simulator, in this process (``sim://?seed=7``).

The simulated pen runs on the event loop's clock. Everything above this transport — link,
handshake, safety checks, logs — is the same code that drives a real pen, so a green test on
``sim://`` means the same code path works on a bench. The pen survives close()/open(), so a
reconnect finds it as a real pen would be found: still in whatever state it reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from micropen.protocol.errors import LocalProtocolError

from ..errors import PenURLError
from ..url import PenURL

__all__ = ["BoundBench", "SimTransport"]


class SimTransport:
    """Bytes in and out of an in-process SimulatedPen."""

    is_simulated = True

    def __init__(self, url: PenURL) -> None:
        from micropen.sim.pen import SimConfig, SimulatedPen

        query = url.text.partition("?")[2]
        try:
            self.config = SimConfig.from_query(query)
        except LocalProtocolError as exc:
            raise PenURLError(f"{url.text!r}: {exc}") from exc
        self.description = f"simulator {url.text}"
        self._lock = threading.Lock()  # the bench may be read from another thread
        self._origin: float | None = None
        self.pen = SimulatedPen(self.config, now=0.0)
        self._wake: asyncio.Event | None = None
        self._open = False
        self.bench = BoundBench(self)

    def now(self) -> float:
        if self._origin is None:
            return 0.0
        import time

        return time.monotonic() - self._origin

    async def open(self) -> None:
        import time

        if self._origin is None:
            self._origin = time.monotonic()
        self._wake = asyncio.Event()
        self._open = True

    async def read(self) -> bytes:
        from ..errors import TransportError

        while True:
            if not self._open or self._wake is None:
                raise TransportError(f"{self.description} is closed")
            self._wake.clear()
            with self._lock:
                now = self.now()
                self.pen.advance(now)
                out = self.pen.data_to_send(now)
                deadline = self.pen.next_deadline()
            if out:
                return out
            # wake at the pen's next deadline (at least every 50 ms) or when the host writes
            wait = 0.05 if deadline is None else min(max(0.0, deadline - now), 0.05)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def write(self, data: bytes) -> None:
        with self._lock:
            now = self.now()
            self.pen.receive_data(data, now)
            self.pen.advance(now)
        if self._wake is not None:
            self._wake.set()

    async def close(self) -> None:
        self._open = False
        if self._wake is not None:
            self._wake.set()


class _BoundInstrument:
    """A simulated instrument read at the transport's current time."""

    def __init__(self, transport: SimTransport, instrument: Any, reader: str) -> None:
        self._transport, self._instrument, self._reader = transport, instrument, reader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._instrument, name)

    def read(self) -> float:
        t = self._transport
        with t._lock:
            now = t.now()
            t.pen.advance(now)
            value: float = getattr(self._instrument, self._reader)(now)
            return value


class BoundBench:
    """The simulator's bench (gauge and tachometer), read now: ``bench.gauge.read()``."""

    def __init__(self, transport: SimTransport) -> None:
        bench = transport.pen.bench
        self.gauge = _BoundInstrument(transport, bench.gauge, "read_mm")
        self.tachometer = _BoundInstrument(transport, bench.tachometer, "read_sps")
