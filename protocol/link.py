"""The reliable link: one state machine, used identically by the host and the pen.

Sans-I/O (as h11): ``receive_data(bytes, now)``, ``next_event()``, ``send(message, now)``,
``data_to_send(now) -> bytes`` and ``next_deadline()``. Nothing here reads a clock or touches a
port; the caller passes ``now`` (seconds, any monotonic origin) and sleeps until the deadline.

What it guarantees, in both directions (pen-to-host events are never lost either):

* **Exactly once, in order, per epoch.** Every data frame carries a 16-bit sequence number; the
  receiver acknowledges cumulatively, buffers frames that arrive early, re-acknowledges
  duplicates and delivers each sequence number once. An *urgent* frame (emergency stop) is
  delivered on arrival even if earlier frames are still missing, and not again later.
* **Selective acknowledgement.** While it holds frames beyond a gap, a receiver says which in
  a 32-bit SACK bitmap after the cumulative ack (flag SACK), and acknowledges at once instead of
  waiting for ``ack_delay``. The sender never sends a SACKed frame again, and *fast-retransmits*
  a frame as soon as a frame it sent later is acknowledged or SACKed (the line is FIFO, so the
  earlier one was lost: RACK, RFC 8985, without a reordering window), or, with a peer that
  sends no SACK, at the third duplicate acknowledgement. Lost frames are repaired within one
  round trip instead of at the retransmission timeout.
* **Retransmission** per RFC 6298: SRTT/RTTVAR, RTO clamped to [rto_min, rto_max], doubled on
  each timeout, Karn's rule (no RTT sample from a retransmitted frame). SACKed frames give RTT
  samples too, and a new sample collapses the backoff (RFC 6298 §5, the note after 5.7), so a
  timeout does not leave the link at a backed-off RTO once frames get through. On a timeout the
  first unacknowledged frame and every frame not SACKed are sent again. Up to ``window`` frames
  in flight; the rest wait in a backlog. After ``max_retries`` timeouts without progress the
  link is declared lost.
* **Datagrams.** ``send(message, now, reliable=False)`` sends a message once, in a frame
  outside the sequence of data frames (flag DATAGRAM): never acknowledged, retransmitted or
  counted in the window, never ahead of a reliable frame (they go out after the reliable frames
  of the same ``data_to_send``), delivered as an ordinary :class:`MessageReceived` if its epoch
  is the receiver's. Its ``seq`` field numbers the datagrams of the epoch on their own, only so
  that a receiver delivers none twice and none after a later one (copies and overtaken ones
  are dropped and counted): at most once, in order, gaps allowed. Datagrams are dropped (and
  counted) when the link is not established, when reliable messages wait for room in the
  window (more than ``DATAGRAM_BACKLOG_LIMIT``: the window is full, the line is busy
  recovering), or when ``DATAGRAM_QUEUE_LIMIT`` of them wait unsent. Telemetry uses them.
* **Capabilities.** SYN and SYNACK carry the SACK flag when their sender understands SACK
  bitmaps and datagrams. A side sends neither to a peer that did not say so: to such a peer
  (an older pen or host) a datagram goes reliably unless more than
  ``DATAGRAM_FALLBACK_BACKLOG`` messages wait for the window. Such a fallback message still
  never goes ahead of a reliable one: a reliable message sent while fallback messages wait in
  the backlog is queued ahead of all of them (they keep their own order; what is in flight
  stays), and a full backlog drops the oldest waiting fallback message (counted in
  ``datagrams_dropped``) before it refuses a reliable one.
* **Epochs.** The host opens a link with SYN carrying a fresh random epoch; the pen answers
  SYNACK. Frames of another epoch are stale and dropped; a pen that does not know the epoch of a
  data frame (it rebooted) answers RST so the host resynchronises instead of guessing.
* **Liveness.** With ``liveness_timeout`` set (the host), silence from the peer for that long
  while connected closes the link with :class:`LinkLost`.

On a new epoch the pen re-sends what the old one left unacknowledged (replies and events must
reach the host), while the host hands its unacknowledged commands back to its owner
(``connect`` returns them) so that only the owner, who knows whether the pen restarted, decides
whether to re-send them. Commands carry a ``cmd_id`` the pen remembers, so a re-send is answered
from the pen's reply cache instead of executing twice.
"""

from __future__ import annotations

import hmac
import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntFlag

from .errors import LocalProtocolError, RemoteProtocolError
from .events import BadMessage, Connected, LinkEvent, LinkLost, MessageReceived, PeerReset
from .framing import HEADER, SACK, FrameDecoder, FramerStats, encode_frame, encode_raw_frame
from .linkauth import (
    NONCE_BYTES,
    OFFER,
    RESUME,
    AuthAnswer,
    AuthOffer,
    FrameAuth,
    resume_tag,
    session_keys,
    synack_tag,
)
from .schema import Message, decode_message

__all__ = [
    "DATAGRAM_BACKLOG_LIMIT",
    "DATAGRAM_FALLBACK_BACKLOG",
    "DATAGRAM_QUEUE_LIMIT",
    "DUPACK_THRESHOLD",
    "SACK_BITS",
    "TRANSITIONS",
    "Flag",
    "Link",
    "LinkState",
    "LinkStats",
    "Role",
]

