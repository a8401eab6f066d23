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

import asyncio
import atexit
import contextlib
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from .connection import AsyncPen

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
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="micropen-loop", daemon=True
        )
        self._thread.start()
        try:
            self._async: AsyncPen = self._call(AsyncPen.open(url, **options))
        except BaseException:
            self._stop_loop()
            raise
        _open_pens.add(self)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        finished = threading.Event()
        future: Future[T] = asyncio.run_coroutine_threadsafe(
            _signal_when_done(coro, finished), self._loop
        )
        try:
            return future.result(timeout)
        except KeyboardInterrupt:
            # AsyncPen.run stops the pen and collects its report in a shielded cleanup: let it
            # finish before the interrupt goes on to close() and out of the process
            future.cancel()
            finished.wait(CLEANUP_GRACE_S)
            raise

    def run_coroutine(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the pen's own loop thread (beside its heartbeats) and wait."""
        return self._call(coro, timeout)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close(self) -> None:
        _open_pens.discard(self)
        if self._loop.is_closed():
            return
        try:
            self._call(self._async.close())
        finally:
            self._stop_loop()

    def __enter__(self) -> Pen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def async_pen(self) -> AsyncPen:
        return self._async

    def __getattr__(self, name: str) -> Any:
        """Coroutine methods of AsyncPen become blocking methods; attributes pass through."""
        attr = getattr(self._async, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._call(attr(*args, **kwargs))

        blocking.__name__ = name
        blocking.__doc__ = attr.__doc__
        return blocking

    def add_listener(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """``callback`` runs on the pen's loop thread; keep it short."""
        return self._async.add_listener(callback)


def open_pen(url: str = "auto", **options: Any) -> Pen:
    """Connect to a pen and handshake; the blocking API."""
    return Pen(url, **options)


async def _signal_when_done(coro: Coroutine[Any, Any, T], finished: threading.Event) -> T:
    try:
        return await coro
    finally:
        finished.set()
