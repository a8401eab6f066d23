"""An event loop on a thread of its own, for blocking code that drives asyncio objects.

The sync ``Pen`` facade and the ``ProxyThread`` both keep an asyncio object alive (heartbeats,
forwarding) while a script or a test does blocking work. One helper owns that loop thread:
started in ``__init__``, stopped and joined in :meth:`stop`; a daemon, so a script that
forgets to close still exits. :meth:`call` runs a coroutine there and waits; Ctrl-C during the
wait cancels the coroutine and lets its shielded cleanup (the pen stopped) finish, bounded,
before the ``KeyboardInterrupt`` goes on.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """One event loop running on one daemon thread owned by this object."""

    def __init__(self, name: str, cleanup_grace: float = 5.0) -> None:
        self.cleanup_grace = cleanup_grace
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Start ``coro`` on the loop; the returned future resolves when it ends."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(
        self,
        coro: Coroutine[Any, Any, T],
        timeout: float | None = None,
        *,
        cancel_on_interrupt: bool = True,
    ) -> T:
        """Run ``coro`` on the loop and wait for its result (``timeout`` in seconds).

        Ctrl-C cancels it (unless ``cancel_on_interrupt`` is False: closing runs to its end)
        and waits, at most ``cleanup_grace`` s, for it to end — its shielded cleanup stops the
        pen and collects the run's report — before the KeyboardInterrupt goes on. A second
        Ctrl-C meanwhile does not cut that short."""
        finished = threading.Event()
        future = self.submit(_signal_when_done(coro, finished))
        try:
            return future.result(timeout)
        except KeyboardInterrupt:
            if cancel_on_interrupt:
                future.cancel()
            self._wait_through_interrupts(finished)
            raise
        except TimeoutError:
            future.cancel()
            self._wait_through_interrupts(finished)
            raise

    def _wait_through_interrupts(self, finished: threading.Event) -> None:
        deadline = time.monotonic() + self.cleanup_grace
        while not finished.is_set() and (left := deadline - time.monotonic()) > 0:
            try:
                finished.wait(left)
            except KeyboardInterrupt:
                continue  # the pen is being stopped: one Ctrl-C is enough

    @property
    def running(self) -> bool:
        return not self.loop.is_closed()

    def stop(self) -> None:
        """Stop the loop, join its thread and close it (idempotent)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _signal_when_done(coro: Coroutine[Any, Any, T], finished: threading.Event) -> T:
    try:
        return await coro
    finally:
        finished.set()
