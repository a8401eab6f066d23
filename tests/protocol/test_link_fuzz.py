"""Whatever arrives, ``Link.receive_data`` never raises, in either role and in every state.

Random bytes rarely pass the CRC, so most inputs here are CRC-valid frames with arbitrary
flags, epochs (often the link's own), sequence numbers and payloads: the fuzz reaches the link's
logic, not just the framer. Some are SACK frames (a bitmap, or too few bytes for one) and
DATAGRAM frames, fed to links that have a window in flight and frames held beyond a gap.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from _link_harness import Pair, split_frames
from hypothesis import given, settings
from hypothesis import strategies as st

from micropen.protocol import messages as m
from micropen.protocol.errors import RemoteProtocolError
from micropen.protocol.events import BadMessage, Connected, LinkLost, MessageReceived, PeerReset
from micropen.protocol.framing import encode_frame
from micropen.protocol.link import Link, LinkState, Role

EVENT_TYPES = (Connected, MessageReceived, BadMessage, LinkLost, PeerReset)


def _fresh_host() -> Link:
    return Link(Role.HOST, liveness_timeout=1.0, rng=random.Random(8))


def _established() -> Pair:
    pair = Pair(host=_fresh_host())
    pair.connect()
    pair.host.send(m.Stop(cmd_id=1), pair.now)
    pair.pen.send(m.Event(t_ms=1, code=m.EventCode.BOOTED, value=0, run_id=0), pair.now)
    pair.host.data_to_send(pair.now)  # in flight, never delivered
    pair.pen.data_to_send(pair.now)
    return pair


def host_closed() -> Link:
    return _fresh_host()


def host_syn_sent() -> Link:
    host = _fresh_host()
    host.connect(0.0)
    host.send(m.GetStatus(cmd_id=2), 0.0)
    host.data_to_send(0.0)
    return host


def host_established() -> Link:
    return _established().host


def host_after_reset() -> Link:
    pair = _established()
    pair.pen = Link(Role.PEN)
    pair.host.send(m.Stop(cmd_id=3), pair.now)
    pair.host_to_pen()
    pair.pen_to_host()
    assert pair.host.state is LinkState.CLOSED
    return pair.host


def pen_listen() -> Link:
    return Link(Role.PEN)


def pen_established() -> Link:
    return _established().pen


def pen_closed_again() -> Link:
    pen = _established().pen
    pen.close()
    return pen


def host_with_a_window_in_flight() -> Link:
    """Eight commands in flight, the second retransmitted: SACK bits land on real frames."""
    pair = _established()
    for n in range(8):
        pair.host.send(m.Stop(cmd_id=10 + n), pair.now)
    pair.host.data_to_send(pair.now)
    pair.now = pair.host.next_deadline() or pair.now
    pair.host.data_to_send(pair.now)
    pair.pen.send(m.Heartbeat(counter=3), pair.now)
    return pair.host


def pen_holding_frames_beyond_a_gap() -> Link:
    pair = _established()
    for n in range(4):
        pair.host.send(m.Stop(cmd_id=20 + n), pair.now)
    frames = split_frames(pair.host.data_to_send(pair.now))
    pair.pen.receive_data(b"".join(frames[2:]), pair.now)
    pair.pen.send(m.Heartbeat(counter=4), pair.now, reliable=False)
    return pair.pen


STATES: list[Callable[[], Link]] = [
    host_closed,
    host_syn_sent,
    host_established,
    host_after_reset,
    pen_listen,
    pen_established,
    pen_closed_again,
    host_with_a_window_in_flight,
    pen_holding_frames_beyond_a_gap,
]


@st.composite
def sack_and_datagram_frames(draw: st.DrawFn, epoch: int) -> bytes:
    flags = draw(st.sampled_from([0x42, 0x43, 0x63, 0x82, 0xC2, 0x80, 0x40, 0xC3]))
    bitmap = draw(st.integers(0, 0xFFFF_FFFF)).to_bytes(4, "little")
    message = draw(
        st.one_of(st.just(b""), st.sampled_from([m.Heartbeat(counter=1).encode()]), st.binary())
    )
    cut = draw(st.integers(0, 4))  # sometimes too short to hold the bitmap
    return encode_frame(
        flags,
        draw(st.one_of(st.just(epoch), st.integers(0, 0xFF))),
        draw(st.integers(0, 0xFFFF)),
        draw(st.one_of(st.integers(0, 12), st.integers(0, 0xFFFF))),
        (bitmap + message)[cut:] if not message else bitmap + message,
    )


@st.composite
def valid_frames(draw: st.DrawFn, epoch: int) -> bytes:
    payload = draw(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from([m.Stop(cmd_id=5).encode(), m.Heartbeat(counter=1).encode()]),
        )
    )
    return encode_frame(
        draw(st.integers(0, 0xFF)),
        draw(st.one_of(st.just(epoch), st.integers(0, 0xFF))),
        draw(st.one_of(st.integers(0, 4), st.integers(0, 0xFFFF))),
        draw(st.one_of(st.integers(0, 4), st.integers(0, 0xFFFF))),
        payload,
    )


@pytest.mark.parametrize("make", STATES, ids=[f.__name__ for f in STATES])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_receive_data_never_raises(make: Callable[[], Link], data: st.DataObject) -> None:
    link = make()
    before = link.statistics().bytes_received
    chunks = data.draw(
        st.lists(
            st.one_of(
                st.binary(max_size=80),
                valid_frames(link.epoch),
                sack_and_datagram_frames(link.epoch),
            ),
            max_size=12,
        )
    )
    now = 0.0
    for chunk in chunks:
        now += data.draw(st.floats(0.0, 0.5))
        link.receive_data(chunk, now)
        link.data_to_send(now)
        link.next_deadline()
    for event in link.events():
        assert isinstance(event, EVENT_TYPES)
        if isinstance(event, BadMessage):
            assert isinstance(event.error, RemoteProtocolError)
    stats = link.statistics()
    assert stats.bytes_received - before == sum(len(c) for c in chunks)
