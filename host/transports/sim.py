"""The built-in simulator, in this process (``sim://?seed=7``).

The simulated pen runs on the event loop's clock. Everything above this transport — link,
handshake, safety checks, logs — is the same code that drives a real pen, so a green test on
``sim://`` means the same code path works on a bench. The pen survives close()/open(), so a
reconnect finds it as a real pen would be found: still in whatever state it reached.

Each transport powers a new unit on: a new boot id (``boot_seed=N`` makes them repeatable for a
test). With ``state=PATH`` the unit's non-volatile memory comes from, and goes to, that file
(``micropen.sim.statefile``): the file is locked from construction until close(), unlocked while
the port is closed (so the next ``sim://?state=PATH`` in this or another process can power the
unit on), and locked again by open() — if another process used the unit meanwhile, open() powers
a fresh instance on from the file (a host sees a new boot id), never overwrites what it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from micropen.protocol.errors import LocalProtocolError

from ..errors import PenURLError, TransportError
from ..pump import TIMER_SLACK_S
from ..url import PenURL

if TYPE_CHECKING:
    from micropen.sim.pen import SimulatedPen

__all__ = ["BoundBench", "SimTransport"]


class SimTransport:
    """Bytes in and out of an in-process SimulatedPen."""

    is_simulated = True

    def __init__(self, url: PenURL) -> None:
        from micropen.sim.pen import SimConfig

        query = url.text.partition("?")[2]
        try:
            self.config = SimConfig.from_query(query)
        except LocalProtocolError as exc:
            raise PenURLError(f"{url.text!r}: {exc}") from exc
        self.description = f"simulator {url.text}"
        self._lock = threading.Lock()  # the bench may be read from another thread
        self._origin: float | None = None
        self._clock: Callable[[], float] | None = None
        self.pen = self._power_on(0.0)
        self._wake: asyncio.Event | None = None
        self._open = False
        self.bench = BoundBench(self)

    def _power_on(self, now: float) -> SimulatedPen:
        """A new instance of the unit, its NVM from the state file when there is one."""
        from micropen.sim.pen import SimulatedPen
        from micropen.sim.statefile import StateFileError, StateFileMismatch

        try:
            return SimulatedPen(self.config, now=now)
        except StateFileMismatch as exc:
            raise PenURLError(str(exc)) from exc
        except StateFileError as exc:
            raise TransportError(str(exc)) from exc

    def now(self) -> float:
        """Seconds since the unit was first opened, on the event loop's clock (virtual under
        a test loop whose time jumps; readable from another thread)."""
        if self._origin is None or self._clock is None:
            return 0.0
        return self._clock() - self._origin

    async def open(self) -> None:
        from micropen.sim.statefile import StateFileError

        with self._lock:
            try:
                current = self.pen.reclaim_state()
            except StateFileError as exc:
                raise TransportError(str(exc)) from exc
            if not current:  # another process powered the unit meanwhile: ours is stale
                self.pen = self._power_on(self.now())
        if self._origin is None:
            self._clock = asyncio.get_running_loop().time
            self._origin = self._clock()
        self._wake = asyncio.Event()
        self._open = True

    async def read(self) -> bytes:
        while True:
            if not self._open or self._wake is None:
                raise TransportError(f"{self.description} is closed")
            self._wake.clear()
            with self._lock, _state_errors():
                now = self.now()
                self.pen.advance(now)
                out = self.pen.data_to_send(now)
                deadline = self.pen.next_deadline()
            if out:
                return out
            # wake at the pen's next deadline (at least every 50 ms) or when the host writes;
            # a timer may fire up to the clock's resolution early: wake a microsecond late
            wait = 0.05 if deadline is None else min(max(0.0, deadline - now) + TIMER_SLACK_S, 0.05)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def local_pairing(self, host_id: int) -> tuple[int, bytes]:
        """Pair ``host_id`` with this process's own simulated pen: the pen is on this desk, in
        this process (a local, physical act). Returns (pen id, key); nothing is written."""
        key = secrets.token_bytes(32)
        with self._lock, _state_errors():
            pen_id = self.pen.add_local_pairing(host_id, key, self.now())
        return pen_id, key

    def write(self, data: bytes) -> None:
        with self._lock, _state_errors():
            now = self.now()
            self.pen.receive_data(data, now)
            self.pen.advance(now)
        if self._wake is not None:
            self._wake.set()

    async def close(self) -> None:
        self._open = False
        if self._wake is not None:  # first: a reader waiting on it must end even if saving fails
            self._wake.set()
        with self._lock, _state_errors():
            self.pen.release_state()  # saved; the next power-on of this unit may take it


@contextlib.contextmanager
def _state_errors() -> Iterator[None]:
    """A state file that cannot be written is a transport failure, said in one line."""
    from micropen.sim.statefile import StateFileError

    try:
        yield
    except StateFileError as exc:
        raise TransportError(str(exc)) from exc


class _BoundInstrument:
    """A simulated instrument read at the transport's current time (of the pen powered now)."""

    def __init__(self, transport: SimTransport, name: str, reader: str) -> None:
        self._transport, self._name, self._reader = transport, name, reader

    @property
    def _instrument(self) -> Any:
        return getattr(self._transport.pen.bench, self._name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._instrument, name)

    def read(self) -> float:
        t = self._transport
        with t._lock, _state_errors():
            now = t.now()
            t.pen.advance(now)
            value: float = getattr(self._instrument, self._reader)(now)
            return value


class BoundBench:
    """The simulator's bench (gauge and tachometer), read now: ``bench.gauge.read()``."""

    def __init__(self, transport: SimTransport) -> None:
        self.gauge = _BoundInstrument(transport, "gauge", "read_mm")
        self.tachometer = _BoundInstrument(transport, "tachometer", "read_sps")
