"""The synchronous facade: the whole Pen API for scripts, with no event-loop code.

The :class:`AsyncPen` runs on an event loop in a thread this object owns (started in ``open``,
joined in ``close``), so heartbeats and telemetry keep flowing while the script does other
work — a script that sleeps between calls must not trip the pen's watchdog.

Ctrl-C during a call cancels it and waits (bounded) for its shielded cleanup — the pen stopped,
its report collected — before the KeyboardInterrupt reaches the script. A script that forgets
``close()`` still exits: the loop thread is a daemon and every open pen is closed (the pen
stopped first) at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from micropen.protocol import limits as L
from micropen.protocol.messages import (
    CalBank,
    CalData,
    CartridgeInfo,
    Identity,
    RunReport,
    SimParam,
    Status,
    Telemetry,
)
from micropen.protocol.schema import Message

from .connection import AsyncPen
from .errors import ConnectionLost, PenTimeout
from .loopthread import LoopThread
from .runs import RunBook

__all__ = ["Pen", "open_pen"]

T = TypeVar("T")
CLEANUP_GRACE_S = 5.0  # a cancelled call's cleanup: Stop (1 s) and the report (2 s), and slack
_open_pens: weakref.WeakSet[Pen] = weakref.WeakSet()


@atexit.register
def _close_forgotten_pens() -> None:
    for pen in list(_open_pens):
        with contextlib.suppress(Exception):  # one pen's failure must not keep the rest open
            pen.close()


class Pen:
    """Blocking wrapper around AsyncPen. Create with :func:`open_pen`."""

    def __init__(self, url: str = "auto", **options: Any) -> None:
        self._thread = LoopThread("micropen-loop", cleanup_grace=CLEANUP_GRACE_S)
        self._loop = self._thread.loop
        try:
            self._async: AsyncPen = self._call(AsyncPen.open(url, **options))
        except BaseException:
            self._thread.stop()
            raise
        _open_pens.add(self)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if not self._thread.running:
            coro.close()
            raise ConnectionLost("the connection is closed")
        return self._thread.call(coro, timeout)

    def run_coroutine(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the pen's own loop thread (beside its heartbeats) and wait."""
        return self._call(coro, timeout)

    def close(self) -> None:
        _open_pens.discard(self)
        if not self._thread.running:
            return
        try:
            self._thread.call(self._async.close(), cancel_on_interrupt=False)
        finally:
            self._thread.stop()

    def __enter__(self) -> Pen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def async_pen(self) -> AsyncPen:
        return self._async

    # ------------------------------------------------------------------ what the pen is
    @property
    def url(self) -> str:
        return self._async.url

    @property
    def identity(self) -> Identity | None:
        return self._async.identity

    @property
    def is_simulated(self) -> bool:
        return self._async.is_simulated

    @property
    def bench(self) -> Any:
        """The simulator's bench instruments (None for a real pen)."""
        return self._async.bench

    @property
    def last_status(self) -> Status | None:
        return self._async.last_status

    @property
    def runs(self) -> RunBook:
        return self._async.runs

    @property
    def counters(self) -> dict[str, int]:
        return self._async.counters

    @property
    def recorder(self) -> Any:
        return self._async.recorder

    @property
    def connected(self) -> bool:
        return self._async.connected

    @property
    def closed(self) -> bool:
        return self._async.closed

    def statistics(self) -> dict[str, Any]:
        return self._async.statistics()

    def go_silent(self, seconds: float) -> None:
        self._loop.call_soon_threadsafe(self._async.go_silent, seconds)

    # ------------------------------------------------------------------ the blocking API
    def status(self) -> Status:
        return self._call(self._async.status())

    def cartridge(self) -> CartridgeInfo:
        return self._call(self._async.cartridge())

    def set_depth(
        self,
        depth_mm: float,
        *,
        area: L.Area | str | None = None,
        override_reason: str | None = None,
    ) -> None:
        self._call(self._async.set_depth(depth_mm, area=area, override_reason=override_reason))

    def set_rate(self, rate_sps: int, *, area: L.Area | str | None = None) -> None:
        self._call(self._async.set_rate(rate_sps, area=area))

    def start_run(
        self, *, area: L.Area | str, strokes: int | None = None, seconds: float | None = None
    ) -> int:
        return self._call(self._async.start_run(area=area, strokes=strokes, seconds=seconds))

    def wait_run_end(self, run_id: int, timeout: float | None = None) -> RunReport:
        return self._call(self._async.wait_run_end(run_id, timeout))

    def run(
        self,
        *,
        depth_mm: float,
        rate_sps: int,
        area: L.Area | str,
        strokes: int | None = None,
        seconds: float | None = None,
        override_reason: str | None = None,
        on_telemetry: Callable[[Telemetry], None] | None = None,
    ) -> RunReport:
        """Set depth and rate, run, wait for the pen's report. Ctrl-C stops the pen first."""
        return self._call(
            self._async.run(
                depth_mm=depth_mm,
                rate_sps=rate_sps,
                area=area,
                strokes=strokes,
                seconds=seconds,
                override_reason=override_reason,
                on_telemetry=on_telemetry,
            )
        )

    def stop(self) -> None:
        self._call(self._async.stop())

    def emergency_stop(self) -> None:
        self._call(self._async.emergency_stop())

    def clear_fault(self) -> None:
        self._call(self._async.clear_fault())

    def enter_service_mode(self) -> None:
        """Bench-fixture runs only (calibration); see :meth:`AsyncPen.service_mode`."""
        self._call(self._async.enter_service_mode())

    def leave_service_mode(self) -> None:
        self._call(self._async.leave_service_mode())

    def set_watchdog(self, ms: int) -> None:
        self._call(self._async.set_watchdog(ms))

    def set_telemetry(self, hz: int) -> None:
        self._call(self._async.set_telemetry(hz))

    def telemetry(self, maxsize: int = 1000, timeout: float | None = None) -> Iterator[Telemetry]:
        """``for sample in pen.telemetry():`` — blocking; the oldest samples are dropped if the
        loop falls ``maxsize`` behind. ``timeout`` bounds the wait for each sample
        (PenTimeout)."""
        samples: queue.Queue[Telemetry] = queue.Queue(maxsize)

        def put(message: Any) -> None:
            if isinstance(message, Telemetry):
                if samples.full():
                    with contextlib.suppress(queue.Empty):
                        samples.get_nowait()
                samples.put_nowait(message)

        remove = self._async.add_listener(put)
        try:
            while True:
                try:
                    yield samples.get(timeout=timeout)
                except queue.Empty:
                    raise PenTimeout(f"no telemetry within {timeout} s") from None
        finally:
            remove()

    def cal_read(self, bank: CalBank = CalBank.ACTIVE) -> CalData:
        return self._call(self._async.cal_read(bank))

    def cal_write(
        self,
        *,
        depth_gain_ppm: int,
        depth_offset_um: int,
        rate_gain_ppm: int,
        counter: int,
        written_at: int | None = None,
        version: int = 1,
    ) -> int:
        return self._call(
            self._async.cal_write(
                depth_gain_ppm=depth_gain_ppm,
                depth_offset_um=depth_offset_um,
                rate_gain_ppm=rate_gain_ppm,
                counter=counter,
                written_at=written_at,
                version=version,
            )
        )

    def cal_commit(self, crc: int) -> None:
        self._call(self._async.cal_commit(crc))

    def sim_set(self, param: SimParam, value: int) -> None:
        self._call(self._async.sim_set(param, value))

    def sim_get(self, param: SimParam) -> int:
        return self._call(self._async.sim_get(param))

    def request(
        self, build: Callable[[int], Message], *, urgent: bool = False, timeout: float | None = None
    ) -> Message:
        """Any command as built, with no host-side checks (conformance suites, benches)."""
        return self._call(self._async.request(build, urgent=urgent, timeout=timeout))

    def wait_connected(self, timeout: float) -> None:
        self._call(self._async.wait_connected(timeout))

    def add_listener(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """``callback`` runs on the pen's loop thread; keep it short."""
        return self._async.add_listener(callback)


def open_pen(url: str = "auto", **options: Any) -> Pen:
    """Connect to a pen and handshake; the blocking API."""
    return Pen(url, **options)
