"""A host Link and a pen Link over a hostile channel, explored by a RuleBasedStateMachine.

The channel holds frames in flight in each direction; rules deliver, drop, duplicate, reorder,
delay, corrupt and split them, inject garbage, move virtual time, reconnect the host (its
owner re-sends what ``connect`` hands back, as the real host does) and reboot the pen. Both
ends also send datagrams (``reliable=False``) mixed in with their reliable messages, and each
end may or may not offer SACK and datagrams in its handshake (drawn at the start), so selective
acknowledgements, fast retransmissions and the fallback for a peer without them all run over
the same hostile channel. After every step:

* each message is delivered at most once per epoch of the receiver, never altered, and, except
  urgent ones, first deliveries keep the order in which messages were sent;
* each datagram is delivered at most once per epoch of the receiver, never altered, and never
  after a datagram sent later;
* a command reaches the pen twice only if the host's owner sent it twice (``connect`` returned it);
* a serviced link never asks to be woken in the past (an event loop would spin).

``settle`` then makes the channel reliable and lets time run: everything the host sent, and
everything the pen sent that a pen reboot did not destroy, must arrive; a command sent once is
delivered exactly once. Datagrams need not arrive (they are sent once, if at all).

Assumptions (each a known limit of the link, not of this test):

* the host draws a fresh epoch at each reconnect here (``test_link_rules`` shows what an epoch
  drawn again does);
* frames in flight are gone by the time the host reconnects or the pen has rebooted (a serial
  line is FIFO and drains). Otherwise a late SYN from an older epoch takes the pen back to that
  epoch, and a rebooted pen that adopts a late copy of the SYN its previous life already
  answered numbers its frames from 0 inside a link the host holds at a later sequence number:
  the host acknowledges them as duplicates and they are lost.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from _link_harness import split_frames
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from strategies import any_message, tagged

from micropen.protocol.events import BadMessage, Connected, LinkLost, MessageReceived, PeerReset
from micropen.protocol.link import Link, LinkState, Role
from micropen.protocol.schema import Kind, Message

HOST_OPTIONS: dict[str, Any] = {
    "window": 6,
    "rto_initial": 0.1,
    "rto_min": 0.025,
    "rto_max": 0.4,
    "max_retries": 5,
    "liveness_timeout": 1.5,
}
PEN_OPTIONS: dict[str, Any] = {"window": 6, "rto_initial": 0.1, "rto_min": 0.025, "rto_max": 0.4}
COMMANDS = any_message([Kind.COMMAND, Kind.SIM_COMMAND, Kind.HOST_NOTIFY])
NOTIFICATIONS = any_message([Kind.NOTIFY, Kind.REPLY])
OFFERS_SACK = st.sampled_from([True, True, True, False])
SETTLE_STEPS = 400
MAX_FRAMES_PER_STEP = 10_000


class FreshEpochs(random.Random):
    """Epochs 1, 2, 3, … in turn: never one drawn before (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(0)
        self._next = 0

    def choice(self, seq: Sequence[Any]) -> Any:
        for _ in range(256):
            self._next = self._next % 255 + 1
            if self._next in seq:
                return self._next
        return super().choice(seq)


@dataclass(frozen=True)
class Sent:
    index: int  # submission order on the sending side
    message: Message
    urgent: bool


class Side:
    """What one direction's receiver got, checked as it arrives."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: dict[int, Sent] = {}
        self.deliveries: Counter[tuple[int, int]] = Counter()  # (receiver epoch, tag)
        self.count: Counter[int] = Counter()
        self.last_in_order = -1

    def submit(self, tag: int, message: Message, urgent: bool) -> None:
        self.sent.setdefault(tag, Sent(len(self.sent), message, urgent))

    def deliver(self, epoch: int, message: Message) -> None:
        tag = message[0]
        sent = self.sent.get(tag)
        assert sent is not None, f"{self.name}: {message!r} was never sent"
        assert message == sent.message, f"{self.name}: {message!r} != sent {sent.message!r}"
        self.deliveries[epoch, tag] += 1
        assert self.deliveries[epoch, tag] == 1, f"{self.name}: {message!r} twice in one epoch"
        self.count[tag] += 1
        if self.count[tag] == 1 and not sent.urgent:
            assert sent.index > self.last_in_order, f"{self.name}: {message!r} overtook"
            self.last_in_order = sent.index


class Datagrams:
    """What one direction's receiver got of the datagrams, checked as it arrives."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: dict[int, tuple[int, Message]] = {}  # tag -> (submission index, message)
        self.deliveries: Counter[tuple[int, int]] = Counter()
        self.last: dict[int, int] = {}  # receiver epoch -> index of the latest delivered

    def submit(self, tag: int, message: Message) -> None:
        self.sent[tag] = (len(self.sent), message)

    def deliver(self, epoch: int, message: Message) -> None:
        index, sent = self.sent[message[0]]
        assert message == sent, f"{self.name}: datagram {message!r} != sent {sent!r}"
        self.deliveries[epoch, message[0]] += 1
        assert self.deliveries[epoch, message[0]] == 1, f"{self.name}: {message!r} twice"
        assert index > self.last.get(epoch, -1), f"{self.name}: {message!r} after a later one"
        self.last[epoch] = index


class LinkMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.host = Link(Role.HOST, rng=FreshEpochs(), **HOST_OPTIONS)
        self.pen = Link(Role.PEN, **PEN_OPTIONS)
        self.to_pen: list[bytes] = []
        self.to_host: list[bytes] = []
        self.commands = Side("host→pen")
        self.notes = Side("pen→host")
        self.resent: Counter[int] = Counter()
        self.lost_in_reboot: set[int] = set()
        self.pen_notes: list[int] = []  # tags the current pen incarnation was given
        self.host_epoch = self.pen_epoch = 0
        self.host_received = 0
        self.tags = iter(range(1, 1 << 32))
        self.pen_options = dict(PEN_OPTIONS)
        self.host_datagrams = Datagrams("pen→host datagrams")
        self.pen_datagrams = Datagrams("host→pen datagrams")

    @initialize(host_sack=OFFERS_SACK, pen_sack=OFFERS_SACK)
    def start(self, host_sack: bool, pen_sack: bool) -> None:
        """Either end may be one that offers no SACK and no datagrams (an older host or pen);
        mostly both do, as ours do."""
        self.host = Link(Role.HOST, rng=FreshEpochs(), sack=host_sack, **HOST_OPTIONS)
        self.pen_options["sack"] = pen_sack
        self.pen = Link(Role.PEN, **self.pen_options)
        self.host.connect(self.now)
        self._service()

    # ------------------------------------------------------------------ plumbing
    def _service(self) -> None:
        """What an event loop does at ``now``: collect events, write what the links have."""
        self.to_pen += split_frames(self.host.data_to_send(self.now))
        self.to_host += split_frames(self.pen.data_to_send(self.now))
        self._collect()

    def _collect(self) -> None:
        for event in self.pen.events():
            assert not isinstance(event, BadMessage), event
            if isinstance(event, Connected):
                self.pen_epoch += 1
            elif isinstance(event, MessageReceived):
                if event.message[0] in self.pen_datagrams.sent:
                    self.pen_datagrams.deliver(self.pen_epoch, event.message)
                else:
                    self.commands.deliver(self.pen_epoch, event.message)
        for event in self.host.events():
            assert not isinstance(event, BadMessage), event
            if isinstance(event, MessageReceived):
                self.host_received += 1
                if event.message[0] in self.host_datagrams.sent:
                    self.host_datagrams.deliver(self.host_epoch, event.message)
                else:
                    self.notes.deliver(self.host_epoch, event.message)
            else:
                assert isinstance(event, Connected | LinkLost | PeerReset), event

    def _receive(self, to_pen: bool, data: bytes) -> None:
        (self.pen if to_pen else self.host).receive_data(data, self.now)
        self._service()

    def _queue(self, to_pen: bool) -> list[bytes]:
        return self.to_pen if to_pen else self.to_host

    def _send_command(self, message: Message, urgent: bool) -> None:
        self.host.send(message, self.now, urgent=urgent)
        self.commands.submit(message[0], message, urgent)

    # ------------------------------------------------------------------ sending
    @precondition(lambda self: self.host.state is not LinkState.CLOSED)
    @rule(message=COMMANDS, urgent=st.booleans())
    def host_sends(self, message: Message, urgent: bool) -> None:
        self._send_command(tagged(message, next(self.tags)), urgent)
        self._service()

    @rule(message=NOTIFICATIONS)
    def pen_sends(self, message: Message) -> None:
        message = tagged(message, next(self.tags))
        self.pen.send(message, self.now)
        self.notes.submit(message[0], message, False)
        self.pen_notes.append(message[0])
        self._service()

    @rule(message=NOTIFICATIONS)
    def pen_sends_datagram(self, message: Message) -> None:
        message = tagged(message, next(self.tags))
        self.host_datagrams.submit(message[0], message)
        self.pen.send(message, self.now, reliable=False)
        self._service()

    @rule(
        messages=st.lists(st.tuples(NOTIFICATIONS, st.booleans()), min_size=2, max_size=8),
    )
    def pen_sends_a_burst(self, messages: list[tuple[Message, bool]]) -> None:
        """Replies, events and telemetry at one instant: several frames in flight, so losses
        leave gaps behind them (SACK) and datagrams interleave with reliable frames."""
        for message, reliable in messages:
            message = tagged(message, next(self.tags))
            if reliable:
                self.notes.submit(message[0], message, False)
                self.pen_notes.append(message[0])
            else:
                self.host_datagrams.submit(message[0], message)
            self.pen.send(message, self.now, reliable=reliable)
        self._service()

    @precondition(lambda self: self.host.state is not LinkState.CLOSED)
    @rule(messages=st.lists(COMMANDS, min_size=2, max_size=8))
    def host_sends_a_burst(self, messages: list[Message]) -> None:
        for message in messages:
            self._send_command(tagged(message, next(self.tags)), False)
        self._service()

    @precondition(lambda self: self.host.state is not LinkState.CLOSED)
    @rule(message=COMMANDS)
    def host_sends_datagram(self, message: Message) -> None:
        message = tagged(message, next(self.tags))
        self.pen_datagrams.submit(message[0], message)
        self.host.send(message, self.now, reliable=False)
        self._service()

    # ------------------------------------------------------------------ time
    @rule(dt=st.floats(0.001, 1.0))
    def advance(self, dt: float) -> None:
        self.now += dt
        self._service()

    @rule()
    def jump_to_next_deadline(self) -> None:
        """A mock clock: straight to the earliest deadline, whatever it is."""
        deadlines = [self.host.next_deadline(), self.pen.next_deadline()]
        if known := [d for d in deadlines if d is not None]:
            self.now = max(self.now, min(known))
        self._service()

    # ------------------------------------------------------------------ the channel
    @precondition(lambda self: self.to_pen or self.to_host)
    @rule(to_pen=st.booleans(), pick=st.integers(0, 1 << 16), keep_copy=st.booleans())
    def deliver(self, to_pen: bool, pick: int, keep_copy: bool) -> None:
        """Any frame in flight (reordering); keeping a copy duplicates it."""
        queue = self._queue(to_pen) or self._queue(not to_pen)
        to_pen = queue is self.to_pen
        frame = queue[pick % len(queue)] if keep_copy else queue.pop(pick % len(queue))
        self._receive(to_pen, frame)

    @precondition(lambda self: self.to_pen or self.to_host)
    @rule(to_pen=st.booleans(), pick=st.integers(0, 1 << 16))
    def drop(self, to_pen: bool, pick: int) -> None:
        queue = self._queue(to_pen) or self._queue(not to_pen)
        queue.pop(pick % len(queue))

    @precondition(lambda self: self.to_pen or self.to_host)
    @rule(to_pen=st.booleans(), pick=st.integers(0, 1 << 16), bit=st.integers(0, 1 << 16))
    def corrupt(self, to_pen: bool, pick: int, bit: int) -> None:
        queue = self._queue(to_pen) or self._queue(not to_pen)
        to_pen = queue is self.to_pen
        frame = bytearray(queue.pop(pick % len(queue)))
        frame[(bit // 8) % len(frame)] ^= 1 << (bit % 8)
        self._receive(to_pen, bytes(frame))

    @rule(to_pen=st.booleans(), cut=st.integers(0, 1 << 16))
    def deliver_all_in_two_pieces(self, to_pen: bool, cut: int) -> None:
        queue = self._queue(to_pen)
        stream = b"".join(queue)
        queue.clear()
        cut %= len(stream) + 1
        link = self.pen if to_pen else self.host
        link.receive_data(stream[:cut], self.now)
        self._collect()
        self._receive(to_pen, stream[cut:])

    @rule(to_pen=st.booleans(), junk=st.binary(min_size=1, max_size=60))
    def garbage(self, to_pen: bool, junk: bytes) -> None:
        self._receive(to_pen, junk)

    # ------------------------------------------------------------------ the ends
    @rule()
    def host_reconnects(self) -> None:
        """The host's owner opens a new epoch and re-sends what the old one left over."""
        leftovers = self.host.connect(self.now)
        self.host_epoch += 1
        self.to_pen.clear()  # a FIFO line has drained by now (see the module docstring)
        self.to_host.clear()
        for message in leftovers:
            if message[0] in self.pen_datagrams.sent:
                continue  # a datagram a pen without datagrams got reliably: not worth a re-send
            self.resent[message[0]] += 1
            self._send_command(message, self.commands.sent[message[0]].urgent)
        self._service()

    @rule()
    def pen_reboots(self) -> None:
        """Whatever the pen had not got acknowledged is gone with it (and the line drains
        while it boots: see the module docstring)."""
        delivered = {tag for tag, n in self.notes.count.items() if n}
        self.lost_in_reboot |= set(self.pen_notes) - delivered
        self.pen_notes = []
        self.to_pen.clear()
        self.to_host.clear()
        self.pen = Link(Role.PEN, **self.pen_options)
        self.pen_epoch += 1
        self._service()

    @rule()
    def settle(self) -> None:
        """Make the channel reliable and let time run until everything has arrived."""
        for _ in range(SETTLE_STEPS):
            if self.host.state is LinkState.CLOSED:
                self.host_reconnects()
            for _ in range(MAX_FRAMES_PER_STEP):
                if not (self.to_pen or self.to_host):
                    break
                to_pen = bool(self.to_pen)
                self._receive(to_pen, self._queue(to_pen).pop(0))
            else:
                raise AssertionError("the links keep answering each other without time passing")
            if self._everything_arrived() and self.host.idle and self.pen.idle:
                break
            self.now = self._next_wakeup()
            self._service()
        missing_cmds = set(self.commands.sent) - set(self.commands.count)
        missing_notes = set(self.notes.sent) - set(self.notes.count) - self.lost_in_reboot
        assert not missing_cmds, f"never reached the pen: {sorted(missing_cmds)}"
        assert not missing_notes, f"never reached the host: {sorted(missing_notes)}"
        for tag, count in self.commands.count.items():
            if not self.resent[tag]:
                assert count == 1, f"command {tag} sent once, delivered {count} times"

    def _next_wakeup(self) -> float:
        """The earliest deadline still ahead (a past one is the invariant's business; here time
        must move on), or a little later when neither link has one."""
        deadlines = [self.host.next_deadline(), self.pen.next_deadline()]
        ahead = [d for d in deadlines if d is not None and d > self.now]
        return min(ahead) if ahead else self.now + 0.1

    def _everything_arrived(self) -> bool:
        cmds = set(self.commands.sent) <= set(self.commands.count)
        notes = set(self.notes.sent) - self.lost_in_reboot <= set(self.notes.count)
        return cmds and notes

    def teardown(self) -> None:
        self.settle()

    # ------------------------------------------------------------------ invariants
    @invariant()
    def serviced_links_do_not_ask_to_be_woken_in_the_past(self) -> None:
        for name, link in (("host", self.host), ("pen", self.pen)):
            deadline = link.next_deadline()
            assert deadline is None or deadline > self.now, (
                f"{name} in {link.state.value} wants to be woken at {deadline} (now {self.now})"
            )

    @invariant()
    def commands_repeat_only_when_resent(self) -> None:
        for tag, count in self.commands.count.items():
            assert count <= 1 + self.resent[tag], f"command {tag} delivered {count} times"

    @invariant()
    def statistics_agree_with_events(self) -> None:
        assert self.host.statistics().messages_received == self.host_received


LinkMachine.TestCase.settings = settings(max_examples=120, stateful_step_count=40, deadline=None)
TestLinkOverHostileChannel = LinkMachine.TestCase
