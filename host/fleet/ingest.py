"""Ingest workers: fleet records from the broker into PostgreSQL, acknowledged after commit.

A worker subscribes with an MQTT 5 *shared subscription*
(``$share/{group}/micropen/v1/+/+/records/#``): the broker hands each message to one member of
the group, so N workers split the load, on one broker or a cluster (EMQX, HiveMQ) alike.

Delivery is at least once end to end and exactly once in the database:

* the worker turns automatic acknowledgement off (paho's ``manual_ack``; aiomqtt 2.5 does not
  expose it, so it is set on the paho client aiomqtt wraps) and sends a message's PUBACK only
  after the transaction holding its rows committed. A worker killed before that leaves the
  message unacknowledged: the broker sends it again (to the same session when the worker comes
  back — its session is persistent: fixed client id, ``clean_start`` false, a session expiry);
* rows are upserts on the records' natural keys (:mod:`.ingest_store`), so a redelivered
  message, or one stored by two workers, is one row;
* every message is checked before the database sees it (:mod:`.record_check`: bounded size
  and nesting, no duplicate keys, every field's type and range, ``id`` the record's natural
  key, ``at`` a sane time); a message that fails is kept in ``rejected_messages`` with the
  reason and acknowledged — no message, however built, ends a worker;
* messages are stored in batches (what has arrived, up to ``batch_max``) in one transaction
  with a savepoint per message: a message the database refuses (any error of its own
  statements: SQLSTATE class 22 data, 23 integrity, 42 type/syntax) is kept in
  ``rejected_messages`` instead of blocking the batch; PUBACKs go out in arrival order.
  Only a lost connection (no SQLSTATE, OperationalError) is an outage, retried.

A clean stop (SIGTERM) keeps the subscription and the persistent session: the broker queues
the group's share for the stopped worker until it returns (within the session expiry), so a
restart or an upgrade loses nothing. Leaving the group is explicit: :meth:`IngestWorker.
leave_group` (``micropen fleet ingest --leave-group``) unsubscribes, stores what the session
still held, and ends the session.

A lost database connection (PostgreSQL restarted) is retried with backoff *without* acking;
a lost broker connection is reconnected with backoff (aiomqtt's documented loop); the
migrations (:mod:`.migrate`) run once at start.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiomqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..tasks import wait_event
from .broker import BrokerConfig
from .errors import BrokerRefused, FleetError, PayloadError
from .ingest_store import Statement, rejected, statements
from .migrate import migrate
from .record_check import parse_record
from .topics import TOPIC_ROOT, parse_topic

__all__ = ["RECORDS_FILTER", "IngestConfig", "IngestWorker"]

log = logging.getLogger("micropen.fleet.ingest")
RECORDS_FILTER = f"{TOPIC_ROOT}/+/+/records/#"
BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
# a connection the broker drops this soon after it was made, this many times in a row, is
# most likely taken over by another client of the same account (the broker makes the username
# the client id): said once, in one line
SHORT_SESSION_S = 2.0
SHORT_SESSIONS = 3
# SQLSTATE classes of an error one message's statements caused: the message is refused
_MESSAGE_ERROR_CLASSES = ("22", "23", "42")
# ... except these of class 42, which no message causes: the database is not as it should be
# (a revoked privilege, a missing table); retried as an outage, never stored as rejections
_SETUP_ERRORS = frozenset({"42501", "42P01"})


# (topic, payload, statements, why it is rejected or None, the record's 'at' or None)
_Prepared = tuple[str, bytes, list[Statement], str | None, float | None]


class _Stopped(Exception):
    """stop() while the database was unreachable: the batch in hand is left unacknowledged."""


@dataclass(frozen=True)
class IngestConfig:
    group: str = "micropen-ingest"
    worker_id: str = field(default_factory=lambda: socket.gethostname())
    session_expiry_s: int = 86_400  # the broker keeps a stopped worker's queue this long
    batch_max: int = 200
    migrate: bool = True
    backoff: tuple[float, ...] = BACKOFF
    leave_quiet_s: float = 1.0  # --leave-group: the session is drained when this long quiet

    @property
    def client_id(self) -> str:
        return f"micropen-ingest-{self.group}-{self.worker_id}"

    @property
    def subscription(self) -> str:
        return f"$share/{self.group}/{RECORDS_FILTER}"


class IngestWorker:
    """One ingest worker; ``await worker.run()`` until :meth:`stop`."""

    def __init__(
        self,
        broker: BrokerConfig,
        dsn: str,
        config: IngestConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.broker = replace(broker, protocol=5)  # shared subscriptions, session expiry
        self.dsn = dsn
        self.config = config or IngestConfig()
        self._clock = clock
        self.counters = {
            "received": 0, "stored": 0, "rejected": 0, "batches": 0, "acked": 0,
            "mqtt_connects": 0, "mqtt_disconnects": 0, "db_connects": 0, "db_errors": 0,
        }  # fmt: skip
        self._short_sessions = 0  # consecutive connections the broker dropped right away
        self._leaving = False
        self.latencies: deque[float] = deque(maxlen=100_000)  # s, record 'at' → commit
        self._stop = asyncio.Event()
        self._db: psycopg.AsyncConnection[Any] | None = None
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def add_notice_listener(self, callback: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(callback)

    def _notice(self, event: str, **fields: Any) -> None:
        notice = {"event": event, "worker": self.config.worker_id, **fields}
        log.info("ingest: %s", notice)
        for callback in list(self._listeners):
            callback(notice)

    def stop(self) -> None:
        self._stop.set()

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = dict(self.counters)
        lat = sorted(self.latencies)
        if lat:
            stats["latency_ms"] = {
                "p50": round(1000 * statistics.median(lat), 2),
                "p99": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2),
                "max": round(1000 * lat[-1], 2),
                "n": len(lat),
            }
        return stats

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        if self.config.migrate:
            try:
                applied = await asyncio.to_thread(migrate, self.dsn)
            except psycopg.Error as exc:
                raise FleetError(
                    f"cannot migrate the fleet database: {exc}; check --db and that the "
                    "server is running"
                ) from exc
            if applied:
                self._notice("migrated", versions=applied)
        attempt = 0
        try:
            while not self._stop.is_set():
                connects = self.counters["mqtt_connects"]
                started = time.monotonic()
                try:
                    await self._session()
                    attempt = 0
                    if self._leaving:
                        break
                except _Stopped:
                    break
                except aiomqtt.MqttError as exc:
                    if self.counters["mqtt_connects"] == 0 and _auth_refused(exc):
                        raise BrokerRefused(
                            f"{self.broker.url} refused user {self.broker.username!r}: {exc}; "
                            "check --username/--password-file (and the broker's ACL)"
                        ) from exc
                    self.counters["mqtt_disconnects"] += 1
                    self._notice("disconnected", reason=str(exc) or type(exc).__name__)
                    self._dropped(connects, time.monotonic() - started)
                if self._stop.is_set():
                    break
                delay = self.config.backoff[min(attempt, len(self.config.backoff) - 1)]
                attempt += 1
                await wait_event(self._stop, delay)
        finally:
            if self._db is not None:
                await self._db.close()
                self._db = None
            self._notice("stopped", **self.statistics())

    def _dropped(self, connects_before: int, lasted_s: float) -> None:
        """Count connections the broker ended right after accepting them; say once, in one
        line, what the likely cause is when it keeps happening."""
        if self.counters["mqtt_connects"] == connects_before or lasted_s >= SHORT_SESSION_S:
            self._short_sessions = 0  # never connected (broker down), or a real session
            return
        self._short_sessions += 1
        if self._short_sessions == SHORT_SESSIONS:
            self._notice(
                "kicked",
                reason=f"the broker dropped this worker right after connecting "
                f"{SHORT_SESSIONS} times in a row: another client may be using broker account "
                f"{self.broker.username!r} (the broker makes the username the client id); give "
                "each worker its own account",
            )

    async def leave_group(self) -> None:
        """Decommission this worker: connect to its persistent session, unsubscribe, store and
        acknowledge what the session still held (until ``leave_quiet_s`` passes with nothing),
        and end the session (expiry 0 on disconnect). Its share goes to the other workers."""
        self._leaving = True
        await self.run()

    def _client(self, *, expiry_s: int | None = None, clean: bool = False) -> aiomqtt.Client:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry_s if expiry_s is None else expiry_s
        client = self.broker.client(self.config.client_id, clean_session=clean, properties=props)
        # aiomqtt 2.5 has no manual-ack option; paho (which it wraps) does: PUBACK only when
        # we call ack(mid, qos), i.e. after the commit
        client._client.manual_ack_set(True)
        return client

    async def _session(self) -> None:
        if self._leaving:
            await self._leave()
            return
        client = self._client()
        async with client:
            self.counters["mqtt_connects"] += 1
            await client.subscribe(self.config.subscription, qos=1)
            self._notice("subscribed", subscription=self.config.subscription,
                         broker=self.broker.url)  # fmt: skip
            await self._consume(client)
            # a clean stop keeps the subscription and the persistent session: the broker
            # queues this worker's share until it returns (within the session expiry). What
            # had already arrived is stored and acked; what arrives meanwhile stays unacked
            # in the session and is sent again when the worker reconnects.
            arrived = len(client.messages)
            while arrived > 0:
                taken = await self._batch(client, await anext(client.messages), arrived - 1)
                arrived -= taken

    async def _leave(self) -> None:
        client = self._client()
        async with client:
            self.counters["mqtt_connects"] += 1
            await client.unsubscribe(self.config.subscription)
            self._notice("unsubscribed", subscription=self.config.subscription,
                         broker=self.broker.url)  # fmt: skip
            # the session's queued and unacknowledged messages come regardless: store them
            messages = client.messages
            while not self._stop.is_set():
                try:
                    async with asyncio.timeout(self.config.leave_quiet_s):
                        first = await anext(messages)
                except TimeoutError:
                    break
                await self._batch(client, first)
        # end the session on the broker: a clean-start connection with expiry 0 replaces it
        async with self._client(expiry_s=0, clean=True):
            pass
        self._notice("left-group", subscription=self.config.subscription)

    async def _consume(self, client: aiomqtt.Client) -> None:
        """Batches until stop() (a batch being stored is finished first, then acked)."""
        messages = client.messages
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                arriving = asyncio.ensure_future(anext(messages))
                await asyncio.wait({arriving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not arriving.done():
                    arriving.cancel()
                    await asyncio.gather(arriving, return_exceptions=True)
                    return
                await self._batch(client, arriving.result())
        finally:
            stopping.cancel()

    async def _batch(
        self, client: aiomqtt.Client, first: aiomqtt.Message, more: int | None = None
    ) -> int:
        """Store ``first`` and what else has arrived (up to batch_max, and ``more`` when
        given) in one transaction; then, and only then, acknowledge them, in arrival order.
        Returns how many messages it took."""
        messages = client.messages
        batch = [first]
        most = self.config.batch_max if more is None else min(self.config.batch_max, 1 + more)
        while len(messages) and len(batch) < most:
            batch.append(await anext(messages))
        self.counters["received"] += len(batch)
        times = await self._store(batch)
        committed = self._clock()
        for message in batch:
            client._client.ack(message.mid, message.qos)
            self.counters["acked"] += 1
        self.counters["batches"] += 1
        self.latencies.extend(committed - at for at in times)
        return len(batch)

    # ------------------------------------------------------------------ database
    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._db is None or self._db.closed:
            self._db = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=False, application_name=self.config.client_id
            )  # named in pg_stat_activity: which worker holds what
            self.counters["db_connects"] += 1
        return self._db

    async def _store(self, batch: list[aiomqtt.Message]) -> list[float]:
        """Commit the batch's rows; retried (never acked meanwhile) while the database is
        unreachable. Returns the stored records' times ('at')."""
        prepared = [self._prepare(m) for m in batch]
        attempt = 0
        while True:
            try:
                db = await self._connection()
                try:  # the fast path: the whole batch pipelined, no round trip per statement
                    stored, rejects = await self._store_pipelined(db, prepared)
                except psycopg.Error as exc:
                    if not _message_error(exc):
                        raise
                    # one message refused: the transaction is rolled back; redo the batch
                    # with a savepoint per message, keeping the refused one as rejected
                    stored, rejects = await self._store_one_by_one(db, prepared)
                self.counters["stored"] += stored
                self.counters["rejected"] += rejects
                return [p[4] for p in prepared if p[4] is not None and p[3] is None]
            except psycopg.Error as exc:
                if _message_error(exc):
                    raise  # the savepoint path refused it again outside any message: a bug
                self.counters["db_errors"] += 1
                self._notice("db-unavailable", reason=str(exc).strip().splitlines()[0][:200])
                if self._db is not None:
                    await self._db.close()
                    self._db = None
                delay = self.config.backoff[min(attempt, len(self.config.backoff) - 1)]
                attempt += 1
                if await wait_event(self._stop, delay):
                    raise _Stopped from exc  # the batch stays unacknowledged: redelivered

    async def _store_pipelined(
        self, db: psycopg.AsyncConnection[Any], prepared: list[_Prepared]
    ) -> tuple[int, int]:
        stored = rejects = 0
        async with db.transaction(), db.pipeline(), db.cursor() as cur:
            for topic, data, stmts, bad, _ in prepared:
                if bad is not None:
                    await cur.execute(*rejected(topic, data, bad))
                    rejects += 1
                    continue
                for sql, params in stmts:
                    await cur.execute(sql, params)
                stored += 1
        return stored, rejects

    async def _store_one_by_one(
        self, db: psycopg.AsyncConnection[Any], prepared: list[_Prepared]
    ) -> tuple[int, int]:
        stored = rejects = 0
        async with db.transaction(), db.cursor() as cur:
            for topic, data, stmts, bad, _ in prepared:
                why = bad if bad is not None else await self._try(db, cur, stmts)
                if why is None:
                    stored += 1
                    continue
                await self._reject(db, cur, topic, data, why)
                rejects += 1
        return stored, rejects

    async def _reject(
        self, db: psycopg.AsyncConnection[Any], cur: psycopg.AsyncCursor[Any], topic: str,
        data: bytes, why: str,
    ) -> None:  # fmt: skip
        """Keep a refused message; should even its reason be refused, keep it with a plain one."""
        try:
            async with db.transaction():
                await cur.execute(*rejected(topic, data, why))
        except psycopg.Error as exc:
            if not _message_error(exc):
                raise
            await cur.execute(*rejected(topic.encode().hex(), data, "refused; reason not storable"))

    async def _try(
        self, db: psycopg.AsyncConnection[Any], cur: psycopg.AsyncCursor[Any],
        stmts: list[Statement],
    ) -> str | None:  # fmt: skip
        """Run one message's statements in a savepoint; why the database refused them (a
        constraint, a value out of range: the batch goes on without it), None when stored."""
        try:
            async with db.transaction():
                for sql, params in stmts:
                    await cur.execute(sql, params)
        except psycopg.Error as exc:
            if not _message_error(exc):
                raise  # the connection, not this message: an outage, the batch is retried
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("ingest: a record was refused by the database: %s", why)
            return f"refused by the database: {why}"
        return None

    def _prepare(self, message: aiomqtt.Message) -> _Prepared:
        """(topic, payload, statements, why rejected or None, record time or None)."""
        topic = str(message.topic)
        payload = message.payload
        data = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
        try:
            site, serial, channel = parse_topic(topic)
            if not channel.startswith("records/"):
                raise PayloadError(f"topic {topic!r} is not a records topic")
            record = parse_record(data, channel)
            if (record["site"], record["serial"]) != (site, serial):
                raise PayloadError(
                    f"payload names {record['site']}/{record['serial']}, the topic {site}/{serial}"
                )
            return topic, data, statements(record), None, float(record["at"])
        except PayloadError as exc:
            return topic, data, [], str(exc), None
        except Exception as exc:  # no message, however built, may end the worker
            log.exception("ingest: a message could not be read")
            return topic, data, [], f"cannot be read: {type(exc).__name__}: {exc}"[:300], None


def _message_error(exc: BaseException) -> bool:
    """Whether a database error was caused by one message's statement (data exception,
    integrity or type/syntax error: SQLSTATE class 22, 23, 42) rather than by the connection
    (no SQLSTATE: connection lost, server restarting)."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    state = getattr(exc, "sqlstate", None)
    if state is None:  # refused by psycopg before sending (e.g. a NUL in a text parameter)
        return isinstance(
            exc, psycopg.DataError | psycopg.IntegrityError | psycopg.ProgrammingError
        )
    return state[:2] in _MESSAGE_ERROR_CLASSES and state not in _SETUP_ERRORS


def _auth_refused(exc: BaseException) -> bool:
    """A CONNACK refusing the credentials (MQTT 5: bad user name or password, not authorized)."""
    rc = getattr(exc, "rc", None)
    value = getattr(rc, "value", rc)
    return isinstance(exc, aiomqtt.MqttCodeError) and value in (4, 5, 134, 135)
