"""The asyncio core: one connection to one pen, with heartbeat, telemetry and safe reconnect.

Structure (trio/anyio style): :class:`AsyncPen` owns one supervisor task; the supervisor owns a
TaskGroup per link session holding the reader and the ticker (heartbeat, retransmit timers,
log flushing). Nothing is fire-and-forget: ``close()`` cancels the supervisor and waits for it.

Reconnect without guessing: when the link drops (cable pulled, pen reset, pty closed), the
supervisor reports it, reopens the transport with backoff, opens a new link epoch, handshakes
again and compares the pen's ``boot_id``. Same boot: pending commands are re-sent with their
original ``cmd_id``, which the pen answers from its reply cache — never executing twice. New
boot: pending commands fail with PenRebooted and are not re-sent. Reports of runs that ended
while the link was down arrive anyway, because the pen re-sends unacknowledged events in the new
epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from micropen.protocol import limits as L
from micropen.protocol.errors import LocalProtocolError, MicropenError
from micropen.protocol.events import (
    BadMessage,
    Connected,
    LinkLost,
    MessageReceived,
    PeerReset,
)
from micropen.protocol.link import Link, Role
from micropen.protocol.messages import (
    PROTOCOL_VERSION,
    Ack,
    CalBank,
    CalCommit,
    CalData,
    CalRead,
    CalWrite,
    Capability,
    CartridgeInfo,
    ClearFault,
    EmergencyStop,
    ErrorCode,
    Event,
    EventCode,
    GetCartridge,
    GetStatus,
    Heartbeat,
    Hello,
    Identity,
    Nak,
    OpenSession,
    PenState,
    Run,
    RunMode,
    RunOutcome,
    RunReport,
    SetDepth,
    SetRate,
    SetTelemetry,
    SetWatchdog,
    SimGet,
    SimParam,
    SimParamValue,
    SimSet,
    Status,
    Stop,
    Telemetry,
    calibration_crc,
)
from micropen.protocol.schema import Kind, Message, schema_hash

from . import readiness, safety
from .errors import (
    ConnectionLost,
    DifferentPen,
    HostError,
    OutcomeUnknown,
    PenRebooted,
    PenRefused,
    PenTimeout,
    RateDrift,
    RunEndedElsewhere,
    SchemaMismatch,
)
from .ratewatch import Drift, RateWatch
from .runs import RunBook
from .transports import Transport, make_transport

__all__ = ["AsyncPen", "ConnectionNotice"]

log = logging.getLogger("micropen.host")
M = TypeVar("M", bound=Message)

HANDSHAKE_TIMEOUT = 2.0
LIVENESS_TIMEOUT = 0.75  # the host notices a dead link within 1 s
ACK_DELAY = 0.004
RECONNECT_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
STOP_TIMEOUT_S = 1.0  # an urgent Stop is answered in milliseconds; past this, the watchdog
REPORT_AFTER_STOP_S = 2.0  # the run report follows the Stop's Ack at once
RUN_REPORT_GRACE_S = 2.0  # beyond the pen's watchdog, how long a run's waiters wait for a link
BAD_MESSAGE_LOG_EVERY_S = 10.0
RATE_WATCH_HZ = 20  # telemetry the host turns on for run() when it is off: its rate check
# Safe to send again whatever happened to the first copy: queries change nothing, and the stops
# are idempotent (the pen always executes them, never answers them from its cache).
QUERIES = (GetStatus, GetCartridge, CalRead, SimGet)
SAFE_TO_REPEAT = (*QUERIES, Stop, EmergencyStop)


@dataclass(frozen=True, slots=True)
class ConnectionNotice:
    """Told to listeners when the link goes down or comes back."""

    kind: str  # "lost" | "reconnected" | "rebooted"
    detail: str


@dataclass(slots=True)
class _Pending:
    message: Message
    future: asyncio.Future[Message]
    urgent: bool


class _LinkDown(Exception):
    """Internal: the current link session ended (reason in args[0])."""


class _NotRecorded(_LinkDown):
    """Internal: the log could not store what the pen handed over; end this epoch at once,
    before an acknowledgement of it can leave (args[1] is the log's error)."""


class AsyncPen:
    """One pen, driven from asyncio. Use :meth:`open`; the same API for every transport."""

    def __init__(
        self,
        transport: Transport,
        *,
        url: str,
        command_timeout: float = 2.0,
        reconnect: bool = True,
        recorder: Any = None,
        open_session: bool = True,
    ) -> None:
        self.transport = transport
        self.url = url
        self.is_simulated = transport.is_simulated
        self.bench = transport.bench
        self.command_timeout = command_timeout
        self.reconnect_enabled = reconnect
        self.recorder = recorder
        # Without a session the pen hands over no records (they stay on it for a host that can
        # log them) and answers nothing from its reply cache: what a stop-only host uses when
        # its log cannot be written. Stop and EmergencyStop need no session.
        self.open_session = open_session
        self._run_in_flight = False  # a Run was sent whose run id is not known yet
        self.identity: Identity | None = None
        self.last_status: Status | None = None
        self.telemetry_hz = 0  # as last set on the pen (from the handshake's status, then ours)
        self.slowest_retract_ms: int | None = None  # from the pen's RETRACTED events
        self._link = self._new_link()
        self._cmd_ids = itertools.count(random.randrange(1, 1 << 30))
        # Names this host session to the pen (kept across reconnects): its reply cache answers
        # a re-sent command only for the session that sent it first.
        self.session = random.randrange(1, 1 << 32)
        self._pending: dict[int, _Pending] = {}
        self._listeners: list[Callable[[Any], None]] = []
        self.runs = RunBook()
        self._bad_messages_logged_at = -math.inf
        self._ready = asyncio.Event()
        self._kick = asyncio.Event()
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._unrecorded: BaseException | None = None
        self._down_since: float | None = None  # when the link went down (None: it is up)
        self._heartbeats = itertools.count()
        self._heartbeat_interval = L.HEARTBEAT_DEFAULT_MS / 4000
        self._last_heartbeat = 0.0
        self._silent_until = 0.0
        self._ticker_wake_at = 0.0
        self._override_reason: str | None = None
        self.counters = {
            "reconnects": 0,
            "late_replies": 0,
            "mismatched_replies": 0,
            "commands": 0,
            "bad_messages": 0,
        }

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    async def open(
        cls,
        url: str = "auto",
        *,
        log: Any = True,
        operator: str = "",
        purpose: str = "treatment",
        **options: Any,
    ) -> AsyncPen:
        """Open the transport, handshake, and start the heartbeat.

        Everything the pen hands over (run reports, events, faults) is recorded in the
        treatment log before it is acknowledged: ``log=True`` (the default) uses the log at its
        default place (``$MICROPEN_HOME`` or the per-user data folder), a path or a
        ``TreatmentLog`` uses that one, ``log=False`` opts out — the pen's records are then
        acknowledged and kept nowhere, so opt out only where nothing real is treated.
        ``purpose`` names the session ("treatment", "calibration", "conformance", ...)."""
        transport_options = {k: options.pop(k) for k in ("usb_backend",) if k in options}
        if "recorder" not in options:
            options["recorder"] = _default_recorder(log, operator, purpose)
        transport = make_transport(url, **transport_options)
        pen = cls(transport, url=url, **options)
        await pen._start()
        return pen

    async def __aenter__(self) -> AsyncPen:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self) -> None:
        await self.transport.open()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"pen {self.url}")
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait(
            {ready, self._supervisor}, timeout=HANDSHAKE_TIMEOUT + 1, return_when="FIRST_COMPLETED"
        )
        if ready not in done:
            ready.cancel()
            error = self._fatal
            await self.close()
            if error is not None:
                raise error
            raise PenTimeout(
                f"no handshake with {self.transport.description} within "
                f"{HANDSHAKE_TIMEOUT + 1:.0f} s; is it a micropen?"
            )

    async def close(self) -> None:
        """Stop the pen if a run of ours is going, then stop the tasks and release the port.
        Pending commands fail with ConnectionLost."""
        if self._closing:
            return
        if self.runs.active and self._ready.is_set() and self._fatal is None:
            await asyncio.shield(self._stop_active_runs())
        self._closing = True
        sup, self._supervisor = self._supervisor, None
        if sup is not None:
            sup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sup
        self._fail_for_good(ConnectionLost("the connection was closed"), fatal=False)
        with contextlib.suppress(HostError):
            await self.transport.close()
        if self.recorder is not None:
            try:
                self.recorder.close_session("closed")
            except MicropenError:
                if self._unrecorded is None:  # already reported as the reason this ended
                    raise

    # ------------------------------------------------------------------ supervisor
    async def _supervise(self) -> None:
        """Owns the link sessions and the reconnects. Whatever ends it — a bug included —
        leaves the connection failed for good with a typed error and the pen stopped where it
        can be reached; only the caller's cancellation (close) passes through untouched."""
        try:
            await self._supervise_sessions()
        except Exception as bug:
            log.exception("the connection to %s failed", self.url)
            error = HostError(
                f"the connection to {self.url} failed internally ({type(bug).__name__}: {bug}); "
                "the pen was sent Stop — reconnect to continue, and report this"
            )
            await self._stop_and_fail(error)

    async def _supervise_sessions(self) -> None:
        first = True
        while not self._closing:
            reason = await self._one_session(first)
            self._ready.clear()
            if self._unrecorded is not None:
                await self._stop_and_fail(self._unrecorded)
                return
            if self._closing or self._fatal is not None:
                self._fail_for_good(self._fatal or ConnectionLost("the connection was closed"))
                return
            first = False
            try:
                self._notify(ConnectionNotice("lost", reason))
            except _NotRecorded as failed:
                await self._stop_and_fail(failed.args[1])
                return
            log.warning("link to %s lost: %s", self.transport.description, reason)
            if not self.reconnect_enabled:
                self._fail_for_good(ConnectionLost(f"link lost: {reason}"))
                return
            await self._reopen(reason)

    async def _reopen(self, reason: str) -> None:
        """Reopen the transport with backoff. A run of ours cannot report while the link is
        down; past the pen's own watchdog (it has stopped by then) its waiters are told so."""
        if self._down_since is None:
            self._down_since = self._now()
        down_at = self._down_since
        grace = 4 * self._heartbeat_interval + RUN_REPORT_GRACE_S
        backoff = iter(RECONNECT_BACKOFF)
        while not self._closing:
            await asyncio.sleep(next(backoff, RECONNECT_BACKOFF[-1]))
            if self.runs.active and self._now() - down_at > grace:
                self.runs.fail_active(
                    ConnectionLost(
                        f"the link to {self.transport.description} has been down for "
                        f"{self._now() - down_at:.1f} s ({reason}); the pen stopped on its own "
                        "(watchdog) and keeps the run's report for the next connection"
                    )
                )
            with contextlib.suppress(HostError):
                await self.transport.close()
            try:
                await self.transport.open()
                return
            except HostError as exc:
                log.info("reconnect to %s failed: %s", self.transport.description, exc)

    def _fail_for_good(self, error: BaseException, fatal: bool = True) -> None:
        """Every pending command, every run waiter and every later call get ``error``."""
        if fatal and self._fatal is None:
            self._fatal = error
        self._ready.clear()
        self._fail_pending(error)
        self.runs.fail_active(error)

    async def _stop_and_fail(self, error: BaseException) -> None:
        """Stop the pen over a fresh epoch without a handshake (Stop needs none, and without
        a session the pen hands nothing over, so nothing unrecorded is acknowledged: the pen
        keeps it for a host that can record it). Then fail for good."""
        try:
            if self.runs.active or self._run_in_flight:  # only a run of ours is ours to stop
                await self._one_session(False, self._stop_before_handshake())
        except Exception:
            log.exception("could not stop %s", self.url)
        finally:
            self._fail_for_good(error)

    async def _stop_before_handshake(self) -> None:
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                await self._wait_link_connected()
            await self._request(
                lambda c: Stop(c), urgent=True, handshake=True, timeout=STOP_TIMEOUT_S
            )
        except (TimeoutError, HostError) as exc:
            log.error("could not stop %s: %s", self.url, exc)
        raise _LinkDown("the pen was stopped: this connection is ending")

    async def _stop_active_runs(self) -> None:
        """Closing while a run of ours is going: Stop (urgent), then wait for the pen's
        report, so the log and the caller get the exact count. Bounded. Nothing is sent when
        no run of ours is going: another host's run is not ours to stop."""
        if not self.runs.active and not self._run_in_flight:
            return
        with contextlib.suppress(MicropenError):
            await self._request(lambda c: Stop(c), urgent=True, timeout=STOP_TIMEOUT_S)
        for run_id in list(self.runs.active):
            with contextlib.suppress(MicropenError):
                await self.runs.wait(run_id, timeout=REPORT_AFTER_STOP_S)

    async def _one_session(self, first: bool, job: Coroutine[Any, Any, None] | None = None) -> str:
        """Run one link epoch until it ends; returns why it ended."""
        unsent = self._link.connect(self._now())
        del unsent  # the pending table, not the link, decides what is re-sent
        self._flush()
        # The session's tasks are owned here and always cancelled and awaited on the way out.
        # (Not a TaskGroup: on 3.11 a TaskGroup whose child fails leaves its parent marked as
        # cancelling, which would hide a real cancellation of the supervisor.)
        ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        tasks = [
            asyncio.create_task(self._until_link_down(job, ended))
            for job in (self._reader(), self._ticker(), job or self._handshake(first))
        ]
        try:
            return await ended
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)

    async def _until_link_down(
        self, job: Coroutine[Any, Any, None], ended: asyncio.Future[str]
    ) -> None:
        """Run one session task; the first that ends the session says why."""
        try:
            await job
        except _NotRecorded as exc:
            self._unrecorded = exc.args[1]
            if not ended.done():
                ended.set_result(str(exc.args[0]))
        except (SchemaMismatch, DifferentPen) as exc:  # no point reconnecting
            self._fail_for_good(exc)
            if not ended.done():
                ended.set_result(str(exc))
        except (_LinkDown, HostError) as exc:  # transient: a slow handshake, a lost port
            if not ended.done():
                ended.set_result(str(exc))
        except Exception as exc:  # a bug: let the supervisor fail loudly
            if not ended.done():
                ended.set_exception(exc)

    async def _handshake(self, first: bool) -> None:
        await self._wait_link_connected()
        try:
            reply = await self._request(
                lambda c: Hello(c, PROTOCOL_VERSION, schema_hash()),
                handshake=True,
                timeout=HANDSHAKE_TIMEOUT,
            )
        except PenRefused as refused:
            if refused.code is ErrorCode.SCHEMA_MISMATCH:  # Nak value = ours, limit = the pen's
                raise SchemaMismatch(
                    PROTOCOL_VERSION, schema_hash(), -1, refused.limit & 0xFFFF_FFFF
                ) from None
            raise
        assert isinstance(reply, Identity)
        if reply.protocol_version != PROTOCOL_VERSION or reply.schema_hash != schema_hash():
            raise SchemaMismatch(
                PROTOCOL_VERSION, schema_hash(), reply.protocol_version, reply.schema_hash
            )
        previous = self.identity
        _check_same_unit(previous, reply, self.transport.description)
        self.identity = reply
        self.is_simulated = self.transport.is_simulated or bool(
            reply.capabilities & Capability.SIMULATOR
        )
        rebooted = previous is not None and previous.boot_id != reply.boot_id
        if self.recorder is not None:  # ready to record before the pen hands anything over
            try:
                self.recorder.on_connected(self, first)
            except MicropenError as exc:  # no session opened: the pen keeps its records
                raise _NotRecorded("the treatment log failed", exc) from exc
        resumed = False
        if self.open_session:
            opened = await self._request(
                lambda c: OpenSession(c, self.session), handshake=True, timeout=HANDSHAKE_TIMEOUT
            )
            resumed = isinstance(opened, Ack) and opened.value == 1
        status = await self._request(
            lambda c: GetStatus(c), handshake=True, timeout=HANDSHAKE_TIMEOUT
        )
        assert isinstance(status, Status)
        self.last_status = status
        self.telemetry_hz = status.telemetry_hz
        self._heartbeat_interval = status.watchdog_ms / 4000
        if rebooted:
            self._notify(ConnectionNotice("rebooted", f"boot {reply.boot_id:08x}"))
            self.runs.fail_active(
                PenRebooted(
                    "the pen restarted during the run; its report went with its memory — the "
                    "strokes delivered are in status().lifetime_strokes, the log marks the run "
                    "interrupted"
                )
            )
        if not first:
            self._resend_pending(resumed, rebooted)
            self._runs_ended_elsewhere(status)
        if not first:
            self.counters["reconnects"] += 1
            self._notify(ConnectionNotice("reconnected", self.transport.description))
        self._down_since = None
        self._ready.set()

    async def _wait_link_connected(self) -> None:
        while not self._link.connected:
            self._kick.clear()
            await self._kick.wait()

    def _resend_pending(self, resumed: bool, rebooted: bool) -> None:
        """Re-send what had no answer. Only while the pen still holds this session's reply
        cache is that safe for every command; otherwise a command that may already have run
        fails as OutcomeUnknown (the caller resolves it from the pen's state). After a reboot
        only queries are re-sent: the rest fail as PenRebooted (the pen forgot them)."""
        now = self._now()
        for cmd_id, pending in list(self._pending.items()):
            message = pending.message
            if message.KIND not in (Kind.COMMAND, Kind.SIM_COMMAND) or pending.future.done():
                continue
            name = type(message).__name__
            if isinstance(message, QUERIES if rebooted else SAFE_TO_REPEAT) or (
                resumed and not rebooted
            ):
                self._link.send(message, now, urgent=pending.urgent)
                continue
            error: HostError = (
                PenRebooted(
                    f"the pen restarted while {name} was pending; it was not re-sent — check "
                    "status() before repeating it"
                )
                if rebooted
                else OutcomeUnknown(
                    f"the link dropped before the pen answered {name} and the pen no longer "
                    "holds this session's replies; it may or may not have been executed — "
                    "call status() to resynchronise"
                )
            )
            pending.future.set_exception(error)
            self._pending.pop(cmd_id, None)
        self._flush()

    # ------------------------------------------------------------------ I/O tasks
    async def _reader(self) -> None:
        link = self._link
        while True:
            data = await self.transport.read()
            link.receive_data(data, self._now())
            self._process_events()
            self._flush()

    async def _ticker(self) -> None:
        link = self._link
        while True:
            now = self._now()
            beat_due = now - self._last_heartbeat >= self._heartbeat_interval
            if self._ready.is_set() and beat_due and now >= self._silent_until:
                self._last_heartbeat = now
                link.send(Heartbeat(next(self._heartbeats) & 0xFFFF_FFFF), now)
            link.handle_timeout(now)
            self._process_events()
            self._flush()
            if self.recorder is not None:
                try:
                    self.recorder.flush_samples()
                except MicropenError as exc:
                    raise _NotRecorded("the treatment log failed", exc) from exc
            deadline = link.next_deadline()
            wake = self._last_heartbeat + self._heartbeat_interval
            if deadline is not None:
                wake = min(wake, deadline)
            self._kick.clear()
            pause = max(0.0, min(wake - now, 0.1))
            self._ticker_wake_at = now + pause
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):  # not wait_for: 3.11's can swallow a cancel
                    await self._kick.wait()

    def go_silent(self, seconds: float) -> None:
        """Send nothing at all (no heartbeat, no acknowledgement) for ``seconds``: how a test
        or a bench proves the pen's watchdog stops the needles when the host goes quiet."""
        self._silent_until = self._now() + seconds

    def _flush(self) -> None:
        if self._now() < self._silent_until:
            return
        data = self._link.data_to_send(self._now())
        if data:
            self.transport.write(data)

    def _now(self) -> float:
        return time.monotonic()

    def _process_events(self) -> None:
        link = self._link
        while (event := link.next_event()) is not None:
            if isinstance(event, MessageReceived):
                self._on_message(event.message)
            elif isinstance(event, Connected):
                self._kick.set()
            elif isinstance(event, BadMessage):
                self._count_bad_message(event.error)
            elif isinstance(event, LinkLost | PeerReset):
                raise _LinkDown(event.reason)

    def _count_bad_message(self, error: object) -> None:
        """Counted always; logged at most once per BAD_MESSAGE_LOG_EVERY_S (a noisy line must
        not flood the log with thousands of identical warnings)."""
        self.counters["bad_messages"] += 1
        now = self._now()
        if now - self._bad_messages_logged_at >= BAD_MESSAGE_LOG_EVERY_S:
            self._bad_messages_logged_at = now
            log.warning(
                "bad message from the pen: %s (%d so far)", error, self.counters["bad_messages"]
            )

    def _on_message(self, message: Message) -> None:
        if message.KIND is Kind.REPLY:
            pending = self._pending.get(message.cmd_id)  # type: ignore[attr-defined]
            if pending is None or pending.future.done():
                self.counters["late_replies"] += 1  # its request timed out: never mis-matched
                return
            expected = type(pending.message).REPLY
            if expected is not None and not isinstance(message, expected | Nak):
                # not an answer to this request (a stale cache entry, a confused peer): never
                # let it resolve the request
                self.counters["mismatched_replies"] += 1
                return
            pending.future.set_result(message)
            return
        if self.recorder is not None:
            try:
                self.recorder.on_notification(message)
            except MicropenError as exc:  # not stored: it must not be acknowledged either
                raise _NotRecorded("the treatment log failed", _not_recorded(exc, message)) from exc
        if isinstance(message, RunReport):
            self.runs.reported(message)
        elif isinstance(message, Event) and message.code is EventCode.RETRACTED:
            self.slowest_retract_ms = max(self.slowest_retract_ms or 0, message.value)
        self._notify(message)

    def _notify(self, item: Any) -> None:
        if isinstance(item, ConnectionNotice) and self.recorder is not None:
            try:  # link notices are records too: a log that cannot take them ends the session
                self.recorder.on_notification(item)
            except MicropenError as exc:
                raise _NotRecorded("the treatment log failed", exc) from exc
        for callback in list(self._listeners):
            try:
                callback(item)
            except Exception:  # a listener's bug must not take the link down
                log.exception("listener %r failed", callback)

    # ------------------------------------------------------------------ requests
    async def _request(
        self,
        build: Callable[[int], Message],
        *,
        urgent: bool = False,
        handshake: bool = False,
        timeout: float | None = None,
    ) -> Message:
        if self._fatal is not None:
            raise self._fatal
        if self._closing:
            raise ConnectionLost("the connection is closed")
        if not handshake and not self._ready.is_set():
            await self._wait_ready(timeout or self.command_timeout)
        cmd_id = next(self._cmd_ids) & 0xFFFF_FFFF
        message = build(cmd_id)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[cmd_id] = _Pending(message, future, urgent)
        self.counters["commands"] += 1
        try:
            # the link may just have closed under us: the reconnect re-sends or fails it
            with contextlib.suppress(LocalProtocolError):
                self._link.send(message, self._now(), urgent=urgent)
            self._flush()
            deadline = self._link.next_deadline()
            if deadline is not None and deadline < self._ticker_wake_at:
                self._kick.set()  # the ticker sleeps past this frame's retransmit time
            try:
                async with asyncio.timeout(timeout or self.command_timeout):
                    reply = await future
            except TimeoutError:
                raise PenTimeout(
                    f"no answer to {type(message).__name__} within "
                    f"{timeout or self.command_timeout:.1f} s; its effect is unknown — "
                    "call status() to resynchronise"
                ) from None
        finally:
            self._pending.pop(cmd_id, None)
        if isinstance(reply, Nak):
            raise PenRefused(type(message).__name__, reply)
        return reply

    def _runs_ended_elsewhere(self, status: Status) -> None:
        """After a reconnect the pen has handed this session every record it still held
        (before answering the handshake's GetStatus). A run of ours that is over by the pen's
        status and was not reported here was reported to another host session (the link was
        taken over meanwhile): its waiters get the pen's own count instead of waiting for ever."""
        for run_id in list(self.runs.active):
            if status.run_id == run_id and status.run_outcome is RunOutcome.ACTIVE:
                continue
            strokes = status.run_strokes if status.run_id == run_id else None
            outcome = status.run_outcome.name.lower() if status.run_id == run_id else "ended"
            count = f"after {strokes} strokes " if strokes is not None else ""
            self.runs.fail_active(
                RunEndedElsewhere(
                    f"run {run_id} ended ({outcome}) {count}while another host had the link; "
                    "that host received and logged its report — see micropen log list",
                    run_id,
                    strokes,
                ),
                only=run_id,
            )

    async def _wait_ready(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            raise ConnectionLost(
                f"the link to {self.transport.description} is down and did not come back "
                f"within {timeout:.1f} s"
            ) from None

    def _fail_pending(self, error: BaseException) -> None:
        for cmd_id, pending in list(self._pending.items()):
            if not pending.future.done():
                pending.future.set_exception(error)
            self._pending.pop(cmd_id, None)

    async def _expect(self, build: Callable[[int], Message], kind: type[M], **kw: Any) -> M:
        reply = await self._request(build, **kw)
        if not isinstance(reply, kind):
            raise HostError(f"expected {kind.__name__}, the pen sent {type(reply).__name__}")
        return reply

    def _require_identity(self) -> Identity:
        if self.identity is None:
            raise ConnectionLost("not connected to a pen yet")
        return self.identity

    # ------------------------------------------------------------------ public API
    async def status(self) -> Status:
        status = await self._expect(lambda c: GetStatus(c), Status)
        self.last_status = status
        return status

    async def cartridge(self) -> CartridgeInfo:
        return await self._expect(lambda c: GetCartridge(c), CartridgeInfo)

    async def set_depth(
        self,
        depth_mm: float,
        *,
        area: L.Area | str | None = None,
        override_reason: str | None = None,
    ) -> None:
        profile = safety.resolve_area(area) if area is not None else None
        um = safety.check_depth(depth_mm, self._require_identity(), profile, override_reason)
        override = int(bool(override_reason) and um > self._require_identity().soft_cap_um)
        if override and self.recorder is not None:
            self.recorder.on_override(um, profile.name if profile else "", override_reason or "")
        await self._expect(lambda c: SetDepth(c, um, override), Ack)
        self._override_reason = override_reason if override else None

    async def set_rate(self, rate_sps: int, *, area: L.Area | str | None = None) -> None:
        profile = safety.resolve_area(area) if area is not None else None
        rate = safety.check_rate(rate_sps, self._require_identity(), profile)
        await self._expect(lambda c: SetRate(c, rate), Ack)

    async def start_run(
        self, *, area: L.Area | str, strokes: int | None = None, seconds: float | None = None
    ) -> int:
        profile = safety.resolve_area(area)
        count, duration_ms = safety.check_run(strokes, seconds)
        mode = RunMode.STROKES if strokes is not None else RunMode.DURATION
        status = await self._wait_not_stopping()
        readiness.check_can_run(status)  # the pen checks again; the host says what to do
        readiness.check_retraction(self.slowest_retract_ms)
        # re-check what is set on the pen against the area before starting
        override = "override set" if status.soft_cap_override else None
        identity = self._require_identity()
        safety.check_depth(status.depth_set_um / 1000, identity, profile, override)
        safety.check_rate(status.rate_set_sps, identity, profile)
        self._run_in_flight = True
        try:
            ack = await self._expect(
                lambda c: Run(c, int(profile.area), mode, count, duration_ms), Ack
            )
            run_id = ack.value
        except (PenTimeout, OutcomeUnknown) as unknown:
            run_id = await self._resolve_run(status, unknown)
        except PenRefused:
            self._run_in_flight = False  # refused: nothing runs
            raise
        self.runs.started(run_id)
        self._run_in_flight = False
        if self.recorder is not None:
            lot = (await self.cartridge()).lot
            self.recorder.on_run_started(
                self,
                run_id,
                profile,
                mode,
                count or duration_ms,
                cartridge_lot=lot,
                override_reason=self._override_reason,
            )
        return run_id

    async def _resolve_run(self, before: Status, unknown: HostError) -> int:
        """A Run went unanswered: ask the pen whether it started. The pen handles commands in
        order, so a status answered after the Run shows its effect; a new run id means it ran
        (and is logged like any run), the same one means it did not."""
        try:
            now = await self.status()
        except HostError:
            raise unknown from None  # still unknown: the caller stops the pen on the way out
        if now.boot_id == before.boot_id and now.run_id not in (0, before.run_id):
            log.warning("Run went unanswered but the pen started run %d: adopting it", now.run_id)
            return now.run_id
        self._run_in_flight = False  # it did not start: nothing of ours to stop
        raise PenTimeout(
            f"the pen did not answer Run and its status shows no new run (still run "
            f"{now.run_id}): the run did not start — {unknown}"
        ) from None

    async def _wait_not_stopping(self) -> Status:
        """The needles take up to RETRACT_MAX_MS to home after a run; a new run must wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10 * L.RETRACT_MAX_MS / 1000
        status = await self.status()
        while status.state is PenState.STOPPING and loop.time() < deadline:
            await asyncio.sleep(0.005)
            status = await self.status()
        return status

    async def wait_run_end(self, run_id: int, timeout: float | None = None) -> RunReport:
        """Wait for the pen's report of a run: the exact number of strokes it delivered."""
        if self._fatal is not None and self.runs.report(run_id) is None:
            raise self._fatal
        return await self.runs.wait(run_id, timeout)

    async def run(
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
        """Set depth and rate, run, and wait for the report. Any exception or Ctrl-C stops the
        pen (shielded) before it propagates."""
        profile = safety.resolve_area(area)
        safety.check_depth(depth_mm, self._require_identity(), profile, override_reason)
        safety.check_rate(rate_sps, self._require_identity(), profile)
        safety.check_run(strokes, seconds)
        watch = None if profile.area is L.Area.BENCH_FIXTURE else RateWatch(rate_sps)
        drift: list[Drift] = []

        def on_sample(message: Any) -> None:
            if not isinstance(message, Telemetry):
                return
            if on_telemetry is not None:
                on_telemetry(message)
            found = watch.sample(message) if watch is not None and not drift else None
            if found is not None:  # hazard 6, checked again here: stop at once
                drift.append(found)
                self._send_stop_now()

        unsubscribe = self.add_listener(on_sample)
        try:
            await self.set_depth(depth_mm, area=profile.area, override_reason=override_reason)
            await self.set_rate(rate_sps, area=profile.area)
            if watch is not None and not self.telemetry_hz:
                await self.set_telemetry(RATE_WATCH_HZ)  # the host's rate check needs samples
            run_id = await self.start_run(area=profile.area, strokes=strokes, seconds=seconds)
            report = await self.wait_run_end(run_id)
            if drift:
                self._stopped_for_drift(drift[0], report)
            return report
        except BaseException:
            # Ctrl-C, a task cancelled, any error: the needles stop before this returns, and
            # the pen's report (the exact count) is collected for the log and the caller
            await asyncio.shield(self._stop_active_runs())
            raise
        finally:
            unsubscribe()

    def _send_stop_now(self) -> None:
        """An urgent Stop frame from inside a listener (no await there); its Ack is a late
        reply. The run's report then ends the run as usual."""
        cmd_id = next(self._cmd_ids) & 0xFFFF_FFFF
        with contextlib.suppress(LocalProtocolError):
            self._link.send(Stop(cmd_id), self._now(), urgent=True)
        self._flush()

    def _stopped_for_drift(self, drift: Drift, report: RunReport) -> None:
        detail = f"{drift}; the host stopped run {report.run_id} after {report.strokes} strokes"
        if self.recorder is not None:
            self.recorder.on_host_event("rate_drift", report.strokes, report.run_id, detail)
        raise RateDrift(
            f"{detail} — calibrate the pen's stroke rate (micropen calibrate rate)", report
        )

    async def stop(self) -> None:
        await self._expect(lambda c: Stop(c), Ack, urgent=True)

    async def emergency_stop(self) -> None:
        """Urgent: jumps every queue on both ends and is executed on arrival."""
        await self._expect(lambda c: EmergencyStop(c), Ack, urgent=True)

    async def clear_fault(self) -> None:
        await self._expect(lambda c: ClearFault(c), Ack)

    async def set_watchdog(self, ms: int) -> None:
        if not L.HEARTBEAT_MIN_MS <= ms <= L.HEARTBEAT_MAX_MS:
            from .errors import SafetyLimitError

            raise SafetyLimitError(
                f"watchdog {ms} ms is outside {L.HEARTBEAT_MIN_MS}–{L.HEARTBEAT_MAX_MS} ms"
            )
        await self._expect(lambda c: SetWatchdog(c, ms), Ack)
        self._heartbeat_interval = ms / 4000

    async def set_telemetry(self, hz: int) -> None:
        if not 0 <= hz <= L.TELEMETRY_MAX_HZ:
            from .errors import InvalidInput

            raise InvalidInput(f"telemetry rate {hz} Hz is outside 0–{L.TELEMETRY_MAX_HZ} Hz")
        await self._expect(lambda c: SetTelemetry(c, hz), Ack)
        self.telemetry_hz = hz

    def add_listener(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Call ``callback`` with every notification and connection notice. Returns the
        function that removes it."""
        self._listeners.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return remove

    async def telemetry(self, maxsize: int = 1000) -> AsyncIterator[Telemetry]:
        """``async for sample in pen.telemetry()``; the oldest samples are dropped if the
        consumer falls more than ``maxsize`` behind."""
        queue: asyncio.Queue[Telemetry] = asyncio.Queue(maxsize)

        def put(message: Any) -> None:
            if isinstance(message, Telemetry):
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(message)

        remove = self.add_listener(put)
        try:
            while True:
                yield await queue.get()
        finally:
            remove()

    async def cal_read(self, bank: CalBank = CalBank.ACTIVE) -> CalData:
        return await self._expect(lambda c: CalRead(c, bank), CalData)

    async def cal_write(
        self,
        *,
        depth_gain_ppm: int,
        depth_offset_um: int,
        rate_gain_ppm: int,
        counter: int,
        written_at: int | None = None,
        version: int = 1,
    ) -> int:
        """Write the staging bank; returns the CRC to pass to cal_commit after verifying."""
        when = int(time.time()) if written_at is None else written_at
        crc = calibration_crc(
            version, depth_gain_ppm, depth_offset_um, rate_gain_ppm, when, counter
        )
        await self._expect(
            lambda c: CalWrite(
                c, version, depth_gain_ppm, depth_offset_um, rate_gain_ppm, when, counter, crc
            ),
            Ack,
        )
        return crc

    async def cal_commit(self, crc: int) -> None:
        await self._expect(lambda c: CalCommit(c, crc), Ack)

    async def sim_set(self, param: SimParam, value: int) -> None:
        await self._expect(lambda c: SimSet(c, param, value), Ack)

    async def sim_get(self, param: SimParam) -> int:
        reply = await self._expect(lambda c: SimGet(c, param), SimParamValue)
        return reply.value

    async def request(
        self, build: Callable[[int], Message], *, urgent: bool = False, timeout: float | None = None
    ) -> Message:
        """Send any command as it is, with NO host-side checks, and return the pen's reply.

        For conformance suites and benches proving that the pen refuses on its own. ``build``
        gets the ``cmd_id`` to put in the command. A Nak raises PenRefused."""
        return await self._request(build, urgent=urgent, timeout=timeout)

    @property
    def closed(self) -> bool:
        """True once close() was called or the connection failed for good."""
        return self._closing or self._fatal is not None

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = dict(self._link.statistics().as_dict())
        stats.update(self.counters)
        stats["pending"] = len(self._pending)
        return stats

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def wait_connected(self, timeout: float) -> None:
        await self._wait_ready(timeout)

    def _new_link(self) -> Link:
        # a delayed ack (4 ms, well under the pen's 25 ms minimum RTO) rides on the next
        # command instead of costing a write of its own
        return Link(Role.HOST, liveness_timeout=LIVENESS_TIMEOUT, ack_delay=ACK_DELAY)


def _check_same_unit(previous: Identity | None, now: Identity, where: str) -> None:
    """A reconnect must find the same unit: a boot id alone does not say which pen it is."""
    if previous is None:
        return
    if (previous.serial, previous.model) != (now.serial, now.model):
        raise DifferentPen(
            f"after reconnecting, {where} is pen {now.serial} ({now.model}), not "
            f"{previous.serial} ({previous.model}) that this session was driving; nothing was "
            "sent to it — open a new connection to use that pen"
        )


def _default_recorder(log: Any, operator: str, purpose: str) -> Any:
    """The SessionRecorder ``AsyncPen.open(log=...)`` asks for (None when opted out)."""
    if log is False or log is None:
        return None
    from .recorder import SessionRecorder
    from .treatment_log import TreatmentLog

    if isinstance(log, TreatmentLog):
        return SessionRecorder(log, operator=operator, purpose=purpose)
    path = TreatmentLog.default_path() if log is True else log
    return SessionRecorder(TreatmentLog(path), operator=operator, purpose=purpose, owns_log=True)


def _not_recorded(error: MicropenError, message: Message) -> MicropenError:
    """The log's error, plus what the pen was handing over (the run's exact count, if any)."""
    if isinstance(message, RunReport):
        what = (
            f"; run {message.run_id} ended {message.outcome.name.lower()} after "
            f"{message.strokes} strokes (the pen keeps that report for the next host)"
        )
        return type(error)(f"{error}{what}")
    return error
