"""Owned tasks: the three moves every long-lived part of the host makes with its tasks.

Connection, fleet bridge, calibration and proxy all start tasks, end them and run cleanup that
must finish (the pen stopped, the needles home, a goodbye published). Done by hand, each of
those is a place to swallow the caller's own cancellation or leave a task running after its
owner returned. Here they are written once:

* :class:`TaskScope` owns every task started in it; leaving the scope cancels and awaits the
  ones still running, and the first child to fail ends the scope with that error (siblings
  cancelled). Unlike ``asyncio.TaskGroup`` it raises the child's own exception, not an
  ``ExceptionGroup``, and never leaves the owner marked as cancelling (Python 3.11).
* :func:`cancel_and_wait` cancels tasks and waits until they have ended. If the caller is
  cancelled meanwhile it still waits for them, then re-raises the cancellation: an owner never
  returns while a task it owns is still running, and ``CancelledError`` is never swallowed.
* :func:`shielded` runs cleanup to its end even if the caller is cancelled (once or again)
  while it runs, then re-raises that cancellation.

Timeouts are ``asyncio.timeout`` scopes, not ``asyncio.wait_for`` (on 3.11 ``wait_for`` can
return normally when the awaited thing completes in the same instant as a cancel, gh-86296).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine, Iterable
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["TaskScope", "cancel_and_wait", "shielded", "wait_event"]

T = TypeVar("T")
log = logging.getLogger("micropen.host")


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]]) -> list[BaseException]:
    """Cancel ``tasks`` and wait until every one has ended; returns the exceptions they ended
    with (cancellations left out). A cancellation of the caller while it waits is re-raised
    once they have all ended."""
    owned = list(tasks)
    for task in owned:
        task.cancel()
    cancelled = False
    pending = {task for task in owned if not task.done()}
    while pending:
        try:
            _, pending = await asyncio.wait(pending)
        except asyncio.CancelledError:
            cancelled = True  # they are ending: wait for them, then pass the cancel on
    if cancelled:
        raise asyncio.CancelledError
    return [e for task in owned if not task.cancelled() and (e := task.exception()) is not None]


async def shielded(work: Awaitable[T]) -> T:
    """Run ``work`` to its end whatever happens to the caller meanwhile. If the caller was
    cancelled, the cancellation is re-raised after ``work`` ended (its own error is logged:
    the cancellation is what the caller must see)."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():  # not the work's own cancel: the caller's, even when
                cancelled = True  # the work finished in the same step
    if cancelled:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("cleanup failed while cancelled: %s", error)
        raise asyncio.CancelledError
    return task.result()


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds (a timeout scope, not ``wait_for``);
    True if it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


class TaskScope:
    """An owner for tasks: ``async with TaskScope() as scope: scope.start(coro)``.

    On the way out of the ``async with`` every task still running is cancelled and awaited.
    A child that fails cancels the owner's body (and its siblings) at once, and the scope
    raises that child's exception. A child that returns or is cancelled ends nothing else."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._owner: asyncio.Task[Any] | None = None
        self._failure: BaseException | None = None
        self._owner_cancelled = False
        self._closed = False

    async def __aenter__(self) -> TaskScope:
        self._owner = asyncio.current_task()
        return self

    def start(self, coro: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
        """Start a task owned by this scope."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"task scope {self.name!r} is closed")
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._child_done)
        return task

    def _child_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (error := task.exception()) is None or self._failure is not None:
            return
        self._failure = error
        if self._owner is not None and not self._closed:
            self._owner.cancel()
            self._owner_cancelled = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        interrupted = False
        try:
            errors = await cancel_and_wait(list(self._tasks))
        except asyncio.CancelledError:
            interrupted, errors = True, []
        for error in errors:
            if error is not self._failure:
                log.error("task in %s failed while it was being cancelled: %s", self.name, error)
        if self._owner_cancelled and self._owner is not None:
            if self._owner.uncancel() > 0:  # the caller cancelled too: that goes first
                raise asyncio.CancelledError
            if exc is not None and not isinstance(exc, asyncio.CancelledError):
                log.error("task in %s failed: %s", self.name, self._failure)
                return  # the body's own error, raised while the child's was pending
            assert self._failure is not None
            raise self._failure
        if interrupted:
            raise asyncio.CancelledError
        if self._failure is not None:  # a child failed while the scope was closing
            if exc is None:
                raise self._failure
            log.error("task in %s failed: %s", self.name, self._failure)
