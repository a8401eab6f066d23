"""Session supervision: link epochs one after another, reconnects, and failing for good.

One supervisor task per connection, started by ``start()`` and ended by ``close()``. It runs a
link epoch (reader, ticker and handshake in one :class:`TaskScope`) until the link drops, then
reopens the transport with backoff and runs the next. Transient errors (a slow handshake, a
port that cannot be opened yet) are retried; only a different pen, an incompatible schema, a
treatment log that cannot record, or a bug end the connection for good — and then every
waiter gets a typed error and the pen is sent Stop where a run of ours may be going.

What a session means to the pen (handshake, reply cache, runs) is its owner's business: the
owner implements :class:`SessionOwner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from micropen.protocol.errors import MicropenError

from .errors import ConnectionLost, DifferentPen, HostError, SchemaMismatch
from .pump import LinkDown, LinkPump, NotRecorded
from .tasks import TaskScope, cancel_and_wait

__all__ = ["RECONNECT_BACKOFF", "SessionOwner", "Supervisor"]

log = logging.getLogger("micropen.host")

RECONNECT_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class SessionOwner(Protocol):
    """What the supervisor asks of the connection it supervises."""

    async def handshake(self, first: bool) -> None:
        """Hello, session, status on a fresh epoch; sets ``ready`` when done."""

    async def stop_without_session(self) -> None:
        """Send Stop on a fresh epoch without a handshake (then raise LinkDown)."""

    def owns_a_run(self) -> bool:
        """Whether a run this connection started may still be going."""

    def link_lost(self, reason: str) -> None:
        """Tell listeners and the log (may raise NotRecorded)."""

    def link_down_for(self, seconds: float, reason: str) -> None:
        """The link has been down this long: give up on what cannot wait any more."""

    def failed(self, error: BaseException) -> None:
        """The connection is over: every waiter gets ``error``."""


class Supervisor:
    """Runs link epochs for one connection until it is closed or fails for good."""

    def __init__(
        self,
        pump: LinkPump,
        owner: SessionOwner,
        *,
        name: str,
        reconnect: bool,
        ready: asyncio.Event,
    ) -> None:
        self.pump = pump
        self.owner = owner
        self.name = name
        self.reconnect = reconnect
        self.ready = ready  # set: a handshake completed on the current epoch (heartbeats flow)
        self.closing = False
        self.fatal: BaseException | None = None  # why the connection ended for good
        self.unrecorded: BaseException | None = None  # the log's error, if that ended it
        self._task: asyncio.Task[None] | None = None
        self._down_since: float | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._supervise(), name=f"pen {self.name}")
        return self._task

    async def close(self) -> None:
        """End the supervisor task and wait for it (re-raising a cancel of the caller)."""
        self.closing = True
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task])

    def fail_for_good(self, error: BaseException, fatal: bool = True) -> None:
        """Every pending command, every run waiter and every later call get ``error``."""
        if fatal and self.fatal is None:
            self.fatal = error
        self.ready.clear()
        self.owner.failed(error)

    def up(self) -> None:
        """The handshake of this epoch is complete."""
        self._down_since = None
        self.ready.set()

    # ------------------------------------------------------------------ the task
    async def _supervise(self) -> None:
        """Whatever ends it — a bug included — leaves the connection failed for good with a
        typed error and the pen stopped where it can be reached; only the caller's
        cancellation (close) passes through untouched."""
        try:
            await self._epochs()
        except Exception as bug:
            log.exception("the connection to %s failed", self.name)
            error = HostError(
                f"the connection to {self.name} failed internally ({type(bug).__name__}: {bug}); "
                "the pen was sent Stop — reconnect to continue, and report this"
            )
            await self._stop_and_fail(error)

    async def _epochs(self) -> None:
        first = True
        while not self.closing:
            reason = await self.run_epoch(self.owner.handshake(first))
            self.ready.clear()
            if self.unrecorded is not None:
                await self._stop_and_fail(self.unrecorded)
                return
            if self.closing or self.fatal is not None:
                self.fail_for_good(self.fatal or ConnectionLost("the connection was closed"))
                return
            first = False
            try:
                self.owner.link_lost(reason)
            except NotRecorded as failed:
                self.unrecorded = failed.args[1]  # reported once, as why this ended
                await self._stop_and_fail(failed.args[1])
                return
            log.warning("link to %s lost: %s", self.pump.transport.description, reason)
            if not self.reconnect:
                self.fail_for_good(ConnectionLost(f"link lost: {reason}"))
                return
            await self._reopen(reason)

    async def run_epoch(self, job: Coroutine[Any, Any, None]) -> str:
        """Run one link epoch (reader, ticker and ``job``) until it ends; returns why."""
        self.pump.new_epoch()
        ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        async with TaskScope(f"link epoch {self.name}") as scope:
            for task in (self.pump.reader(), self.pump.ticker(), job):
                scope.start(self._until_link_down(task, ended))
            return await ended

    async def _until_link_down(
        self, job: Coroutine[Any, Any, None], ended: asyncio.Future[str]
    ) -> None:
        """Run one epoch task; the first that ends the epoch says why."""
        try:
            await job
        except NotRecorded as exc:
            self.unrecorded = exc.args[1]
            _settle(ended, str(exc.args[0]))
        except (SchemaMismatch, DifferentPen) as exc:  # no point reconnecting
            self.fail_for_good(exc)
            _settle(ended, str(exc))
        except (LinkDown, HostError) as exc:  # transient: a slow handshake, a lost port
            _settle(ended, str(exc))
        except Exception as exc:  # a bug: let the supervisor fail loudly
            if not ended.done():
                ended.set_exception(exc)

    async def _reopen(self, reason: str) -> None:
        """Reopen the transport with backoff; the owner hears how long the link is down."""
        if self._down_since is None:
            self._down_since = self.pump.now()
        backoff = iter(RECONNECT_BACKOFF)
        transport = self.pump.transport
        while not self.closing:
            await asyncio.sleep(next(backoff, RECONNECT_BACKOFF[-1]))
            self.owner.link_down_for(self.pump.now() - self._down_since, reason)
            with contextlib.suppress(HostError):
                await transport.close()
            try:
                await transport.open()
                return
            except HostError as exc:
                log.info("reconnect to %s failed: %s", transport.description, exc)

    async def _stop_and_fail(self, error: BaseException) -> None:
        """Stop the pen over a fresh epoch without a handshake (Stop needs none, and without
        a session the pen hands nothing over, so nothing unrecorded is acknowledged: the pen
        keeps it for a host that can record it). Then fail for good."""
        try:
            if self.owner.owns_a_run():  # only a run of ours is ours to stop
                await self.run_epoch(self.owner.stop_without_session())
        except MicropenError as exc:
            log.error("could not stop %s: %s", self.name, exc)
        except Exception:
            log.exception("could not stop %s", self.name)
        finally:
            self.fail_for_good(error)


def _settle(ended: asyncio.Future[str], reason: str) -> None:
    if not ended.done():
        ended.set_result(reason)