SEQ_MOD = 1 << 16
URGENT_SLACK = 4  # urgent frames may exceed the window by this much
SACK_BITS = 8 * SACK.size  # a SACK bitmap covers the frames ack+1 .. ack+32
DUPACK_THRESHOLD = 3  # duplicate acks (from a peer without SACK) that trigger a fast retransmit
DATAGRAM_BACKLOG_LIMIT = 0  # datagrams are dropped while more messages wait for the window
DATAGRAM_QUEUE_LIMIT = 256  # datagrams waiting for data_to_send() before new ones are dropped
DATAGRAM_FALLBACK_BACKLOG = 64  # to a peer without datagrams: sent reliably up to this backlog


class Flag(IntFlag):
    DATA = 0x01
    ACK = 0x02
    SYN = 0x04
    SYNACK = 0x08
    RST = 0x10
    URGENT = 0x20
    SACK = 0x40
    DATAGRAM = 0x80


# plain ints for the per-frame path (IntFlag arithmetic costs a Python call per operation)
_DATA, _ACK, _SYN, _SYNACK, _RST, _URGENT, _SACK, _DATAGRAM = (int(f) for f in Flag)
_CARRIES = _DATA | _DATAGRAM  # frames with a message (an ack on one is not a "bare" ack)
_HSIZE = HEADER.size
_SACK_FRAME = HEADER.size + SACK.size + 4  # shortest frame that can hold a SACK bitmap
_pack_sack = SACK.pack
_pack_header = HEADER.pack
_encode_raw_frame = encode_raw_frame
_unpack_sack = SACK.unpack_from


# (pen) host_id -> (pen_id, pairing key); (host) pen_id -> (pen_id, pairing key); None: unknown
PairingLookup = Callable[[int], tuple[int, bytes] | None]


class Role(Enum):
    HOST = "host"  # opens links
    PEN = "pen"  # accepts them


class LinkState(Enum):
    CLOSED = "closed"
    LISTEN = "listen"
    SYN_SENT = "syn_sent"
    ESTABLISHED = "established"


class _Input(Enum):
    CONNECT = "connect()"
    CLOSE = "close()"
    RECV_SYN = "SYN received"
    RECV_SYNACK = "SYNACK received"
    RECV_RST = "RST received"
    LOST = "peer silent / retries exhausted"


_H, _P = Role.HOST, Role.PEN
_S = LinkState
# plain module globals for the per-frame path (an Enum member lookup costs a call on 3.11)
_CLOSED, _LISTEN, _SYN_SENT, _ESTABLISHED = (
    LinkState.CLOSED,
    LinkState.LISTEN,
    LinkState.SYN_SENT,
    LinkState.ESTABLISHED,
)
# (role, state, input) -> next state. A local input missing here raises LocalProtocolError
# naming the state; a remote one missing here is ignored (and counted).
TRANSITIONS: dict[tuple[Role, LinkState, _Input], LinkState] = {
    (_H, _S.CLOSED, _Input.CONNECT): _S.SYN_SENT,
    (_H, _S.SYN_SENT, _Input.CONNECT): _S.SYN_SENT,
    (_H, _S.ESTABLISHED, _Input.CONNECT): _S.SYN_SENT,
    (_H, _S.SYN_SENT, _Input.RECV_SYNACK): _S.ESTABLISHED,
    (_H, _S.ESTABLISHED, _Input.RECV_RST): _S.CLOSED,
    (_H, _S.SYN_SENT, _Input.RECV_RST): _S.SYN_SENT,
    (_H, _S.ESTABLISHED, _Input.LOST): _S.CLOSED,
    (_H, _S.SYN_SENT, _Input.LOST): _S.CLOSED,
    (_P, _S.LISTEN, _Input.RECV_SYN): _S.ESTABLISHED,
    (_P, _S.ESTABLISHED, _Input.RECV_SYN): _S.ESTABLISHED,
    **{
        (role, state, _Input.CLOSE): (_S.CLOSED if role is _H else _S.LISTEN)
        for role in Role
        for state in LinkState
    },
}


@dataclass(slots=True)
class LinkStats:
    """Counters for one link since it was created (framing counters included).

    ``messages_sent``/``messages_received`` count datagrams too; ``retransmits`` counts every
    frame sent again, ``fast_retransmits`` those sent again before their timeout (SACK or
    duplicate acks), ``timeouts`` the retransmission timer's expiries. ``datagrams_dropped``
    counts datagrams this side did not send (no link, congestion), ``datagrams_stale`` those
    it received but did not deliver (a copy, or older than one delivered)."""

    frames_sent: int = 0
    bytes_sent: int = 0
    frames_received: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    retransmits: int = 0
    fast_retransmits: int = 0
    timeouts: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    out_of_window: int = 0
    stale_epoch: int = 0
    bad_messages: int = 0
    malformed_frames: int = 0
    crc_failures: int = 0
    cobs_failures: int = 0
    bytes_discarded: int = 0
    resets_sent: int = 0
    resets_received: int = 0
    connects: int = 0
    sacks_sent: int = 0
    sacks_received: int = 0
    datagrams_sent: int = 0
    datagrams_received: int = 0
    datagrams_dropped: int = 0
    datagrams_stale: int = 0
    auth_failures: int = 0  # frames whose tag did not verify (or that had none) in an
    auth_replays: int = 0  # authenticated epoch, and frames whose counter was not fresh
    syns_refused: int = 0  # connection attempts the owner refused (admit_syn)
    frames_authenticated: int = 0  # frames whose tag verified (proof a paired peer is there)
    srtt_s: float | None = None
    rttvar_s: float | None = None
    rto_s: float = 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


