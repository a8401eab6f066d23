"""The asyncio core: one connection to one pen, with heartbeat, telemetry and safe reconnect.

Structure (trio/anyio style), one job per module: :class:`AsyncPen` (here) is the pen's API and
what a session means to the pen; ``supervisor.py`` owns the one supervisor task, which runs
link epochs in a task scope (reader, ticker, handshake) and reconnects; ``pump.py`` moves bytes
and keeps the link alive; ``requests.py`` matches replies to requests; ``runs.py`` keeps the
runs and their reports. Nothing is fire-and-forget: ``close()`` stops our run, then cancels the
supervisor and waits for it.

Reconnect without guessing: when the link drops (cable pulled, pen reset, pty closed), the
supervisor reports it, reopens the transport with backoff, opens a new link epoch, handshakes
again and compares the pen's ``boot_id``. Same boot and the pen still holds this session:
pending commands are re-sent with their original ``cmd_id``, which the pen answers from its
reply cache — never executing twice. Otherwise only what is safe to repeat is re-sent and the
rest fails with a typed error. Reports of runs that ended while the link was down arrive
anyway, because the pen re-sends unacknowledged records in the new epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from micropen.protocol import limits as L
from micropen.protocol import timing as T
from micropen.protocol.errors import MicropenError
from micropen.protocol.messages import (
    PROTOCOL_VERSION,
    TELEMETRY_BATCH_DELAY_MAX_MS,
    TELEMETRY_BATCH_SAMPLES,
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
    Hello,
    Identity,
    Nak,
    OpenSession,
    PenState,
    Run,
    RunMode,
    RunReport,
    SetDepth,
    SetRate,
    SetServiceMode,
    SetTelemetry,
    SetTelemetryBatch,
    SetWatchdog,
    SimGet,
    SimParam,
    SimParamValue,
    SimSet,
    Status,
    Stop,
    Telemetry,
    TelemetryBatch,
    calibration_crc,
)
from micropen.protocol.schema import Kind, Message, schema_hash

from . import readiness, safety
from .cartridge_guard import CartridgeGuard
from .errors import (
    ConnectionLost,
    DifferentPen,
    HostError,
    OutcomeUnknown,
    PenRebooted,
    PenRefused,
    PenTimeout,
    RateDrift,
    SchemaMismatch,
)
from .pairing import HostKeys
from .pump import LinkDown, LinkPump, NotRecorded, recorded
from .ratewatch import Drift, RateWatch
from .record_sinks import OverrideRecord, RecordSink, RunStartRecord
from .requests import PendingRequests
from .runs import RunBook
from .security_events import ALARMING, describe
from .supervisor import Supervisor
from .tasks import TaskScope, shielded
from .telemetry import TelemetryStream
from .transports import Transport, make_transport

__all__ = ["AsyncPen", "ConnectionNotice"]

log = logging.getLogger("micropen.host")
M = TypeVar("M", bound=Message)

HANDSHAKE_TIMEOUT = T.HOST_HANDSHAKE_TIMEOUT_S
# an urgent Stop is answered in milliseconds; past this, the pen's watchdog is the backstop
STOP_TIMEOUT_S = T.HOST_STOP_TIMEOUT_S
REPORT_AFTER_STOP_S = 2.0  # the run report follows the Stop's Ack at once
RUN_REPORT_GRACE_S = 2.0  # beyond the pen's watchdog, how long a run's waiters wait for a link
RATE_WATCH_HZ = 20  # telemetry the host turns on for run() when it is off: its rate check
# Telemetry batches asked of a pen that offers them: up to 8 samples a frame, none older than
# this when its frame leaves the pen (the latency batching adds to the display and the rate check)


@dataclass(frozen=True, slots=True)
class ConnectionNotice:
    """Told to listeners when the link goes down or comes back."""

    kind: str  # "lost" | "reconnected" | "rebooted"
    detail: str


class AsyncPen:
    """One pen, driven from asyncio. Use :meth:`open`; the same API for every transport.

    The jobs are split: :class:`~micropen.host.pump.LinkPump` moves bytes and keeps the link
    alive, :class:`~micropen.host.supervisor.Supervisor` runs link epochs and reconnects,
    :class:`~micropen.host.requests.PendingRequests` matches replies to requests,
    :class:`~micropen.host.runs.RunBook` keeps the runs and their reports. This class is the
    pen's API, and what a session means to the pen (handshake, records, stops)."""

    def __init__(
        self,
        transport: Transport,
        *,
        url: str,
        command_timeout: float = T.HOST_COMMAND_TIMEOUT_S,
        reconnect: bool = True,
        recorder: Any = None,
        open_session: bool = True,
        keys: HostKeys | None = None,
        batch_telemetry: bool = True,
        cartridge_guard: CartridgeGuard | None = None,
        record_sinks: Iterable[RecordSink] = (),
    ) -> None:
        self.transport = transport
        # the fleet registry asked before each run (None: the pen's own lockout only)
        self.cartridge_guard = cartridge_guard
        self.keys = keys  # this host's pairings (None: never authenticate)
        self.url = url
        self.is_simulated = transport.is_simulated
        self.bench = transport.bench
        self.command_timeout = command_timeout
        self.recorder = recorder
        # Without a session the pen hands over no records (they stay on it for a host that can
        # log them) and answers nothing from its reply cache: what a stop-only host uses when
        # its log cannot be written. Stop and EmergencyStop need no session.
        self.open_session = open_session
        # ask a pen that offers it for TelemetryBatch frames (False: singles, as a host from
        # before batches); either way listeners see one Telemetry per sample
        self.batch_telemetry = batch_telemetry
        self.telemetry_stream = TelemetryStream()
        self.identity: Identity | None = None
        self.last_status: Status | None = None
        self.telemetry_hz = 0  # as last set on the pen (from the handshake's status, then ours)
        # Names this host session to the pen (kept across reconnects): its reply cache answers
        # a re-sent command only for the session that sent it first.
        self.session = random.randrange(1, 1 << 32)
        self.counters = {
            "reconnects": 0,
            "late_replies": 0,
            "mismatched_replies": 0,
            "commands": 0,
            "bad_messages": 0,
        }
        self.requests = PendingRequests(self.counters)
        self.runs = RunBook()
        # Stops sent so far: a Run answered after a Stop it was sent before may have been
        # obeyed after it (an urgent Stop overtakes a lost Run frame), so it is stopped again
        self._stops_sent = 0
        self._listeners: list[Callable[[Any], None]] = []
        # stores beside the log (record_sinks.py); given here, a sink hears of the connection
        # (on_connected) before the pen hands anything over, as the recorder does
        self._record_sinks: list[RecordSink] = list(record_sinks)
        self._override_reason: str | None = None
        ready = asyncio.Event()
        self._pump = LinkPump(
            transport,
            clock=_loop_clock(),
            on_message=self._on_message,
            on_tick=self._flush_samples,
            beating=ready,
            counters=self.counters,
            keys=keys,
        )
        self._supervisor = Supervisor(self._pump, self, name=url, reconnect=reconnect, ready=ready)

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
        if "keys" not in options:
            options["keys"] = HostKeys()
        if "recorder" not in options:
            options["recorder"] = _default_recorder(log, operator, purpose)
        if "cartridge_guard" not in options and os.environ.get("MICROPEN_REGISTRY"):
            from .fleet.registry import guard_from_env  # the bench asks the fleet's registry

            options["cartridge_guard"] = guard_from_env()
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
        self._pair_locally()
        supervisor = self._supervisor.start()
        limit = HANDSHAKE_TIMEOUT + 1
        try:
            async with TaskScope(f"opening {self.url}") as scope:
                ready = scope.start(self._supervisor.ready.wait())
                await asyncio.wait(
                    {ready, supervisor}, timeout=limit, return_when="FIRST_COMPLETED"
                )
        except BaseException:  # cancelled while opening: nothing may keep running
            await shielded(self.close())
            raise
        if not self._supervisor.ready.is_set():
            error = self._supervisor.fatal
            await self.close()
            if error is not None:
                raise error
            raise PenTimeout(
                f"no handshake with {self.transport.description} within {limit:.0f} s; "
                "is it a micropen?"
            )

    def _pair_locally(self) -> None:
        """A transport to a pen of this very process (the built-in simulator) pairs with this
        host on the spot, for this process only."""
        local = getattr(self.transport, "local_pairing", None)
        if self.keys is not None and local is not None:
            pen_id, key = local(self.keys.host_id)
            self.keys.add_ephemeral(pen_id, key)

    def _warn_if_unauthenticated(self, identity: Identity) -> None:
        """A pen this host is paired with answered without authentication: it forgot this
        host (revoked, reset) — or something between them stripped the answer and is
        pretending. Either way its answers are not to be trusted as that pen's."""
        keys = self.keys
        if keys is None or self.authenticated or keys.find(identity.serial) is None:
            return
        log.warning(
            "security: %s answered as %s, which this host is paired with, but without "
            "authentication: the pen forgot this host, or something between them is "
            "pretending; pair again (micropen pair --pen URL) before trusting it",
            self.transport.description,
            identity.serial,
        )

    @property
    def authenticated(self) -> bool:
        """The current link epoch is authenticated (this host is paired with the pen)."""
        return self._pump.link.peer_id is not None

    async def close(self) -> None:
        """Stop the pen if a run of ours is going, then stop the tasks and release the port.
        Pending commands fail with ConnectionLost."""
        supervisor = self._supervisor
        if supervisor.closing:
            return
        if self.runs.active and supervisor.ready.is_set() and supervisor.fatal is None:
            await shielded(self._stop_active_runs())
        await supervisor.close()
        supervisor.fail_for_good(ConnectionLost("the connection was closed"), fatal=False)
        with contextlib.suppress(HostError):
            await self.transport.close()
        if self.recorder is not None:
            try:
                self.recorder.close_session("closed")
            except MicropenError:
                if supervisor.unrecorded is None:  # already reported as the reason this ended
                    raise

    # ------------------------------------------------------------------ the session (SessionOwner)
    async def handshake(self, first: bool) -> None:
        """Hello, then (before anything can be handed over) the log and the pen session, then
        the pen's status; after a reconnect, what was pending is re-sent or failed."""
        await self._pump.wait_connected()
        reply = await self._hello()
        previous = self.identity
        _check_same_unit(previous, reply, self.transport.description)
        self.identity = reply
        self.is_simulated = self.transport.is_simulated or bool(
            reply.capabilities & Capability.SIMULATOR
        )
        self._warn_if_unauthenticated(reply)
        self.telemetry_stream.boot(reply.boot_id)
        rebooted = previous is not None and previous.boot_id != reply.boot_id
        rebooted_notice = ConnectionNotice("rebooted", f"boot {reply.boot_id:08x}")
        if self.recorder is not None:  # ready to record before the pen hands anything over
            recorded(lambda: self.recorder.on_connected(self, first))
            if rebooted:  # logged before anything of the new boot is
                recorded(lambda: self.recorder.on_notification(rebooted_notice))
        for sink in list(self._record_sinks):
            connected = getattr(sink, "on_connected", None)
            if connected is not None:
                recorded(functools.partial(connected, self, first))
        if rebooted:  # the sinks, too, hear of the new boot before its records
            recorded(lambda: self._to_sinks(rebooted_notice))
        resumed = False
        if self.open_session and self.batch_telemetry:
            await self._ask_for_batches(reply)
        if self.open_session:
            opened = await self._handshake_request(lambda c: OpenSession(c, self.session))
            resumed = isinstance(opened, Ack) and opened.value == 1
        status = await self._handshake_request(lambda c: GetStatus(c))
        assert isinstance(status, Status)
        self.last_status = status
        self.telemetry_hz = status.telemetry_hz
        self._pump.set_watchdog(status.watchdog_ms)
        if rebooted:
            self._tell_listeners(rebooted_notice)
            self.runs.fail_active(
                PenRebooted(
                    "the pen restarted during the run and its report went with its memory: "
                    "how many strokes it delivered is not known — the log marks the run "
                    "interrupted; check the treated area before going on"
                )
            )
            self.runs.new_boot()  # its run ids start again at 1
        if not first:
            resend = self.requests.after_reconnect(resumed, rebooted)
            self._pump.send(*(p.message for p in resend if p.urgent), urgent=True)
            self._pump.send(*(p.message for p in resend if not p.urgent))
            self.runs.ended_elsewhere(status)
            self.counters["reconnects"] += 1
            self._notify(ConnectionNotice("reconnected", self.transport.description))
        self._supervisor.up()

    async def _ask_for_batches(self, identity: Identity) -> None:
        """Telemetry in batches, on this link epoch, from a pen that offers them (a pen that
        does not, or a host that does not ask, keeps single samples). Asked before the session
        opens, so every sample the session gets comes in batches."""
        if not self.authenticated or not identity.capabilities & Capability.TELEMETRY_BATCH:
            return  # an unpaired host gets no telemetry at all: asking would be refused
        samples, delay = TELEMETRY_BATCH_SAMPLES, TELEMETRY_BATCH_DELAY_MAX_MS
        try:
            await self._handshake_request(lambda c: SetTelemetryBatch(c, samples, delay))
        except PenRefused as refused:  # offered and then refused: keep the singles
            log.warning("%s refused telemetry batches (%s)", self.transport.description, refused)

    async def _hello(self) -> Identity:
        try:
            reply = await self._handshake_request(
                lambda c: Hello(c, PROTOCOL_VERSION, schema_hash())
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
        return reply

    async def _handshake_request(self, build: Callable[[int], Message]) -> Message:
        return await self._request(build, handshake=True, timeout=HANDSHAKE_TIMEOUT)

    async def stop_without_session(self) -> None:
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                await self._pump.wait_connected()
            await self._request(
                lambda c: Stop(c), urgent=True, handshake=True, timeout=STOP_TIMEOUT_S
            )
        except (TimeoutError, HostError) as exc:
            log.error("could not stop %s: %s", self.url, exc)
        raise LinkDown("the pen was stopped: this connection is ending")

    def owns_a_run(self) -> bool:
        return self.runs.owns_a_run

    def link_lost(self, reason: str) -> None:
        self._notify(ConnectionNotice("lost", reason))

    def link_down_for(self, seconds: float, reason: str) -> None:
        """A run of ours cannot report while the link is down; past the pen's own watchdog (it
        has stopped by then) its waiters are told so."""
        grace = 4 * self._pump.heartbeat_interval + RUN_REPORT_GRACE_S
        if self.runs.active and seconds > grace:
            self.runs.fail_active(
                ConnectionLost(
                    f"the link to {self.transport.description} has been down for "
                    f"{seconds:.1f} s ({reason}); a pen that is still powered has stopped "
                    "on its own by now (its watchdog) and keeps the run's report for the next "
                    "connection — check the pen, then reconnect to collect the report"
                )
            )

    def failed(self, error: BaseException) -> None:
        self.requests.fail_all(error)
        self.runs.fail_active(error)

    async def _stop_active_runs(self) -> None:
        """Closing while a run of ours is going: Stop (urgent), then wait for the pen's
        report, so the log and the caller get the exact count. Bounded. Nothing is sent when
        no run of ours is going: another host's run is not ours to stop."""
        if not self.runs.owns_a_run:
            return
        with contextlib.suppress(MicropenError):
            await self._request(lambda c: Stop(c), urgent=True, timeout=STOP_TIMEOUT_S)
        for run_id in list(self.runs.active):
            with contextlib.suppress(MicropenError):
                await self.runs.wait(run_id, timeout=REPORT_AFTER_STOP_S)

    # ------------------------------------------------------------------ what the pen hands over
    def go_silent(self, seconds: float) -> None:
        """Send nothing at all (no heartbeat, no acknowledgement) for ``seconds``: how a test
        or a bench proves the pen's watchdog stops the needles when the host goes quiet."""
        self._pump.go_silent(seconds)

    def _flush_samples(self) -> None:
        if self.recorder is not None:
            recorded(lambda: self.recorder.flush_samples(now=self._pump.now()))

    def _on_message(self, message: Message) -> None:
        if message.KIND is Kind.REPLY:
            self.requests.resolve(message)
            return
        if type(message) is TelemetryBatch:  # the one place batches become samples
            for sample in self.telemetry_stream.unpack(message):
                self._on_notification(sample)
            return
        if type(message) is Telemetry:
            self.telemetry_stream.single()
        self._on_notification(message)

    def _on_notification(self, message: Message) -> None:
        if self.recorder is not None:
            try:
                self.recorder.on_notification(message)
            except MicropenError as exc:  # not stored: it must not be acknowledged either
                raise NotRecorded("the treatment log failed", _not_recorded(exc, message)) from exc
        if self._record_sinks and type(message) is not Telemetry:
            try:
                self._to_sinks(message)
            except MicropenError as exc:  # not stored there either: not acknowledged
                raise NotRecorded("a record sink failed", _not_recorded(exc, message)) from exc
        if isinstance(message, RunReport):
            self.runs.reported(message)
        elif isinstance(message, Event) and message.code is EventCode.RETRACTED:
            self.runs.retracted(message.value)
        elif isinstance(message, Event) and message.code in ALARMING:
            # another party touched this pen: the operator hears of it now, not in a report
            log.warning("security: %s (%s)", describe(message), self.transport.description)
        self._notify(message)

    def _notify(self, item: Any) -> None:
        if isinstance(item, ConnectionNotice) and self.recorder is not None:
            # link notices are records too: a log that cannot take them ends the session
            recorded(lambda: self.recorder.on_notification(item))
        if isinstance(item, ConnectionNotice) and item.kind != "rebooted":
            recorded(lambda: self._to_sinks(item))  # "rebooted" went to them in the handshake
        self._tell_listeners(item)

    def _to_sinks(self, item: Any) -> None:
        for sink in list(self._record_sinks):
            sink(item)

    def _tell_listeners(self, item: Any) -> None:
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
        supervisor = self._supervisor
        if supervisor.fatal is not None:
            raise supervisor.fatal
        if supervisor.closing:
            raise ConnectionLost("the connection is closed")
        limit = timeout or self.command_timeout
        if not handshake and not supervisor.ready.is_set():
            await self._wait_ready(limit)
        message = build(self.requests.new_id())
        if isinstance(message, Stop):
            self._stops_sent += 1
        future = self.requests.add(message, urgent)
        try:
            self._pump.send(message, urgent=urgent)
            try:
                async with asyncio.timeout(limit):
                    reply = await future
            except TimeoutError:
                raise PenTimeout(
                    f"no answer to {type(message).__name__} within {limit:.1f} s; its effect "
                    "is unknown — call status() to resynchronise"
                ) from None
        finally:
            self.requests.discard(message.cmd_id)  # type: ignore[attr-defined]
        if isinstance(reply, Nak):
            raise PenRefused(type(message).__name__, reply)
        return reply

    async def _wait_ready(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._supervisor.ready.wait()
        except TimeoutError:
            raise ConnectionLost(
                f"the link to {self.transport.description} is down and did not come back "
                f"within {timeout:.1f} s"
            ) from None

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
        if override and self._record_sinks:  # stored before the pen is told (or not told)
            ident = self._require_identity()
            self._to_sinks(OverrideRecord(
                ident.serial, ident.boot_id, um, profile.name if profile else "",
                override_reason or "", time.time(),
            ))  # fmt: skip
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
        safety.check_area_mode(profile, bool(status.service_mode))
        readiness.check_retraction(self.runs.slowest_retract_ms)
        # re-check what is set on the pen against the area before starting
        override = "override set" if status.soft_cap_override else None
        identity = self._require_identity()
        safety.check_depth(status.depth_set_um / 1000, identity, profile, override, run=True)
        safety.check_rate(status.rate_set_sps, identity, profile)
        lot = await self._admit_cartridge(identity.serial, status)
        self.runs.in_flight = True
        stops_before = self._stops_sent
        try:
            ack = await self._expect(
                lambda c: Run(c, int(profile.area), mode, count, duration_ms), Ack
            )
            run_id = ack.value
        except (PenTimeout, OutcomeUnknown) as unknown:
            run_id = await self._resolve_run(status, unknown)
        except PenRefused:
            self.runs.in_flight = False  # refused: nothing runs
            raise
        self.runs.started(run_id)
        if self._stops_sent != stops_before:
            # a Stop went out while this Run was unanswered: the pen may have obeyed the
            # (urgent) Stop first and this Run after it — stop again, so the Stop wins
            log.warning("run %d started after a Stop was sent: stopping it again", run_id)
            self._send_stop_now()  # its report ends the run, as for any stop
        if lot is None:
            lot = ""
            if self.recorder is not None or self._record_sinks:
                lot = (await self.cartridge()).lot
        if self.recorder is not None:
            self.recorder.on_run_started(
                self,
                run_id,
                profile,
                mode,
                count or duration_ms,
                cartridge_lot=lot,
                override_reason=self._override_reason,
            )
        if self._record_sinks and self.last_status is not None:
            set_now = self.last_status
            self._to_sinks(RunStartRecord(
                identity.serial, identity.boot_id, run_id, profile.name, set_now.depth_set_um,
                set_now.rate_set_sps, mode.name, count or duration_ms, set_now.cartridge_id,
                lot, self._override_reason, time.time(),
            ))  # fmt: skip
        return run_id

    async def _admit_cartridge(self, serial: str, status: Status) -> str | None:
        """The fleet registry's word on the mounted cartridge (hazard 4: used on another pen,
        recalled lot); raises CartridgeRefused, logged. Returns the lot it read, if any."""
        if self.cartridge_guard is None or not status.cartridge_id:
            return None
        info = await self.cartridge()
        await self.cartridge_guard.admit(serial, info.cartridge_id, info.lot, self._host_event)
        return info.lot

    def _host_event(self, code: str, value: int, run_id: int, detail: str) -> None:
        if self.recorder is not None:
            self.recorder.on_host_event(code, value, run_id, detail)

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
        self.runs.in_flight = False  # it did not start: nothing of ours to stop
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
        fatal = self._supervisor.fatal
        if fatal is not None and self.runs.report(run_id) is None:
            raise fatal
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
        identity = self._require_identity()
        safety.check_depth(depth_mm, identity, profile, override_reason, run=True)
        safety.check_rate(rate_sps, identity, profile)
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
        telemetry_was = self.telemetry_hz
        try:
            await self.set_depth(depth_mm, area=profile.area, override_reason=override_reason)
            await self.set_rate(rate_sps, area=profile.area)
            if watch is not None and not telemetry_was:
                await self.set_telemetry(RATE_WATCH_HZ)  # the host's rate check needs samples
            run_id = await self.start_run(area=profile.area, strokes=strokes, seconds=seconds)
            report = await self.wait_run_end(run_id)
            if drift:
                self._stopped_for_drift(drift[0], report)
            return report
        except BaseException:
            # Ctrl-C, a task cancelled, any error: the needles stop before this returns, and
            # the pen's report (the exact count) is collected for the log and the caller
            await shielded(self._stop_active_runs())
            raise
        finally:
            unsubscribe()
            if self.telemetry_hz != telemetry_was and self.connected:
                with contextlib.suppress(MicropenError):  # as it was before this run
                    await shielded(self.set_telemetry(telemetry_was))

    def _send_stop_now(self) -> None:
        """An urgent Stop frame from inside a listener (no await there); its Ack is a late
        reply. The run's report then ends the run as usual."""
        self._stops_sent += 1
        self._pump.send(Stop(self.requests.new_id()), urgent=True)

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

    async def enter_service_mode(self) -> None:
        """Bench-fixture runs only, over the whole envelope (calibration). Prefer
        :meth:`service_mode`, which always leaves it again."""
        await self._expect(lambda c: SetServiceMode(c, 1), Ack)

    async def leave_service_mode(self) -> None:
        await self._expect(lambda c: SetServiceMode(c, 0), Ack)

    @contextlib.asynccontextmanager
    async def service_mode(self) -> AsyncIterator[None]:
        """Service mode for the body; left on the way out whatever happens (shielded from
        cancellation). When the link is gone by then, the pen ends it on its own: at the
        watchdog, at another session, at a reboot."""
        await self.enter_service_mode()
        try:
            yield
        finally:
            try:
                await shielded(self.leave_service_mode())
            except HostError as exc:
                log.warning("could not leave service mode (%s); the pen ends it itself", exc)

    async def set_watchdog(self, ms: int) -> None:
        if not L.HEARTBEAT_MIN_MS <= ms <= L.HEARTBEAT_MAX_MS:
            from .errors import SafetyLimitError

            raise SafetyLimitError(
                f"watchdog {ms} ms is outside {L.HEARTBEAT_MIN_MS}–{L.HEARTBEAT_MAX_MS} ms"
            )
        await self._expect(lambda c: SetWatchdog(c, ms), Ack)
        self._pump.set_watchdog(ms)

    async def set_telemetry(self, hz: int) -> None:
        if not 0 <= hz <= L.TELEMETRY_MAX_HZ:
            from .errors import InvalidInput

            raise InvalidInput(f"telemetry rate {hz} Hz is outside 0–{L.TELEMETRY_MAX_HZ} Hz")
        await self._expect(lambda c: SetTelemetry(c, hz), Ack)
        self.telemetry_hz = hz

    def add_record_sink(self, sink: RecordSink) -> Callable[[], None]:
        """Store every record in ``sink`` too, before the pen's frame is acknowledged (see
        :mod:`micropen.host.record_sinks`). Returns the function that removes it."""
        self._record_sinks.append(sink)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._record_sinks.remove(sink)

        return remove

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

    async def expect(self, build: Callable[[int], Message], kind: type[M]) -> M:
        """:meth:`request`, for a command whose reply must be a ``kind`` (anything else is a
        HostError): what the update and pairing procedures send."""
        return await self._expect(build, kind)

    @property
    def closed(self) -> bool:
        """True once close() was called or the connection failed for good."""
        return self._supervisor.closing or self._supervisor.fatal is not None

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = dict(self._pump.link.statistics().as_dict())
        stats.update(self.counters)
        stats["pending"] = len(self.requests)
        stream = self.telemetry_stream
        stats["telemetry_batches"] = stream.batches
        stats["telemetry_missing"] = stream.missing  # samples the pen took and we never got
        stats["telemetry_bad_samples"] = stream.bad_samples
        return stats

    @property
    def connected(self) -> bool:
        return self._supervisor.ready.is_set()

    async def wait_connected(self, timeout: float) -> None:
        await self._wait_ready(timeout)


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


def _loop_clock() -> Callable[[], float]:
    """The running event loop's clock: virtual under a test loop whose time jumps, the
    monotonic clock otherwise. Never the wall clock."""
    return asyncio.get_running_loop().time
