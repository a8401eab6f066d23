"""The link pump: bytes between the sans-I/O link and the transport, and the link kept alive.

Two tasks per link epoch, both owned by the supervisor's scope: the reader feeds what the
transport delivers into the link, the ticker sends heartbeats, fires retransmit timers and
flushes the treatment log's samples. Both hand every link event to one callback and raise
:class:`LinkDown` when the epoch is over. Time comes from the clock it is given (the event
loop's), never from the wall, so the host runs in virtual time under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import Callable

from micropen.protocol import limits as L
from micropen.protocol import timing as T
from micropen.protocol.errors import LocalProtocolError, MicropenError
from micropen.protocol.events import BadMessage, Connected, LinkLost, MessageReceived, PeerReset
from micropen.protocol.link import Link, Role
from micropen.protocol.messages import Heartbeat
from micropen.protocol.schema import Message

from .pairing import HostKeys
from .transports import Transport

__all__ = ["LinkDown", "LinkPump", "NotRecorded"]

log = logging.getLogger("micropen.host")

LIVENESS_TIMEOUT = T.HOST_LIVENESS_TIMEOUT_S  # the host notices a dead link within 1 s
ACK_DELAY = T.HOST_ACK_DELAY_S
TICK_MAX_S = 0.1  # the ticker looks at the link at least this often
TIMER_SLACK_S = 1e-6  # past a deadline, not a hair before it (float deadlines, quantized clocks)
BAD_MESSAGE_LOG_EVERY_S = 10.0


class LinkDown(Exception):
    """The current link epoch ended (why: args[0])."""


class NotRecorded(LinkDown):
    """The log could not store what the pen handed over: end this epoch at once, before an
    acknowledgement of it can leave (the log's error: args[1])."""


class LinkPump:
    """One link to one pen over one transport, and the tasks that move its bytes."""

    def __init__(
        self,
        transport: Transport,
        *,
        clock: Callable[[], float],
        on_message: Callable[[Message], None],
        on_tick: Callable[[], None],
        beating: asyncio.Event,
        counters: dict[str, int],
        keys: HostKeys | None = None,
    ) -> None:
        self.transport = transport
        self.keys = keys  # this host's pairings: every epoch offers authentication with them
        self._clock = clock
        self._on_message = on_message
        self._on_tick = on_tick  # may raise NotRecorded
        self._beating = beating  # heartbeats only once the session is ready
        self.counters = counters
        self.link = Link(
            Role.HOST,
            liveness_timeout=LIVENESS_TIMEOUT,
            ack_delay=ACK_DELAY,
            pairing=None if keys is None else keys.lookup,
        )
        # a delayed ack (4 ms, well under the pen's 25 ms minimum RTO) rides on the next
        # command instead of costing a write of its own
        self.heartbeat_interval = 0.0
        self.set_watchdog(L.HEARTBEAT_DEFAULT_MS)
        self._heartbeats = itertools.count()
        self._last_heartbeat = 0.0
        self._silent_until = 0.0
        self._ticker_wake_at = 0.0
        self._bad_logged_at = -math.inf
        self._kick = asyncio.Event()

    def now(self) -> float:
        return self._clock()

    def set_watchdog(self, ms: int) -> None:
        """The pen's watchdog: heartbeats go four times within it."""
        self.heartbeat_interval = ms / 1000 / T.HEARTBEATS_PER_WATCHDOG

    # ------------------------------------------------------------------ sending
    def new_epoch(self) -> None:
        """Start a new link epoch (SYN); what the old one left unsent is the requests' job."""
        keys = self.keys
        self.link.connect(self.now(), keys.host_id if keys is not None and keys.offers else None)
        self.flush()

    def send(self, *messages: Message, urgent: bool = False) -> None:
        """Queue ``messages`` and write what can leave now, in one write. A link that just
        closed under us drops them: the reconnect re-sends or fails the requests."""
        with contextlib.suppress(LocalProtocolError):
            for message in messages:
                self.link.send(message, self.now(), urgent=urgent)
        self.flush()
        deadline = self.link.next_deadline()
        if deadline is not None and deadline < self._ticker_wake_at:
            self._kick.set()  # the ticker sleeps past this frame's retransmit time

    def flush(self) -> None:
        now = self.now()
        if now < self._silent_until:
            return
        data = self.link.data_to_send(now)
        if data:
            self.transport.write(data)

    def go_silent(self, seconds: float) -> None:
        """Send nothing at all (no heartbeat, no acknowledgement) for ``seconds``."""
        self._silent_until = self.now() + seconds

    # ------------------------------------------------------------------ tasks
    async def wait_connected(self) -> None:
        """Until the pen answered this epoch's SYN."""
        while not self.link.connected:
            self._kick.clear()
            await self._kick.wait()

    async def reader(self) -> None:
        while True:
            data = await self.transport.read()
            self.link.receive_data(data, self.now())
            self._process_events()
            self.flush()

    async def ticker(self) -> None:
        link = self.link
        while True:
            now = self.now()
            beat_due = now - self._last_heartbeat >= self.heartbeat_interval
            # no heartbeat on a closed link (between LinkLost and the supervisor's reaction):
            # send() would raise and end the ticker
            if self._beating.is_set() and beat_due and now >= self._silent_until and link.connected:
                self._last_heartbeat = now
                link.send(Heartbeat(next(self._heartbeats) & 0xFFFF_FFFF), now)
            link.handle_timeout(now)
            self._process_events()
            self.flush()
            self._on_tick()
            # the next heartbeat is a deadline only once heartbeats flow (before that it lies in
            # the past, and waking for it would spin)
            wake = now + TICK_MAX_S
            if self._beating.is_set() and link.connected:  # no beat to wait for on a closed link
                beat = max(self._last_heartbeat + self.heartbeat_interval, self._silent_until)
                wake = min(wake, beat)
            deadline = link.next_deadline()
            if deadline is not None:
                wake = min(wake, deadline)
            if now < self._silent_until:  # nothing may leave before then: nothing is due
                wake = max(wake, self._silent_until)
            self._kick.clear()
            # a timer may fire up to the clock's resolution early: wake a microsecond late
            pause = min(max(0.0, wake - now) + TIMER_SLACK_S, TICK_MAX_S)
            self._ticker_wake_at = now + pause
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._kick.wait()

    def _process_events(self) -> None:
        while (event := self.link.next_event()) is not None:
            if isinstance(event, MessageReceived):
                self._on_message(event.message)
            elif isinstance(event, Connected):
                self._kick.set()
            elif isinstance(event, BadMessage):
                self._count_bad_message(event.error)
            elif isinstance(event, LinkLost | PeerReset):
                raise LinkDown(event.reason)

    def _count_bad_message(self, error: object) -> None:
        """Counted always; logged at most once per BAD_MESSAGE_LOG_EVERY_S (a noisy line must
        not flood the log with thousands of identical warnings)."""
        self.counters["bad_messages"] += 1
        now = self.now()
        if now - self._bad_logged_at >= BAD_MESSAGE_LOG_EVERY_S:
            self._bad_logged_at = now
            log.warning(
                "bad message from the pen: %s (%d so far)", error, self.counters["bad_messages"]
            )


def recorded(action: Callable[[], None]) -> None:
    """Run a treatment-log action; a failure ends the epoch before anything is acknowledged."""
    try:
        action()
    except MicropenError as exc:
        raise NotRecorded("the treatment log failed", exc) from exc