@dataclass(slots=True)
class _Outgoing:
    seq: int
    payload: bytes
    urgent: bool
    sent_at: float = 0.0
    tx: int = 0  # number of its latest transmission, in the order this side sent frames
    retransmitted: bool = False
    sacked: bool = False  # the receiver holds it (it never discards a frame it reported)
    fallback: bool = False  # a datagram sent reliably to a peer without datagrams


def _seq_diff(a: int, b: int) -> int:
    """a - b in sequence space, in -32768..32767."""
    return ((a - b + SEQ_MOD // 2) % SEQ_MOD) - SEQ_MOD // 2


class Link:
    """One end of the reliable link. See the module docstring for the guarantees."""

    def __init__(
        self,
        role: Role,
        *,
        window: int = 16,
        rto_initial: float = 0.1,
        rto_min: float = 0.025,
        rto_max: float = 1.0,
        max_retries: int = 8,
        liveness_timeout: float | None = None,
        max_backlog: int = 4096,
        ack_delay: float = 0.0,
        sack: bool = True,
        rng: random.Random | None = None,
        pairing: PairingLookup | None = None,
        admit_syn: Callable[[int | None], bool] | None = None,
    ) -> None:
        if not 1 <= window <= 1024:
            raise LocalProtocolError(f"window {window} outside 1..1024")
        if not 0 < rto_min <= rto_initial <= rto_max:
            raise LocalProtocolError("need 0 < rto_min <= rto_initial <= rto_max")
        if liveness_timeout is not None and role is Role.PEN:
            raise LocalProtocolError(
                "liveness_timeout is for the host: a pen never gives up on a link"
            )
        self.role = role
        self.window = window
        self.rto_min, self.rto_max, self.max_retries = rto_min, rto_max, max_retries
        self.rto_initial = rto_initial
        self.liveness_timeout = liveness_timeout
        self.max_backlog = max_backlog
        if not 0 <= ack_delay < rto_min:
            raise LocalProtocolError("ack_delay must be >= 0 and below rto_min")
        self.ack_delay = ack_delay
        self.sack = sack
        self._rng = rng or random.Random()
        self.state = _CLOSED if role is Role.HOST else _LISTEN
        self.epoch = 0
        self._decoder = FrameDecoder()
        self._stats = LinkStats(rto_s=rto_initial)
        self._events: deque[LinkEvent] = deque()
        self._out = bytearray()
        # (payload, urgent, fallback): urgent ones first, fallback datagrams behind the rest
        self._backlog: deque[tuple[bytes, bool, bool]] = deque()
        self._unacked: dict[int, _Outgoing] = {}  # insertion order == seq order
        self._datagrams: list[bytes] = []
        self._dgram_tx = 0  # number of the next datagram sent (its own count, per epoch)
        self._dgram_rx = 0  # datagrams numbered below this were delivered or are too late
        self._snd_next = 0
        self._rcv_next = 0
        self._early: dict[int, tuple[bytes, bool]] = {}
        self._delivered_early: set[int] = set()
        self._need_ack = False
        self._ack_due = 0.0
        self._retransmit_at: float | None = None
        self._retries = 0
        self._tx = 0  # transmissions of data frames so far (orders them for loss detection)
        self._delivered_tx = 0  # the latest transmission known to have arrived
        self._dupacks = 0
        self._peer_sack = False  # the peer said (SYN/SYNACK) it reads SACK and datagrams
        self._last_rx = 0.0
        self._syn_at: float | None = None
        self._nonce: int | None = None  # names one handshake: SYN carries it, SYNACK echoes it
        # authentication (linkauth.py): the pen looks pairings up by host id, the host by pen id
        self._pairing = pairing
        self._admit_syn = admit_syn
        self._offer: AuthOffer | None = None  # the host's offer in this epoch's SYN
        self._answer = b""  # the pen's SYNACK payload for this epoch
        self.auth: FrameAuth | None = None  # set while this epoch is authenticated
        self._resume_key: bytes | None = None  # (host) the ending epoch's key, for SYN proofs
        self._syn_attempt = 0
        self._previous_receive: bytes | None = None  # (pen) for proofs in SYN retransmissions
        self._resume_seen = -1

    # ---------------------------------------------------------------- state table
    def _transition(self, event: _Input, *, local: bool) -> bool:
        nxt = TRANSITIONS.get((self.role, self.state, event))
        if nxt is None:
            if local:
                raise LocalProtocolError(
                    f"{event.value} is not allowed for a {self.role.value} link in state "
                    f"{self.state.value}"
                )
            return False
        self.state = nxt
        if nxt is not _ESTABLISHED:
            self._drop_datagrams()
        return True

    # ---------------------------------------------------------------- public API
    @property
    def connected(self) -> bool:
        return self.state is _ESTABLISHED

    @property
    def peer_sack(self) -> bool:
        """Both ends read SACK bitmaps and datagrams on this epoch (said in SYN and SYNACK)."""
        return self._peer_sack

    def connect(self, now: float, host_id: int | None = None) -> list[Message]:
        """(Host) open a new epoch, offering authentication as ``host_id`` when given (the
        link's ``pairing`` lookup then finds the key for the pen that answers). Returns the
        messages the old epoch left undelivered."""
        self._transition(_Input.CONNECT, local=True)
        leftovers = self._drain_unsent()
        old = self.epoch
        self.epoch = self._rng.choice([e for e in range(1, 256) if e != old])
        self._nonce = self._rng.getrandbits(32)
        self._offer = AuthOffer(host_id, self._nonce_bytes()) if host_id is not None else None
        previous = self.auth
        self._resume_key = previous.send_key if previous is not None and self._offer else None
        self._syn_attempt = 0
        self.auth = None
        self._reset_sequence()
        self._decoder.reset()
        self._syn_at = now
        self._last_rx = now
        self._retries = 0
        self._emit_handshake(_SYN)
        return leftovers

    def close(self) -> list[Message]:
        """Stop using the link; returns messages that were never acknowledged."""
        self._transition(_Input.CLOSE, local=True)
        self._syn_at = None
        return self._drain_unsent()

    def send(
        self, message: Message, now: float, *, urgent: bool = False, reliable: bool = True
    ) -> bool:
        """Queue a message for reliable delivery (urgent ones jump the backlog), or with
        ``reliable=False`` as a datagram: sent once, if at all. Returns False when a datagram
        was dropped (see :attr:`accepts_datagram`); a reliable message is always queued (a full
        backlog drops a waiting fallback datagram for it first, else raises). To a peer without
        datagrams a datagram waits in the backlog behind every reliable message, even later ones."""
        if self.state is _CLOSED:
            raise LocalProtocolError("the link is closed: connect() first")
        if not reliable:
            if urgent:
                raise LocalProtocolError("an urgent message must be sent reliably")
            if not self.accepts_datagram:
                self._stats.datagrams_dropped += 1
                return False
            if self._peer_sack:
                self._datagrams.append(message.encode())
                return True
            if len(self._backlog) >= self.max_backlog:
                self._stats.datagrams_dropped += 1
                return False
            self._backlog.append((message.encode(), False, True))  # behind everything
            return True
        payload = message.encode()
        excess = len(self._backlog) + 1 - self.max_backlog
        if excess > 0:  # never refused while fallback datagrams waiting can make room
            self._drop_oldest_fallbacks(excess)
        backlog = self._backlog
        if urgent and len(self._unacked) < self.window + URGENT_SLACK and self.connected:
            self._transmit_new(payload, True, now)
            return True
        if len(backlog) >= self.max_backlog:
            raise LocalProtocolError(f"send backlog full ({self.max_backlog} messages)")
        if urgent:  # ahead of every queued ordinary message, behind earlier urgent ones
            ahead = sum(1 for _ in itertools.takewhile(lambda item: item[1], backlog))
            backlog.insert(ahead, (payload, True, False))
        elif backlog and backlog[-1][2]:
            # ahead of the fallback datagrams that wait behind the last reliable message
            behind = sum(1 for _ in itertools.takewhile(lambda item: item[2], reversed(backlog)))
            backlog.insert(len(backlog) - behind, (payload, False, False))
        else:
            backlog.append((payload, False, False))
        return True

    def _drop_oldest_fallbacks(self, n: int) -> None:
        """Drop the n oldest fallback datagrams waiting in the backlog (counted), only if n of
        them wait: dropping fewer would not make the room needed."""
        if sum(1 for item in self._backlog if item[2]) < n:
            return
        kept: deque[tuple[bytes, bool, bool]] = deque()
        for item in self._backlog:
            if item[2] and n > 0:
                n -= 1
                self._stats.datagrams_dropped += 1
            else:
                kept.append(item)
        self._backlog = kept

    @property
    def accepts_datagram(self) -> bool:
        """Whether ``send(..., reliable=False)`` would send a datagram now rather than drop
        it: the link is established, no more than ``DATAGRAM_BACKLOG_LIMIT`` reliable messages
        wait for room in the window (``DATAGRAM_FALLBACK_BACKLOG`` for a peer without
        datagrams, which gets them reliably), and fewer than ``DATAGRAM_QUEUE_LIMIT``
        datagrams wait to be written."""
        if self.state is not _ESTABLISHED:
            return False
        # reliable messages that wait for the window to open (not merely for data_to_send)
        waiting = len(self._backlog) + len(self._unacked) - self.window
        if self._peer_sack:
            return waiting <= DATAGRAM_BACKLOG_LIMIT and len(self._datagrams) < DATAGRAM_QUEUE_LIMIT
        return waiting <= DATAGRAM_FALLBACK_BACKLOG

    def take_unsent(self) -> list[Message]:
        """Take back every message this side has not had acknowledged, oldest first.

        The pen calls it when a new epoch opens: what it handed to the old host but never had
        acknowledged goes back to the firmware, which holds it until the new host has opened a
        session and can record it (an acknowledgement means "durably recorded"). Datagrams not
        yet sent are dropped, not returned."""
        return self._drain_unsent()

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Feed bytes read from the wire. Never raises on any input."""
        frames = self._decoder.feed(data)
        for raw in frames:
            self._handle_frame(raw, now)

    def next_event(self) -> LinkEvent | None:
        return self._events.popleft() if self._events else None

    def events(self) -> list[LinkEvent]:
        """All pending events at once."""
        out = list(self._events)
        self._events.clear()
        return out

    def data_to_send(self, now: float) -> bytes:
        """Bytes to write now: new frames, due retransmissions and acknowledgements, then
        datagrams."""
        self.handle_timeout(now)
        if self.state is _ESTABLISHED:
            while self._backlog and len(self._unacked) < self.window:
                payload, urgent, fallback = self._backlog.popleft()
                self._transmit_new(payload, urgent, now, fallback)
            if self._datagrams:
                self._emit_datagrams()
            elif self._need_ack and now >= self._ack_due:
                self._emit(_ACK, self._snd_next, b"")
        out = bytes(self._out)
        self._out.clear()
        return out

    def handle_timeout(self, now: float) -> None:
        """Retransmit what is due and check liveness."""
        # the very sums next_deadline() returns: a clock set to a deadline must find it due
        syn_due = self._syn_at is not None and now >= self._syn_at + self._stats.rto_s
        if self.state is _SYN_SENT and syn_due:
            self._syn_at = now
            self._stats.retransmits += 1
            self._emit_handshake(_SYN)
        if self._retransmit_at is not None and now >= self._retransmit_at:
            self._on_retransmit_timeout(now)
        if (
            self.liveness_timeout is not None
            and self.state in (_ESTABLISHED, _SYN_SENT)
            and now >= self._last_rx + self.liveness_timeout
        ):
            self._lose(f"no frame from the peer for {now - self._last_rx:.3f} s")

    def next_deadline(self) -> float | None:
        """When handle_timeout/data_to_send must next be called, if nothing arrives first."""
        deadlines = []
        if self._retransmit_at is not None:
            deadlines.append(self._retransmit_at)
        if self.state is _SYN_SENT and self._syn_at is not None:
            deadlines.append(self._syn_at + self._stats.rto_s)
        if self.liveness_timeout is not None and self.state in (
            _ESTABLISHED,
            _SYN_SENT,
        ):
            deadlines.append(self._last_rx + self.liveness_timeout)
        connected = self.state is _ESTABLISHED
        if self._need_ack and connected:
            deadlines.append(self._ack_due)
        if connected and (self._datagrams or (self._backlog and len(self._unacked) < self.window)):
            deadlines.append(float("-inf"))  # sendable now (before connecting it is not)
        return min(deadlines) if deadlines else None

    @property
    def in_flight(self) -> int:
        return len(self._unacked)

    @property
    def backlog(self) -> int:
        """Reliable messages not sent yet: waiting for data_to_send() or for room in the
        window (datagrams are not counted)."""
        return len(self._backlog)

    @property
    def idle(self) -> bool:
        """Nothing waits to be sent or acknowledged."""
        return not self._unacked and not self._backlog and not self._datagrams

    @property
    def counters(self) -> LinkStats:
        """The live counters, not a copy: cheap enough to read after every receive (the
        framing counters are filled in only by :meth:`statistics`). Read them, never write."""
        return self._stats

    def statistics(self) -> LinkStats:
        s = self._stats
        f: FramerStats = self._decoder.stats
        s.bytes_received = f.bytes_in
        s.crc_failures, s.cobs_failures = f.crc_failures, f.cobs_failures
        s.bytes_discarded = f.bytes_discarded
        return LinkStats(**{k: getattr(s, k) for k in LinkStats.__slots__})  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- sending
    def _transmit_new(
        self, payload: bytes, urgent: bool, now: float, fallback: bool = False
    ) -> None:
        seq = self._snd_next
        self._snd_next = (seq + 1) % SEQ_MOD
        self._tx = tx = self._tx + 1
        entry = _Outgoing(seq, payload, urgent, now, tx, fallback=fallback)
        self._unacked[seq] = entry
        self._stats.messages_sent += 1
        self._emit_data(entry)
        if self._retransmit_at is None:
            self._retransmit_at = now + self._stats.rto_s

    def _retransmit(self, entry: _Outgoing, now: float) -> None:
        self._tx += 1
        entry.tx = self._tx
        entry.sent_at = now
        entry.retransmitted = True
        self._stats.retransmits += 1
        self._emit_data(entry)

    def _emit_data(self, entry: _Outgoing) -> None:
        flags = (_DATA | _ACK | _URGENT) if entry.urgent else (_DATA | _ACK)
        self._emit(flags, entry.seq, entry.payload)

    def _emit_datagrams(self) -> None:
        datagrams, self._datagrams = self._datagrams, []
        stats = self._stats
        stats.datagrams_sent += len(datagrams)
        stats.messages_sent += len(datagrams)
        number = self._dgram_tx
        for payload in datagrams:  # each carries the ack (the first one clears _need_ack)
            self._emit(_DATAGRAM | _ACK, number, payload)
            number = (number + 1) % SEQ_MOD
        self._dgram_tx = number

    def _drop_datagrams(self) -> None:
        if self._datagrams:
            self._stats.datagrams_dropped += len(self._datagrams)
            self._datagrams = []

    def _emit_handshake(self, flags: int) -> None:
        nonce = self._nonce or 0
        if self.sack:
            flags |= _SACK  # in SYN/SYNACK: "I read SACK bitmaps and datagrams"
        if flags & _SYN:
            payload = self._offer.encode() if self._offer is not None else b""
            if self._resume_key is not None:
                self._syn_attempt += 1
                tag = resume_tag(self._resume_key, self.epoch, nonce, self._syn_attempt)
                payload += RESUME.pack(self._syn_attempt, tag)
        else:
            payload = self._answer
        frame = encode_frame(flags, self.epoch, nonce & 0xFFFF, nonce >> 16, payload)
        self._out += frame
        self._stats.frames_sent += 1
        self._stats.bytes_sent += len(frame)

    def _emit(self, flags: int, seq: int, payload: bytes, ack: int | None = None) -> None:
        if ack is None:
            ack = self._rcv_next
            if (self._early or self._delivered_early) and self._peer_sack:
                flags |= _SACK
                payload = _pack_sack(self._sack_bitmap()) + payload
                self._stats.sacks_sent += 1
        raw = _pack_header(flags, self.epoch, seq, ack) + payload
        auth = self.auth
        if auth is not None:  # every frame of an authenticated epoch carries counter and tag
            raw += auth.seal(raw)
        frame = _encode_raw_frame(raw)
        self._out += frame
        self._stats.frames_sent += 1
        self._stats.bytes_sent += len(frame)
        if flags & _ACK:
            self._need_ack = False

    def _sack_bitmap(self) -> int:
        """Bit i set: the frame rcv_next + 1 + i has arrived (it waits, or was urgent)."""
        base = self._rcv_next + 1
        bits = 0
        for seq in itertools.chain(self._early, self._delivered_early):
            offset = (seq - base) % SEQ_MOD
            if offset < SACK_BITS:
                bits |= 1 << offset
        return bits

    def _on_retransmit_timeout(self, now: float) -> None:
        self._stats.timeouts += 1
        self._retries += 1
        if self._retries > self.max_retries and self._lose(
            f"{self.max_retries} retransmissions without an acknowledgement"
        ):
            return  # the host gives up; the pen keeps trying at rto_max until a new epoch
        s = self._stats
        s.rto_s = min(s.rto_s * 2, self.rto_max)
        first = True
        for entry in self._unacked.values():
            # the first always (its ack may be what was lost); the rest unless SACKed
            if first or not entry.sacked:
                self._retransmit(entry, now)
            first = False
        self._dupacks = 0
        self._retransmit_at = now + s.rto_s if self._unacked else None

    def _drain_unsent(self) -> list[Message]:
        payloads = [e.payload for e in self._unacked.values()] + [p for p, _, _ in self._backlog]
        self._unacked.clear()
        self._backlog.clear()
        self._drop_datagrams()
        self._retransmit_at = None
        out = []
        for p in payloads:
            try:
                out.append(decode_message(p))
            except RemoteProtocolError:  # pragma: no cover - we encoded these ourselves
                continue
        return out

    def _base_rto(self) -> float:
        """The RTO the measured RTT gives (RFC 6298 2.3), or rto_initial before any sample."""
        s = self._stats
        if s.srtt_s is not None and s.rttvar_s is not None:
            return min(max(s.srtt_s + 4 * s.rttvar_s, self.rto_min), self.rto_max)
        return self.rto_initial

    def _reset_sequence(self) -> None:
        # a new epoch forgets the old one's backoff: start from the measured RTT, if any
        self._stats.rto_s = self._base_rto()
        self._snd_next = self._rcv_next = 0
        self._early.clear()
        self._delivered_early.clear()
        self._need_ack = False
        self._retransmit_at = None
        self._delivered_tx = self._tx
        self._dupacks = 0
        self._peer_sack = False  # until this epoch's SYN or SYNACK says otherwise
        self._drop_datagrams()
        self._dgram_tx = self._dgram_rx = 0

    def _lose(self, reason: str) -> bool:
        if not self._transition(_Input.LOST, local=False):
            return False
        self._retransmit_at = None
        self._syn_at = None
        self._events.append(LinkLost(reason))
        return True

    # ---------------------------------------------------------------- receiving
    def _handle_frame(self, raw: bytes, now: float) -> None:
        flags, epoch, seq, ack = HEADER.unpack_from(raw)
        self._stats.frames_received += 1
        if flags & _SYN:
            self._on_syn(flags, epoch, seq | ack << 16, now, raw[_HSIZE:-4])
            return
        if epoch != self.epoch or self.state is _LISTEN:
            self._on_foreign_epoch(flags, epoch, now)
            return
        if flags & _SYNACK:
            answers_our_syn = seq | ack << 16 == self._nonce
            if answers_our_syn and self.state is _SYN_SENT and not self._accept_answer(raw):
                return
            if answers_our_syn and self._transition(_Input.RECV_SYNACK, local=False):
                self._peer_sack = self.sack and bool(flags & _SACK)
                self._resume_key = None
                self._on_established(now)
            self._last_rx = now
            return
        if flags & _RST:
            self._stats.resets_received += 1
            if self._transition(_Input.RECV_RST, local=False):
                self._retransmit_at = None
                self._events.append(PeerReset("the pen no longer knows this link (it restarted?)"))
            return
        if self.state is not _ESTABLISHED:
            self._stats.stale_epoch += 1
            return
        auth = self.auth
        if auth is not None:
            failures, replays = auth.failures, auth.replays
            opened = auth.open(raw)
            if opened is None:  # counted over the link's life, not per epoch: they only grow
                self._stats.auth_failures += auth.failures - failures
                self._stats.auth_replays += auth.replays - replays
                return
            raw = opened
            self._stats.frames_authenticated += 1
        self._last_rx = now
        if flags & _SACK:
            if len(raw) < _SACK_FRAME:
                self._stats.malformed_frames += 1
                return
            (sack,) = _unpack_sack(raw, _HSIZE)
            start = _SACK_FRAME - 4
            self._stats.sacks_received += 1
        else:
            sack, start = 0, _HSIZE
        if flags & _ACK and self._unacked:
            self._on_ack(ack, now, sack, flags)
        if flags & _DATA:
            self._on_data(seq, raw[start:-4], bool(flags & _URGENT), now)
        elif flags & _DATAGRAM:
            if (seq - self._dgram_rx) % SEQ_MOD >= SEQ_MOD // 2:  # a copy, or overtaken
                self._stats.datagrams_stale += 1
                return
            self._dgram_rx = (seq + 1) % SEQ_MOD
            self._stats.datagrams_received += 1
            self._deliver(raw[start:-4])

    def _on_syn(self, flags: int, epoch: int, nonce: int, now: float, payload: bytes) -> None:
        if self.role is Role.HOST:
            self._stats.stale_epoch += 1
            return
        # a repeat of the SYN that opened this link, or a new link (a restarted host may draw
        # the same epoch; the nonce tells them apart)
        same = epoch == self.epoch and nonce == self._nonce
        self._check_resume(payload, epoch, nonce, same)
        if not (self.state is _ESTABLISHED and same):
            offer = AuthOffer.decode(
                payload[: OFFER.size] if len(payload) > OFFER.size else payload
            )
            found = None
            if offer is not None and self._pairing is not None:
                found = self._pairing(offer.host_id)
            if self._admit_syn is not None and not self._admit_syn(
                offer.host_id if found is not None and offer is not None else None
            ):
                self._stats.syns_refused += 1
                return
            requeue = [(e.payload, e.urgent, e.fallback) for e in self._unacked.values()]
            self._unacked.clear()
            self._backlog.extendleft(reversed(requeue))
            self._transition(_Input.RECV_SYN, local=False)
            self.epoch, self._nonce = epoch, nonce
            self._reset_sequence()
            self._authenticate_epoch(offer, found)
            self._peer_sack = self.sack and bool(flags & _SACK)
            self._stats.connects += 1
            peer = self.auth.peer_id if self.auth is not None else None
            self._events.append(Connected(epoch, peer))
        self._last_rx = now
        self._emit_handshake(_SYNACK)

    def _check_resume(self, payload: bytes, epoch: int, nonce: int, same: bool) -> None:
        """(Pen) a SYN from the paired host of the epoch now ending (or a retransmission of
        it) proves that host is still there: counted as an authenticated frame. A copy replayed
        later carries an attempt already seen, or is checked against keys that are gone."""
        if len(payload) != OFFER.size + RESUME.size:
            return
        key = (
            self._previous_receive
            if same
            else (None if self.auth is None else self.auth.receive_key)
        )
        if key is None:
            return
        attempt, tag = RESUME.unpack_from(payload, OFFER.size)
        if not hmac.compare_digest(tag, resume_tag(key, epoch, nonce, attempt)):
            return
        if same and attempt <= self._resume_seen:
            return
        self._resume_seen = attempt
        if not same:
            self._previous_receive = key
        self._stats.frames_authenticated += 1

    def _authenticate_epoch(self, offer: AuthOffer | None, found: tuple[int, bytes] | None) -> None:
        """(Pen) a paired host's offer: answer with our nonce and proof, derive the keys."""
        if offer is None or found is None:
            self.auth, self._answer = None, b""
            return
        pen_id, key = found
        pen_nonce = self._nonce_bytes()
        tag = synack_tag(key, self.epoch, offer, pen_id, pen_nonce)
        to_pen, to_host = session_keys(key, self.epoch, offer, pen_id, pen_nonce)
        self.auth = FrameAuth(to_host, to_pen, offer.host_id)
        self._answer = AuthAnswer(pen_id, pen_nonce, tag).encode()

    def _accept_answer(self, raw: bytes) -> bool:
        """(Host) check a SYNACK's authentication answer; False: ignore this SYNACK."""
        offer, payload = self._offer, raw[_HSIZE:-4]
        self.auth = None
        if offer is None or not payload:
            return True  # not offered, or the pen does not know this host: unauthenticated
        answer = AuthAnswer.decode(payload)
        found = None if answer is None or self._pairing is None else self._pairing(answer.pen_id)
        if answer is None or found is None:
            # a pen we hold no key for: ask again without an offer (a new handshake nonce)
            self._offer = None
            self._nonce = self._rng.getrandbits(32)
            self._emit_handshake(_SYN)
            return False
        _, key = found
        expected = synack_tag(key, self.epoch, offer, answer.pen_id, answer.nonce)
        if not hmac.compare_digest(expected, answer.tag):
            self._stats.auth_failures += 1  # not the pen we paired with: ignore it
            return False
        to_pen, to_host = session_keys(key, self.epoch, offer, answer.pen_id, answer.nonce)
        self.auth = FrameAuth(to_pen, to_host, answer.pen_id)
        return True

    def _nonce_bytes(self) -> bytes:
        """A handshake nonce: unique per epoch (its job is freshness, not secrecy), from the
        link's generator so that a seeded simulation repeats byte for byte."""
        return self._rng.randbytes(NONCE_BYTES)

    @property
    def peer_id(self) -> int | None:
        """The authenticated peer of this epoch (host id at the pen, pen id at the host)."""
        return self.auth.peer_id if self.auth is not None else None

    def _on_foreign_epoch(self, flags: int, epoch: int, now: float) -> None:
        self._stats.stale_epoch += 1
        if self.role is Role.PEN and flags & _DATA:
            # a host talking in an epoch we do not know: tell it to resynchronise
            self._stats.resets_sent += 1
            frame = encode_frame(Flag.RST, epoch, 0, 0, b"")
            self._out += frame
            self._stats.frames_sent += 1
            self._stats.bytes_sent += len(frame)

    def _on_established(self, now: float) -> None:
        self._syn_at = None
        self._last_rx = now
        self._retries = 0
        self._stats.connects += 1
        self._events.append(Connected(self.epoch, self.peer_id))

    def _on_ack(self, ack: int, now: float, sack: int, flags: int) -> None:
        unacked = self._unacked
        sample: float | None = None
        # the latest transmission this ack shows arrived; frames acknowledged cumulatively
        # that were sent once are older than every frame still unacknowledged, so only
        # retransmitted ones (and SACKed ones) can show a loss
        delivered = 0
        progress = False
        while unacked:
            seq = next(iter(unacked))
            if (ack - seq - 1) & 0xFFFF >= 0x7FFF:  # _seq_diff(ack, seq) <= 0, inline
                break
            entry = unacked.pop(seq)
            progress = True
            if entry.retransmitted:
                if entry.tx > delivered:
                    delivered = entry.tx
            elif not entry.sacked:  # a SACKed frame gave its sample when it was SACKed
                sample = now - entry.sent_at
        bits = sack
        while bits:
            low = bits & -bits
            bits ^= low
            sacked = unacked.get((ack + low.bit_length()) % SEQ_MOD)
            if sacked is None or sacked.sacked:
                continue
            sacked.sacked = progress = True
            if not sacked.retransmitted:
                sample = now - sacked.sent_at
            if sacked.tx > delivered:
                delivered = sacked.tx
        if not progress:
            if not flags & _CARRIES and not self._peer_sack and next(iter(unacked)) == ack:
                self._on_duplicate_ack(now)
            return
        self._retries = 0
        if self._dupacks:
            self._dupacks = 0
        if sample is not None:
            self._update_rto(sample)  # a new sample collapses any backoff (RFC 6298 5)
        if unacked:
            if delivered > self._delivered_tx:
                self._delivered_tx = delivered
                self._retransmit_lost(now)
            self._retransmit_at = now + self._stats.rto_s
        else:
            if delivered > self._delivered_tx:
                self._delivered_tx = delivered
            self._retransmit_at = None

    def _retransmit_lost(self, now: float) -> None:
        """Send again, now, every frame not SACKed whose last transmission is older than one
        known to have arrived: on a FIFO line it was lost."""
        latest = self._delivered_tx
        for entry in self._unacked.values():
            if entry.tx < latest and not entry.sacked:
                self._stats.fast_retransmits += 1
                self._retransmit(entry, now)

    def _on_duplicate_ack(self, now: float) -> None:
        """A peer without SACK repeats its ack when frames arrive beyond a gap."""
        self._dupacks += 1
        if self._dupacks == DUPACK_THRESHOLD:
            self._stats.fast_retransmits += 1
            self._retransmit(next(iter(self._unacked.values())), now)

    def _update_rto(self, rtt: float) -> None:
        s = self._stats
        if s.srtt_s is None or s.rttvar_s is None:
            s.srtt_s, s.rttvar_s = rtt, rtt / 2
        else:
            s.rttvar_s = 0.75 * s.rttvar_s + 0.25 * abs(s.srtt_s - rtt)
            s.srtt_s = 0.875 * s.srtt_s + 0.125 * rtt
        s.rto_s = min(max(s.srtt_s + 4 * s.rttvar_s, self.rto_min), self.rto_max)

    def _on_data(self, seq: int, payload: bytes, urgent: bool, now: float) -> None:
        if not self._need_ack:
            self._need_ack = True
            self._ack_due = now + self.ack_delay  # a reply sent before then carries the ack
        diff = _seq_diff(seq, self._rcv_next)
        if diff < 0:
            self._stats.duplicates += 1
            self._ack_due = now  # the sender may have missed our ack: repeat it at once
            return
        if diff >= self.window + URGENT_SLACK:
            self._stats.out_of_window += 1
            return
        if diff > 0:
            self._ack_due = now  # a gap: tell the sender at once (SACK)
            if seq in self._early or seq in self._delivered_early:
                self._stats.duplicates += 1
                return
            self._stats.out_of_order += 1
            if urgent:
                self._delivered_early.add(seq)
                self._deliver(payload)
            else:
                self._early[seq] = (payload, urgent)
            return
        self._deliver_in_order(payload, now)

    def _deliver_in_order(self, payload: bytes, now: float) -> None:
        seq = self._rcv_next
        early, delivered_early = self._early, self._delivered_early
        if not (early or delivered_early):  # the usual case: nothing waits beyond a gap
            self._deliver(payload)
            self._rcv_next = (seq + 1) % SEQ_MOD
            return
        self._ack_due = now  # this fills (part of) a gap: the sender waits to hear
        if seq in delivered_early:
            delivered_early.discard(seq)
        else:
            self._deliver(payload)
        self._rcv_next = seq = (seq + 1) % SEQ_MOD
        while seq in early or seq in delivered_early:
            if seq in delivered_early:
                delivered_early.discard(seq)
            else:
                self._deliver(early.pop(seq)[0])
            self._rcv_next = seq = (seq + 1) % SEQ_MOD

    def _deliver(self, payload: bytes) -> None:
        try:
            message = decode_message(payload)
        except RemoteProtocolError as exc:
            self._stats.bad_messages += 1
            self._events.append(BadMessage(exc, payload))
            return
        self._stats.messages_received += 1
        self._events.append(MessageReceived(message))
