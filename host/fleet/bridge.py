"""One pen on the fleet bus: status, telemetry, events, run reports out; safe commands in.

Structure: :class:`FleetBridge` is an async context manager owning one task. That task runs the
telemetry ticker and the connection loop; each broker connection is one session whose task
group holds the command listener, the outbox drain and the status publisher. aiomqtt does not
reconnect by itself: its documented pattern is a loop that catches ``aiomqtt.MqttError`` and
connects again, which is what :meth:`_connection_loop` does, with backoff.

Delivery:

* status — retained, QoS 1, republished on every change the pen reports and every
  ``status_interval``; the last will (retained) says ``online: false`` if the bridge vanishes.
* telemetry — QoS 0 batches every ``telemetry_interval``; numbered, so loss shows as a jump in
  ``seq``. Batches due while the broker is down are dropped *and numbered*, so the gap shows.
* events, faults, run reports, and the fleet records (``records/{kind}``, host/fleet/records.py)
  — QoS 1 through the on-disk :class:`Outbox`, committed by the bridge's record sink (the path
  the treatment log is written on) before the host acknowledges the pen's frame; an outbox that
  cannot store them ends the link epoch unacknowledged (the pen keeps the record); deleted only
  after the PUBACK. Calibration records are queued from the calibration store (a scan at each
  connect and every ``status_interval``; each record once: Outbox ``remember``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from micropen.protocol.errors import MicropenError
from micropen.protocol.messages import Status, Telemetry

from ..connection import AsyncPen, ConnectionNotice
from ..errors import HostError
from ..tasks import TaskScope, cancel_and_wait, wait_event
from ..treatment_log import TreatmentLog
from . import payloads as P
from .batcher import TelemetryBatcher
from .broker import BrokerConfig
from .commands import (
    MAX_COMMAND_BYTES,
    Command,
    CommandPolicy,
    CommandRefused,
    RecentReplies,
    execute,
    parse_command,
)
from .errors import BrokerConfigError, BrokerRefused, FleetError
from .outbox import Outbox
from .record_outbox import RecordOutbox
from .replay import ReplayGuard
from .topics import PenTopics, check_level, encode

__all__ = ["BridgeConfig", "FleetBridge"]

log = logging.getLogger("micropen.fleet")
BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
AUTH_REFUSED = (4, 5, 134, 135)  # 3.1.1 bad credentials / not authorised; MQTT 5 equivalents


@dataclass(frozen=True)
class BridgeConfig:
    """What a bridge publishes and accepts; the defaults suit a clinic on one broker."""

    site: str = "default"
    queue_dir: Path = Path("fleet-queue")
    telemetry_interval: float = 0.1  # s per batch
    telemetry_max_hz: int = 200  # samples/s kept; the rest are decimated (and counted)
    status_interval: float = 10.0  # s between status refreshes when nothing changes
    allow: frozenset[str] = field(default_factory=frozenset)  # remote commands beyond status/stop
    calibration_due: str | None = None  # YYYY-MM-DD when known
    command_timeout: float = 5.0
    backoff: tuple[float, ...] = BACKOFF
    command_max_age: float = 60.0  # s: older commands are refused (replay protection)
    command_clock_skew: float = 5.0  # s a command's sent_at may lie ahead of the bridge's clock
    calibration_store: Path | None = None  # calibration records of this pen are published

    def __post_init__(self) -> None:
        check_level("site", self.site)
        if self.telemetry_interval <= 0 or self.status_interval <= 0:
            raise BrokerConfigError("telemetry and status intervals must be positive seconds")
        if not (self.command_max_age > 0 and self.command_clock_skew >= 0):
            raise BrokerConfigError(
                f"command window {self.command_max_age} s / clock skew "
                f"{self.command_clock_skew} s: give positive seconds (default 60 / 5)"
            )


class FleetBridge:
    """Bridge one open :class:`AsyncPen` to a broker. ``async with FleetBridge(...) as b:``."""

    def __init__(
        self,
        pen: AsyncPen,
        broker: BrokerConfig,
        config: BridgeConfig | None = None,
        *,
        treatment_log: TreatmentLog | None = None,
        clock: Callable[[], float] = time.time,
        records: RecordOutbox | None = None,
    ) -> None:
        if pen.identity is None:
            raise FleetError("open the pen (AsyncPen.open) before bridging it")
        self.pen = pen
        self.config = config or BridgeConfig()
        self.serial = pen.identity.serial
        self.topics = PenTopics(self.config.site, self.serial)
        self.broker = broker.for_pen(self.serial)
        self.policy = CommandPolicy(self.config.allow)
        self.stream = uuid.uuid4().hex[:12]
        # the record sink: given (registered at AsyncPen.open, so it saw the handshake's
        # records) or made here and registered now
        self.records = records if records is not None else RecordOutbox(self.config, clock=clock)
        self.records.attach(pen)  # opens the outbox (no-op when the connection did)
        self.outbox: Outbox = self.records.outbox
        self.batcher = TelemetryBatcher(
            interval=self.config.telemetry_interval, max_hz=self.config.telemetry_max_hz
        )
        self.counters = {
            "connects": 0, "disconnects": 0, "queued": 0, "delivered": 0,
            "telemetry_batches": 0, "telemetry_samples": 0, "telemetry_dropped": 0,
            "status_published": 0,
            "commands": 0, "commands_refused": 0, "outbox_errors": 0,
        }  # fmt: skip
        self._clock = clock
        self._treatment_log = treatment_log
        self._log_session: int | None = None
        self._recent: RecentReplies[asyncio.Future[dict[str, Any]]] = RecentReplies()
        self.replay = ReplayGuard(
            Path(self.config.queue_dir) / f"replay-{self.config.site}-{self.serial}.sqlite",
            max_age=self.config.command_max_age, skew=self.config.command_clock_skew, clock=clock,
        )  # fmt: skip
        self._last_fault: dict[str, Any] | None = None
        self._link_up = pen.connected
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._status_dirty = asyncio.Event()
        self._outbox_wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._notice_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._final_stats: dict[str, Any] | None = None
        self._session_connected = False
        self.records.on_queued = self._queued
        self._remove_listener = pen.add_listener(self._on_pen_message)
        self._remove_sink: Callable[[], None] = _nothing
        if records is None:  # given ones were registered by AsyncPen.open and stay there
            self._remove_sink = pen.add_record_sink(self.records)

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> FleetBridge:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"fleet bridge {self.serial}")

    async def close(self, timeout: float = 5.0) -> None:
        """Say goodbye (retained offline status, clean disconnect) and release the outbox.
        A fatal error of the bridge is raised by :meth:`wait`/:meth:`wait_connected`, and
        only logged here."""
        self._stop.set()
        task, self._task = self._task, None
        try:
            if task is not None:
                await self._end(task, timeout)
        finally:  # cancelled meanwhile too: the task is ended and the outbox released
            self._remove_listener()
            self._remove_sink()
            if self._final_stats is None:
                self._final_stats = self.statistics()
                self.records.close()  # a sink left on the pen stores nothing more
                self.replay.close()

    async def _end(self, task: asyncio.Task[None], timeout: float) -> None:
        """Let the bridge say goodbye for ``timeout`` s, then cancel it; log how it ended."""
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            await cancel_and_wait([task])
            raise
        errors = [] if done else await cancel_and_wait([task])
        if done and not task.cancelled() and (error := task.exception()) is not None:
            errors = [error]
        for error in errors:
            log.error("fleet bridge %s ended: %s", self.serial, error)

    async def run(self) -> None:
        """Publish until :meth:`close`; reconnects by itself. Raises only a first-connect
        credential refusal (BrokerRefused: the user must fix it) and bugs."""
        async with TaskScope(f"fleet bridge {self.serial}") as scope:
            scope.start(self._telemetry_loop(), name=f"telemetry {self.serial}")
            try:
                await self._connection_loop()
            finally:
                self._stop.set()  # the ticker ends at its next tick (and is cancelled anyway)

    async def wait(
        self, timeout: float | None = None, *, until: asyncio.Event | None = None
    ) -> None:
        """Until the bridge ends by itself (only a fatal error ends it: re-raised),
        ``timeout`` passes (None: forever) or ``until`` is set (a stop asked for: SIGTERM,
        Ctrl-C — the caller then closes the bridge as after a timeout)."""
        task = self._task
        if task is None:
            return
        asked = asyncio.ensure_future(until.wait()) if until is not None else None
        try:
            watched = {task} if asked is None else {task, asked}
            done, _ = await asyncio.wait(watched, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            if asked is not None:
                await cancel_and_wait([asked])
        if task in done:
            task.result()

    def add_notice_listener(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Bridge notices ({"event": "connected", ...}) for a CLI or a test."""
        self._notice_listeners.append(callback)
        return lambda: self._notice_listeners.remove(callback)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> None:
        """Until connected to the broker; re-raises why the bridge gave up, if it did."""
        async with asyncio.timeout(timeout):
            waiter = asyncio.ensure_future(self._connected.wait())
            watched = {waiter} | ({self._task} if self._task is not None else set())
            try:
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if not self._connected.is_set() and self._task is not None and self._task.done():
                self._task.result()
                raise FleetError("the bridge stopped before it connected")

    async def wait_drained(self, timeout: float) -> None:
        """Until the outbox is empty and everything in it was acknowledged by the broker."""
        async with asyncio.timeout(timeout):
            while True:
                await self._drained.wait()
                if len(self.outbox) == 0:
                    return
                self._drained.clear()

    def statistics(self) -> dict[str, Any]:
        """Counters, outbox depth and age; after close, the figures at close."""
        if self._final_stats is not None:
            return dict(self._final_stats)
        stats: dict[str, Any] = dict(self.counters)
        for key, value in self.records.counters.items():
            stats[key] += value  # what the record sink queued (or could not)
        stats.update(
            outbox=len(self.outbox),
            outbox_oldest_s=self.outbox.oldest_age(),
            connected=self.connected,
            telemetry=dict(self.batcher.counters),
            stream=self.stream,
        )
        return stats

    # ------------------------------------------------------------------ pen side
    def _on_pen_message(self, message: Any) -> None:
        """Telemetry and link state (records went through the record sink, RecordOutbox)."""
        if isinstance(message, Telemetry):
            self.batcher.add(message)
        elif isinstance(message, ConnectionNotice):
            self._link_up = message.kind != "lost"
            self._status_dirty.set()

    def _queued(self) -> None:
        """The record sink queued something: status changed, the drain has work."""
        self._last_fault = self.records.last_fault
        self._status_dirty.set()
        self._drained.clear()
        self._outbox_wake.set()

    def publish_calibrations(self) -> int:
        """Queue this pen's finished calibration records not queued before; how many."""
        return self.records.publish_calibrations()

    def _scan_calibrations(self) -> None:
        try:
            self.publish_calibrations()
        except MicropenError as exc:  # the store is read again at the next scan
            log.warning("fleet: calibration records of %s not queued: %s", self.serial, exc)

    def _queue(self, channel: str, payload: dict[str, Any]) -> None:
        try:
            if self.outbox.put(payload["id"], self.topics.topic(channel), encode(payload)):
                self.counters["queued"] += 1
        except FleetError:
            self.counters["outbox_errors"] += 1
            log.exception("fleet outbox: %s %s was NOT queued", channel, payload["id"])
            return
        self._drained.clear()
        self._outbox_wake.set()

    # ------------------------------------------------------------------ broker side
    def _will(self) -> aiomqtt.Will:
        gone = P.offline_status(
            self.config.site, self.serial, "connection lost (last will)", at=None
        )
        return aiomqtt.Will(self.topics.status, encode(gone), qos=1, retain=True)

    async def _connection_loop(self) -> None:
        attempt = 0
        ever_connected = False
        while not self._stop.is_set():
            client = self.broker.client(
                f"micropen-bridge-{self.config.site}-{self.serial}",
                will=self._will(),
                max_queued_incoming_messages=1000,
            )
            failure: BaseException | None = None
            self._session_connected = False
            try:
                await self._session(client)
            except* (aiomqtt.MqttError, FleetError) as group:
                failure = _first_leaf(group)
            if self._session_connected:
                ever_connected, attempt = True, 0
            if failure is not None:
                if not ever_connected and _auth_refused(failure):
                    raise BrokerRefused(
                        f"{self.broker.url} refused user {self.broker.username!r}: {failure}; "
                        "check --username/--password-file (and the broker's ACL)"
                    )
                self._notice("disconnected", reason=str(failure) or type(failure).__name__)
            if self._stop.is_set():
                return
            delay = self.config.backoff[min(attempt, len(self.config.backoff) - 1)]
            attempt += 1
            await wait_event(self._stop, delay)

    async def _session(self, client: aiomqtt.Client) -> None:
        async with client:
            self._session_connected = True
            await client.subscribe(self.topics.command_filter, qos=1)
            self._client = client
            self._connected.set()
            self.counters["connects"] += 1
            self._notice("connected", broker=self.broker.url)
            ending = asyncio.Event()
            try:
                async with TaskScope(f"fleet session {self.serial}") as scope:
                    for child in (
                        self._status_loop(client, ending),
                        self._drain(client, ending),
                        self._commands(client, scope),
                        self._stop.wait(),
                    ):
                        scope.start(_ends_session(child, ending))
                    await ending.wait()  # the first child to end (or stop()) ends the session
                if self._stop.is_set():
                    await self._goodbye(client)
            except BaseException as exc:
                if not _only(exc, (aiomqtt.MqttError, FleetError)):  # a bug or a cancel: the
                    await self._failed(client, exc)  # clean DISCONNECT that follows drops the
                raise  # will, so say offline first (a lost connection leaves the will to fire)
            finally:
                self._client = None
                self._connected.clear()
                self.counters["disconnects"] += 1

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """Last telemetry batch, then the retained offline status (no will on a clean stop)."""
        bye = P.offline_status(self.config.site, self.serial, "bridge stopped", at=self._clock())
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(2.0):
                batch = self.batcher.take(asyncio.get_running_loop().time())
                if batch is not None:
                    await self._publish_batch(batch)
                await client.publish(self.topics.status, encode(bye), qos=1, retain=True)
        self._notice("stopped")

    async def _failed(self, client: aiomqtt.Client, exc: BaseException) -> None:
        """The retained offline status when the bridge ends abnormally (shielded, 2 s)."""
        why = "bridge cancelled" if isinstance(exc, asyncio.CancelledError) else "bridge failed"
        reason = f"{why}: {type(exc).__name__}"
        gone = P.offline_status(self.config.site, self.serial, reason, at=self._clock())
        publish = asyncio.ensure_future(
            client.publish(self.topics.status, encode(gone), qos=1, retain=True)
        )
        try:
            async with asyncio.timeout(2.0):
                await asyncio.shield(publish)  # a second cancel of the bridge does not stop it
        except BaseException:  # best effort: the exception in flight is what matters
            publish.cancel()
            log.exception("fleet bridge %s: could not publish its offline status", self.serial)
        log.error("fleet bridge %s ended abnormally (%s); status set offline", self.serial, reason)

    async def _status_loop(self, client: aiomqtt.Client, ending: asyncio.Event) -> None:
        while not ending.is_set():
            self._scan_calibrations()
            self._status_dirty.clear()  # before reading: a change during the read is not lost
            await self._publish_status(client)
            if ending.is_set():  # a cancel aiomqtt's wait_for swallowed (see _ends_session)
                return  # must not cost a whole status interval: close() waits only 5 s
            await wait_event(self._status_dirty, self.config.status_interval)

    async def _publish_status(self, client: aiomqtt.Client) -> None:
        status = await self._fresh_status()
        ident = self.pen.identity
        assert ident is not None
        payload = P.online_status(
            self.config.site, ident, status, at=self._clock(), link_up=self._link_up,
            last_fault=self._last_fault, calibration_due=self.config.calibration_due,
            stream=self.stream, simulated=self.pen.is_simulated,
        )  # fmt: skip
        await client.publish(self.topics.status, encode(payload), qos=1, retain=True)
        self.counters["status_published"] += 1

    async def _fresh_status(self) -> Status | None:
        if not self.pen.connected:
            self._link_up = False
            return self.pen.last_status
        try:
            status = await self.pen.status()
        except HostError as exc:
            log.info("fleet: status of %s unavailable: %s", self.serial, exc)
            self._link_up = False
            return self.pen.last_status
        self._link_up = True
        return status

    async def _drain(self, client: aiomqtt.Client, ending: asyncio.Event) -> None:
        """Publish queued entries oldest first; delete each only after its PUBACK."""
        while not ending.is_set():
            self._outbox_wake.clear()
            entries = self.outbox.peek(100)
            if not entries:
                self._drained.set()
                await self._outbox_wake.wait()
                continue
            for entry in entries:
                self.outbox.attempted(entry.seq)
                await client.publish(entry.topic, entry.payload, qos=entry.qos)
                self.outbox.delete(entry.seq)
                self.counters["delivered"] += 1
                if ending.is_set():
                    return

    async def _telemetry_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.telemetry_interval
        next_tick = loop.time() + interval
        while not self._stop.is_set():
            await wait_event(self._stop, max(0.0, next_tick - loop.time()))
            if self._stop.is_set():
                return  # the goodbye took the last batch
            next_tick = max(next_tick + interval, loop.time())
            batch = self.batcher.take(loop.time())
            if batch is None:
                continue
            await self._publish_batch(batch)

    async def _publish_batch(self, batch: Any) -> None:
        client = self._client
        ident = self.pen.identity
        if client is None or ident is None:
            self.counters["telemetry_dropped"] += 1
            return
        payload = P.telemetry_payload(
            self.config.site, self.serial, stream=self.stream, seq=batch.seq,
            boot_id=ident.boot_id, samples=batch.samples, decimated=batch.decimated,
            sent_at=self._clock(),
        )  # fmt: skip
        try:
            await client.publish(self.topics.telemetry, encode(payload), qos=0)
        except aiomqtt.MqttError:
            self.counters["telemetry_dropped"] += 1  # the session notices the loss itself
            return
        self.counters["telemetry_batches"] += 1
        self.counters["telemetry_samples"] += len(batch.samples)

    # ------------------------------------------------------------------ remote commands
    async def _commands(self, client: aiomqtt.Client, scope: TaskScope) -> None:
        async for message in client.messages:
            sender = self.topics.command_sender(str(message.topic))
            if sender is not None:
                scope.start(self._handle(client, message, sender))

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message, sender: str) -> None:
        """Answer one command. Nothing a payload does may end the bridge: every exception is
        a refusal (logged), and the reply's failure is logged, not raised."""
        self.counters["commands"] += 1
        reply: dict[str, Any] | None = None
        command: Command | None = None
        try:
            size = _payload_size(message)
            if size > MAX_COMMAND_BYTES:  # before anything reads it: never reaches the parser
                raise CommandRefused(
                    "too-large", f"command payload is {size} bytes; at most {MAX_COMMAND_BYTES}"
                )
            try:
                command = parse_command(
                    _payload_bytes(message), retained=message.retain, sender=sender
                )
            except CommandRefused:
                raise
            except Exception as exc:  # a parser bug must not end the bridge either
                log.exception("fleet: command from %s on %s could not be read", sender, self.serial)
                why = f"unreadable command ({type(exc).__name__})"
                raise CommandRefused("bad-request", why) from None
            reply = await self._once(command)
        except CommandRefused as refused:
            reply = self._refusal(refused, command, sender)
        except Exception as exc:
            log.exception("fleet: command on %s failed inside the bridge", self.serial)
            cid = command.id if command is not None else None
            internal = CommandRefused(
                "internal", f"the bridge failed on this command ({type(exc).__name__}); it may "
                "not have run: check the pen's status", cid,
            )  # fmt: skip
            reply = self._refusal(internal, command, sender)
        if reply is None:
            return
        try:
            await client.publish(self.topics.reply, encode(reply), qos=1)
        except aiomqtt.MqttError as exc:  # the session notices a lost broker by itself
            log.warning("fleet: reply %s on %s lost: %s", reply.get("id"), self.serial, exc)
        except Exception:
            log.exception("fleet: reply %s on %s not published", reply.get("id"), self.serial)

    async def _once(self, command: Command) -> dict[str, Any]:
        """Execute each command id once: a redelivery, even one arriving while the first is
        still running, gets the same reply; an id seen before (in this run or, via the durable
        replay store, an earlier one) or a command outside the time window is refused."""
        try:
            self.replay.check_age(command)  # the window first: even a redelivery expires
            earlier = self._recent.get(command.id)
            if earlier is not None:
                return await asyncio.shield(earlier)
            self.replay.admit(command)  # committed before it runs: at most once, durably
        except CommandRefused as refused:
            return self._refusal(refused, command, command.sender) or {}
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        reply.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
        self._recent.add(command.id, reply)
        try:
            reply.set_result(await self._execute(command))
        except BaseException as exc:  # the id stays used (durably): a command runs at most once;
            reply.set_exception(CommandRefused(  # copies waiting on it are refused, not crashed
                "internal", f"the bridge failed on this command ({type(exc).__name__}); it may "
                "not have run: check the pen's status", command.id, command.name,
            ))  # fmt: skip
            raise
        return reply.result()

    async def _execute(self, command: Command) -> dict[str, Any]:
        try:
            self.policy.check(command)
            async with asyncio.timeout(self.config.command_timeout):
                result = await execute(self.pen, command)
        except CommandRefused as refused:
            return self._refusal(refused, command, command.sender) or {}
        except TimeoutError:
            late = f"no result within {self.config.command_timeout} s; check the pen's status"
            timed_out = CommandRefused("pen", late, command.id)
            return self._refusal(timed_out, command, command.sender) or {}
        self._record_command(command.name, command.id, command, None, command.sender)
        return P.reply_payload(
            self.config.site, self.serial, command.id, result=result, sender=command.sender
        )

    def _refusal(
        self, refused: CommandRefused, command: Command | None, sender: str | None = None
    ) -> dict[str, Any] | None:
        """Log a refusal; its reply (None when the command had no readable id)."""
        self.counters["commands_refused"] += 1
        name = command.name if command is not None else (refused.name or "?")
        self._record_command(name, refused.command_id, command, refused, sender)
        if refused.command_id is None:
            return None
        return P.reply_payload(
            self.config.site, self.serial, refused.command_id,
            error=(refused.code, refused.reason), sender=sender,
        )  # fmt: skip

    def _record_command(
        self,
        name: str,
        command_id: str | None,
        command: Command | None,
        refused: CommandRefused | None,
        sender: str | None = None,
    ) -> None:
        """Every remote command is logged three ways: Python logging, the bridge's event
        stream (QoS 1, queued) and, when attached, the treatment log. The sender is the
        authenticated broker user; the payload's 'from' is kept apart as unverified."""
        detail: dict[str, Any] = {"id": command_id, "ok": refused is None, "sender": sender}
        if command is not None and command.display_name:
            detail["from_unverified"] = command.display_name
        if command is not None and command.args:
            detail["args"] = command.args  # validated: ≤ 16 plain values
        if command is not None and command.ignored:
            detail["ignored_args"] = command.ignored
        if refused is not None:
            detail["error"] = {"code": refused.code, "reason": refused.reason}
        level = logging.INFO if refused is None else logging.WARNING
        log.log(level, "fleet: remote command %s on %s: %s", name, self.serial, detail)
        ident = self.pen.identity
        boot = ident.boot_id if ident is not None else 0
        try:
            self._queue("events", P.event_payload(
                self.config.site, self.serial, boot_id=boot, kind="remote-command", code=name,
                value=int(refused is None), run_id=0, pen_t_ms=None, at=self._clock(),
                detail=detail,
            ))  # fmt: skip
            self._notice("remote-command", command=name, **detail)
        except Exception:  # logging a command must never end the bridge
            log.exception("fleet: remote command %s on %s not queued", name, self.serial)
        self._treatment_log_event(name, refused is None, detail)

    def _treatment_log_event(self, name: str, ok: bool, detail: dict[str, Any]) -> None:
        target = self._log_target()
        if target is None:
            return
        tlog, session = target
        try:
            tlog.record_event(
                session, kind="remote-command", code=name, value=int(ok), run_id=0,
                pen_t_ms=None, detail=json.dumps(detail, sort_keys=True),
            )  # fmt: skip
        except Exception:  # the log's own error names the file; the command already ran
            log.exception("fleet: could not record remote command %s in the treatment log", name)

    def _log_target(self) -> tuple[TreatmentLog, int] | None:
        recorder = getattr(self.pen, "recorder", None)
        if recorder is not None and getattr(recorder, "session_id", None) is not None:
            return recorder.log, recorder.session_id
        if self._treatment_log is None:
            return None
        if self._log_session is None:
            ident = self.pen.identity
            assert ident is not None
            self._log_session = self._treatment_log.start_session(
                pen_serial=ident.serial, pen_model=ident.model,
                firmware=f"{ident.firmware_major}.{ident.firmware_minor}.{ident.firmware_patch}",
                protocol_version=ident.protocol_version, boot_id=ident.boot_id,
                operator="fleet bridge", pen_url=self.pen.url, is_simulated=self.pen.is_simulated,
            )  # fmt: skip
        return self._treatment_log, self._log_session

    def _notice(self, event: str, **fields: Any) -> None:
        notice = {"event": event, "serial": self.serial, "site": self.config.site, **fields}
        log.info("fleet bridge %s: %s", self.serial, notice)
        for callback in list(self._notice_listeners):
            try:
                callback(notice)
            except Exception:
                log.exception("fleet notice listener %r failed", callback)


def _nothing() -> None:
    pass


def _auth_refused(exc: BaseException) -> bool:
    rc = getattr(exc, "rc", None)
    value = getattr(rc, "value", rc)
    return isinstance(exc, aiomqtt.MqttCodeError) and value in AUTH_REFUSED


def _only(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` (or every leaf of an exception group) is one of ``kinds``."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only(leaf, kinds) for leaf in exc.exceptions)
    return isinstance(exc, kinds)


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _payload_size(message: aiomqtt.Message) -> int:
    payload = message.payload
    if isinstance(payload, bytes | bytearray):
        return len(payload)
    return len(str(payload)) if payload is not None else 0


def _payload_bytes(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


async def _ends_session(child: Coroutine[Any, Any, object], ending: asyncio.Event) -> None:
    """Run one session task; when any of them ends, ``ending`` tells the others.

    The task group cancels the others too, but aiomqtt waits with ``asyncio.wait_for``, which
    on Python 3.11 returns normally when the awaited publish completes in the same instant as
    the cancel (CPython gh-86296): a loop that missed its cancel would keep the group waiting
    forever. The loops check ``ending`` after each such wait."""
    try:
        await child
    finally:
        ending.set()
