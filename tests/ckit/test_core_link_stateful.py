"""The C pen link against the Python pen link, fed the same frames at the same times.

protocol/link.py's ``Link(Role.PEN, sack=False)`` is the reference: a pen that declines SACK
and datagrams, as the C core does. A hypothesis state machine drives both with SYNs (new,
repeated, same epoch with another nonce), data frames around the receive window (in order,
early, urgent, duplicate, beyond the window, of another epoch), acknowledgements, datagrams,
RST/SYNACK frames, garbage, sends (ordinary, urgent, datagram), time passing, take_unsent and
close. After every step both must have delivered the same messages and announced the same
epochs, agree on state and counters, and have sent the same message under every sequence
number of the epoch (so replies, records and fallback datagrams leave in the same order);
timing is not compared (the C RTO is integer milliseconds). Each run is replayed in the
sanitized driver at the end.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import cbuild
from _core_harness import E_DROPPED, E_FULL, EV_CONNECTED, EV_MESSAGE, CPen, replay
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from micropen.protocol.events import BadMessage, Connected, MessageReceived
from micropen.protocol.framing import HEADER, FrameDecoder, encode_frame
from micropen.protocol.link import Link, Role

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "protocol"))
from strategies import any_message

MESSAGES = st.one_of(
    any_message().map(lambda m: m.encode()),
    st.binary(min_size=0, max_size=60),
)
SYN, SYNACK, RST, DATA, ACK, URGENT, SACK, DATAGRAM = 4, 8, 16, 1, 2, 32, 64, 128


class PenLinks(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.c = CPen(seed=11)
        self.py = Link(Role.PEN, sack=False, rng=random.Random(11))
        self.now = 0
        self.epoch = 0  # the last epoch a SYN named
        self.nonce = 0
        self.c_delivered: list[tuple[str, object]] = []
        self.py_delivered: list[tuple[str, object]] = []
        self.host_seq = 0  # where the test's own numbering of data frames is
        self.sent = 0  # data frames the pens sent so far in this epoch (an upper bound)
        self.c_frames: dict[tuple[int, int], bytes] = {}  # (connects, seq) -> message sent
        self.py_frames: dict[tuple[int, int], bytes] = {}

    # ------------------------------------------------------------------ feeding both
    def feed(self, data: bytes) -> None:
        self.c.receive(data, self.now)
        self.py.receive_data(data, self.now / 1000.0)
        self.collect()

    def collect(self) -> None:
        for event in self.c.events():
            if event.type == EV_CONNECTED:
                self.c_delivered.append(("connected", event.epoch))
            elif event.type == EV_MESSAGE:
                self.c_delivered.append(("message", event.msg))
        for ev in self.py.events():
            if isinstance(ev, Connected):
                self.py_delivered.append(("connected", ev.epoch))
            elif isinstance(ev, MessageReceived):
                self.py_delivered.append(("message", ev.message.encode()))
            elif isinstance(ev, BadMessage):
                self.py_delivered.append(("message", ev.payload))

    # ------------------------------------------------------------------ frames from a host
    @initialize(epoch=st.integers(0, 255), nonce=st.integers(0, 2**32 - 1))
    def opened(self, epoch: int, nonce: int) -> None:
        self.new_syn(epoch, nonce, b"", True)

    @rule(
        epoch=st.integers(0, 255),
        nonce=st.integers(0, 2**32 - 1),
        payload=st.binary(max_size=40),
        sack=st.booleans(),
        now=st.sampled_from([False, False, False, True]),  # now and then
    )
    def syn(self, epoch: int, nonce: int, payload: bytes, sack: bool, now: bool) -> None:
        if now:
            self.new_syn(epoch, nonce, payload, sack)

    def new_syn(self, epoch: int, nonce: int, payload: bytes, sack: bool) -> None:
        flags = SYN | (SACK if sack else 0)
        self.epoch, self.nonce = epoch, nonce
        self.host_seq = 0
        self.feed(encode_frame(flags, epoch, nonce & 0xFFFF, nonce >> 16, payload))

    @rule(other_nonce=st.sampled_from([False, False, True]))
    def repeated_syn(self, other_nonce: bool) -> None:
        nonce = self.nonce ^ (1 if other_nonce else 0)
        if other_nonce:
            self.nonce, self.host_seq = nonce, 0
        self.feed(encode_frame(SYN, self.epoch, nonce & 0xFFFF, nonce >> 16, b""))

    @rule(
        offset=st.one_of(st.just(0), st.just(0), st.integers(-3, 24)),
        urgent=st.booleans(),
        message=MESSAGES,
        ack=st.integers(0, 12),
        foreign=st.sampled_from([False, False, False, True]),
    )
    def data(self, offset: int, urgent: bool, message: bytes, ack: int, foreign: bool) -> None:
        epoch = (self.epoch + 1) % 256 if foreign else self.epoch
        seq = (self.host_seq + offset) % 65536
        flags = DATA | ACK | (URGENT if urgent else 0)
        self.feed(encode_frame(flags, epoch, seq, ack % 65536, message))
        if offset == 0 and not foreign:
            self.host_seq += 1

    @rule(burst=st.lists(MESSAGES, min_size=1, max_size=20), lost=st.integers(0, 19))
    def burst_with_a_gap(self, burst: list[bytes], lost: int) -> None:
        """A window's worth of frames with one lost, then the lost one."""
        frames = [
            encode_frame(DATA | ACK, self.epoch, (self.host_seq + i) % 65536, 0, m)
            for i, m in enumerate(burst)
        ]
        lost %= len(frames)
        self.feed(b"".join(f for i, f in enumerate(frames) if i != lost))
        self.feed(frames[lost])
        self.host_seq += len(frames)

    @rule(ack=st.integers(0, 12), sack_short=st.booleans())
    def bare_ack(self, ack: int, sack_short: bool) -> None:
        if sack_short:  # flagged SACK, too short for the bitmap: malformed
            self.feed(encode_frame(ACK | SACK, self.epoch, 0, ack, b"\x01"))
        else:
            self.feed(encode_frame(ACK, self.epoch, 0, ack, b""))

    @rule(seq=st.integers(0, 8), message=MESSAGES)
    def datagram(self, seq: int, message: bytes) -> None:
        self.feed(encode_frame(DATAGRAM | ACK, self.epoch, seq, 0, message))

    @rule(flags=st.sampled_from([RST, SYNACK, 0, SACK | ACK]))
    def control(self, flags: int) -> None:
        self.feed(encode_frame(flags, self.epoch, 1, 0, b"\x00\x00\x00\x00"))

    @rule(junk=st.binary(max_size=300))
    def garbage(self, junk: bytes) -> None:
        self.feed(junk)

    # ------------------------------------------------------------------ the pen's side
    @rule(
        messages=st.lists(
            st.tuples(any_message().map(lambda m: m.encode()), st.sampled_from([0, 0, 1, 2])),
            min_size=1,
            max_size=24,
        ),
    )
    def send(self, messages: list[tuple[bytes, int]]) -> None:
        for message, kind in messages:
            self._send(message, kind)
        self.transmit()

    def _send(self, message: bytes, kind: int) -> None:
        dropped = self.c.stats()["datagrams_dropped"]
        rc = self.c.send(message, self.now, kind)
        if rc in (E_FULL, E_DROPPED) and not (rc == E_DROPPED and not self.py.accepts_datagram):
            return  # the C pen's fixed backlog, or its datagram fallback limit (documented)
        t = self.now / 1000.0
        if kind == 2:
            assert self.py.send(_decode(message), t, reliable=False) == (rc == 0)
            return
        assert rc == 0
        evicted = self.c.stats()["datagrams_dropped"] - dropped
        if evicted:  # the C pen's fixed backlog was full: the same limit for the Python pen
            self.py.max_backlog = self.py.backlog - evicted + 1
        self.py.send(_decode(message), t, urgent=kind == 1)
        self.py.max_backlog = 4096

    @rule(ms=st.sampled_from([0, 1, 30, 99, 100, 101, 250, 1000, 1500]))
    def time_passes(self, ms: int) -> None:
        self.now += ms
        self.transmit()

    def transmit(self) -> None:
        connects = self.c.stats()["connects"]
        self.record(self.c.data_to_send(self.now), connects, self.c_frames)
        self.record(self.py.data_to_send(self.now / 1000.0), connects, self.py_frames)

    @staticmethod
    def record(data: bytes, connects: int, frames: dict[tuple[int, int], bytes]) -> None:
        """Each data frame's message under (epoch opened, seq): retransmissions repeat it."""
        for raw in FrameDecoder().feed(data):
            flags, _, seq, _ = HEADER.unpack_from(raw)
            if flags & DATA:
                message = raw[HEADER.size : -4]
                assert frames.setdefault((connects, seq), message) == message

    @rule()
    def take_unsent(self) -> None:
        taken = []
        while (item := self.c.take_unsent())[0] > 0:
            taken.append(item[2])
        assert taken == [m.encode() for m in self.py.take_unsent()]

    @precondition(lambda self: self.now > 0)
    @rule()
    def close(self) -> None:
        self.c.close()
        self.py.close()

    # ------------------------------------------------------------------ agreement
    @invariant()
    def same_deliveries(self) -> None:
        assert self.c_delivered == self.py_delivered

    @invariant()
    def same_frames_sent(self) -> None:
        assert self.c_frames == self.py_frames

    @invariant()
    def same_state(self) -> None:
        state = self.c.state()
        assert bool(state["established"]) == self.py.connected
        assert state["epoch"] == self.py.epoch
        assert (state["in_flight"], state["backlog"]) == (self.py.in_flight, self.py.backlog)

    @invariant()
    def same_counters(self) -> None:
        c, py = self.c.stats(), self.py.statistics()
        for name in [
            "frames_received",
            "duplicates",
            "out_of_order",
            "out_of_window",
            "stale_epoch",
            "resets_sent",
            "resets_received",
            "connects",
            "datagrams_received",
            "datagrams_stale",
            "malformed_frames",
            "crc_failures",
            "cobs_failures",
            "bytes_discarded",
        ]:
            assert c[name] == getattr(py, name), name
        assert c["bytes_in"] == py.bytes_received
        assert c["rx_no_room"] == 0

    def teardown(self) -> None:
        if cbuild.sanitizers_work():
            replay(self.c)


def _decode(message: bytes):  # type: ignore[no-untyped-def]
    from micropen.protocol.schema import decode_message

    return decode_message(message)


PenLinks.TestCase.settings = settings(max_examples=50, stateful_step_count=40, deadline=None)
test_c_pen_link_agrees_with_the_python_pen_link = PenLinks.TestCase
